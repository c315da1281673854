"""The fault suite's table (issue 13): one `Case` per bad input or fault and entry point, by category (images,
labels, pickles, loading, cli, and issue 26's categories). Each case acts through an entry point and states its exact
expected outcome; see `fault_kit` for the machinery and `test_faults` for the tests.

The cases live in sibling modules, one job each: `fault_cases_inputs` (images, labels: bad inputs to the explainer),
`fault_cases_loading` (pickles, loading: bad model folders), `fault_cases_cli` (cli: the explain command line) and
`fault_cases_limits` (issue 26: arguments, output, checkpoints, data, weights, load). `CASES` is the one list of them
all, in that order."""

from __future__ import annotations

from fault_cases_cli import cli_cases
from fault_cases_inputs import image_cases, label_cases
from fault_cases_limits import limit_cases
from fault_cases_loading import loading_cases, pickle_cases
from fault_kit import Case


def all_cases() -> list[Case]:
    return image_cases() + label_cases() + pickle_cases() + loading_cases() + cli_cases() + limit_cases()


CASES = all_cases()
