"""The README's promises: its test command is what CI runs, its Python snippets run as written, its links resolve,
and it stays a short front page."""

import os
import re
from pathlib import Path

import pytest

from conftest import REPO_ROOT

README = Path(REPO_ROOT, "README.md").read_text()
PYTHON_SNIPPETS = re.findall(r"```python\n(.*?)\n```", README, re.S)


def fenced_after(marker: str) -> str:
    match = re.search(re.escape(marker) + r"\s*```bash\n(.*?)\n```", README, re.S)
    assert match, f"README has no command after {marker}"
    return match.group(1).strip()


def run_snippet(code: str) -> dict:
    """Run README code as a reader would, from the repository root in a fresh namespace; returns the namespace."""
    namespace = {"__name__": "__readme__"}
    cwd = os.getcwd()
    os.chdir(REPO_ROOT)
    try:
        exec(compile(code, "README.md", "exec"), namespace)
    finally:
        os.chdir(cwd)
    return namespace


def test_ci_runs_the_readme_test_command():
    ci = Path(REPO_ROOT, ".ci", "run").read_text()
    block = re.search(r"# >>> test-command\n(.*?)\n# <<< test-command", ci, re.S).group(1).strip()
    readme_command = fenced_after("<!-- test-command -->")
    # CI creates the venv itself; the rest of the README command must be exactly what it runs.
    assert readme_command.endswith(block), (readme_command, block)


def test_readme_test_command_shows_skips_and_names_the_system_packages():
    assert " -rs " in fenced_after("<!-- test-command -->")  # skip reasons are printed, not hidden by -q
    ci = Path(REPO_ROOT, ".ci", "run").read_text()
    packages = re.search(r"apt-get install -y -qq ([^>]*?)\s*>", ci).group(1).split()
    assert packages == ["dataset-fashion-mnist", "chromium"]
    for package in packages:
        assert f"apt-get install {package}`" in README, package


def test_readme_has_exactly_two_setup_commands():
    assert len(re.findall(r"```bash\n", README)) == 2
    # The bundled accelerate config keeps the launcher quiet; -q drops its traceback after a one-line error.
    assert "accelerate launch --config_file training/accelerate_config.yaml -q training/train.py" in fenced_after(
        "<!-- main-command -->"
    )


def test_readme_is_a_front_page():
    assert len(README.splitlines()) <= 200
    # Development history belongs in the issues, not on the front page.
    history = re.findall(r"issue \d+|this release|\b20\d\d-\d\d-\d\d\b|stop \d+", README, re.I)
    assert not history, history


@pytest.mark.parametrize("page", ["README.md", *sorted(f"docs/{p.name}" for p in Path(REPO_ROOT, "docs").glob("*.md"))])
def test_relative_links_resolve(page):
    text = Path(REPO_ROOT, page).read_text()
    base = Path(REPO_ROOT, page).parent
    targets = [
        t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t and not t.startswith("#")
    ]
    missing = [t for t in targets if t and not (base / t).exists()]
    assert not missing, missing


def test_readme_python_snippet_runs(capsys):
    import torch

    model_snippet = next(s for s in PYTHON_SNIPPETS if "explain(" in s)
    # The snippet opens a bundled grayscale PNG: the kind of file users have, not a ready-made RGB tensor.
    ns = run_snippet(model_snippet)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "predicted: Shirt"
    assert len(printed) == 2 + 5 and all(line.lstrip().startswith("prototype") for line in printed[2:])
    # What it printed is the model's own decision and its exact decomposition.
    explanation, model = ns["explanation"], ns["model"]
    with torch.no_grad():
        logits = model(ns["pixel_values"]).logits[0]
    assert explanation.label == model.config.id2label[int(logits.argmax())]
    assert abs(explanation.logit - float(logits.max())) < 1e-4
    # The 5 printed prototypes, the bias and what top_k left out (`residual`) add up to the logit.
    assert len(explanation.prototypes) == 5
    total = explanation.bias + sum(p.contribution for p in explanation.prototypes) + explanation.residual
    assert abs(total - explanation.logit) < 1e-4
    printed_logit = float(printed[1].split("logit ")[1].split()[0])
    assert abs(printed_logit - explanation.logit) < 1e-3


def test_readme_space_api_snippet_runs(tmp_path, monkeypatch, capsys):
    """The gradio_client call of the README against the Space launched here with the bundled model."""
    from test_space import free_port, load_app, space_model_dir

    api_snippet = next(s for s in PYTHON_SNIPPETS if "gradio_client" in s)
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    app = load_app()

    class Factory:  # space_model_dir takes pytest's tmp_path_factory; one folder is all it needs
        @staticmethod
        def mktemp(name):
            return tmp_path / name

    demo = app.build_demo(space_model_dir(Factory))
    _, url, _ = app.launch(demo, prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True)
    try:
        assert "http://127.0.0.1:7860/" in api_snippet
        ns = run_snippet(api_snippet.replace("http://127.0.0.1:7860/", url))
    finally:
        demo.close()
    explanation, why_not = ns["explanation"], ns["why_not"]
    assert f"Ankle boot {explanation['logit']:.3f} Bag\n" in capsys.readouterr().out
    assert explanation["explained_class"] == explanation["predicted_class"]
    assert why_not["explained_class"]["label"] == "Bag"
    for answer in (explanation, why_not):  # the JSON carries the exact decomposition
        total = answer["bias"] + sum(p["contribution"] for p in answer["prototypes"])
        assert abs(total - answer["logit"]) < 1e-3


def test_benchmark_table_is_the_generated_one():
    def block(text):
        start, end = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"
        return text[text.index(start) : text.index(end)]

    generated = Path(REPO_ROOT, "benchmarks", "README.md").read_text()
    assert block(Path(REPO_ROOT, "docs", "benchmarks.md").read_text()) == block(generated)


def test_what_the_readme_commands_write_is_ignored_by_git():
    import shutil
    import subprocess

    if shutil.which("git") is None or not Path(REPO_ROOT, ".git").exists():
        pytest.skip("not a git checkout")
    written = ["outputs/infodisent-fashion-mnist/model.safetensors", "explanations/6_shirt.png", ".gradio/x"]
    result = subprocess.run(["git", "check-ignore", *written], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.stdout.split() == written
