"""The fault suite of issue 13 for loading, the explain command line, the renderer and the Space.

Every case is one bad input or fault (a corpus image, a hostile class name, a hostile pickle, a broken model folder,
a bad argument, a write error) sent to one entry point: `open_image` / `to_rgb`, the command line (`explain.main`,
in-process), model loading (`from_pretrained`, `load_model_and_gallery`), the renderer, the Space's functions. Each
asserts its exact outcome: a result (checked against an independent computation), or a clear error (the message
names the problem; on the command line one line ``error: ...``, exit 2, no traceback) — and that nothing was lost or
left half-written.

The cases are a table (`fault_cases.CASES`, machinery in `fault_kit`); ``python tests/fault_table.py`` runs the
same table outside pytest and prints the tally per category (tries / right result / clear error / traceback /
wrong result / data lost) for the issue note.
Training faults (resume, NaN features, data) are in the training tests.
"""

import pytest

from fault_cases import CASES
from fault_kit import Context, judge

# ----------------------------------------------------------------------------------------------------------------
# The tests
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return Context(tmp_path_factory.mktemp("faults"))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_fault(case, ctx):
    verdict, detail = judge(case, ctx)
    assert verdict == ("right result" if case.expect == "result" else "clear error"), f"{verdict}: {detail}"


def test_the_table_covers_every_category_and_entry_point():
    categories = {case.category for case in CASES}
    assert categories == {
        "images",
        "labels",
        "pickles",
        "loading",
        "cli",
        "arguments",
        "output",
        "checkpoints",
        "data",
        "weights",
        "load",
    }
    names = " ".join(case.name for case in CASES)
    for entry in ("open_image", "CLI", "Space", "renderer", "from_pretrained", "load_model_and_gallery"):
        assert entry in names
    assert len({case.id for case in CASES}) == len(CASES)
