"""The README's promises: its test command is what CI runs, and its Python snippet runs."""

import re
from pathlib import Path

from conftest import REPO_ROOT

README = Path(REPO_ROOT, "README.md").read_text()


def fenced_after(marker: str) -> str:
    match = re.search(re.escape(marker) + r"\s*```bash\n(.*?)\n```", README, re.S)
    assert match, f"README has no command after {marker}"
    return match.group(1).strip()


def test_ci_runs_the_readme_test_command():
    ci = Path(REPO_ROOT, ".ci", "run").read_text()
    block = re.search(r"# >>> test-command\n(.*?)\n# <<< test-command", ci, re.S).group(1).strip()
    readme_command = fenced_after("<!-- test-command -->")
    # CI creates the venv itself; the rest of the README command must be exactly what it runs.
    assert readme_command.endswith(block), (readme_command, block)


def test_readme_has_exactly_two_setup_commands():
    assert len(re.findall(r"```bash\n", README)) == 2
    # The bundled accelerate config keeps the launcher quiet; -q drops its traceback after a one-line error.
    assert "accelerate launch --config_file training/accelerate_config.yaml -q training/train.py" in fenced_after(
        "<!-- main-command -->"
    )


def test_readme_python_snippet_runs(capsys):
    snippet = re.search(r"```python\n(.*?)\n```", README, re.S).group(1)
    import os

    cwd = os.getcwd()
    os.chdir(REPO_ROOT)
    try:
        exec(compile(snippet, "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    printed = capsys.readouterr().out
    assert "logit" in printed and printed.count("prototype") == 5


def test_readme_benchmark_table_is_the_generated_one():
    def block(text):
        start, end = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"
        return text[text.index(start) : text.index(end)]

    generated = Path(REPO_ROOT, "benchmarks", "README.md").read_text()
    assert block(README) == block(generated)
