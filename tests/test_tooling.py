"""What ruff cannot check: the code finds its packages through the install (no sys.path edits outside tests/), and the
formatter lays out every line (no `fmt: skip` / `fmt: off`)."""

import ast
from pathlib import Path

from conftest import REPO_ROOT

PACKAGES = ("modeling_infodisent", "training", "spaces", "benchmarks")
FORMATTER_ESCAPES = ("# fmt: " + "skip", "# fmt: " + "off")  # spelt in two parts so that this file passes


def source_files(folders):
    for folder in folders:
        yield from sorted(Path(REPO_ROOT, folder).rglob("*.py"))


def edits_sys_path(tree: ast.AST) -> bool:
    """A call of sys.path.insert / append / extend, or an assignment to sys.path or a slice of it."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func.value
            if node.func.attr in ("insert", "append", "extend") and ast.unparse(target) == "sys.path":
                return True
        if isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(ast.unparse(t).startswith("sys.path") for t in targets):
                return True
    return False


def test_the_sys_path_check_sees_an_edit():
    assert edits_sys_path(ast.parse("import sys\nsys.path.insert(0, 'x')"))
    assert edits_sys_path(ast.parse("import sys\nsys.path[:0] = ['x']"))
    assert not edits_sys_path(ast.parse("import sys\nprint(sys.path[0])"))


def test_no_sys_path_edits_outside_tests():
    offenders = [
        str(p.relative_to(REPO_ROOT)) for p in source_files(PACKAGES) if edits_sys_path(ast.parse(p.read_text()))
    ]
    assert offenders == [], "install the project (pip install -e .) instead of editing sys.path"


def test_no_formatter_escapes():
    offenders = [
        f"{p.relative_to(REPO_ROOT)}:{n}"
        for p in source_files((*PACKAGES, "tests"))
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if any(marker in line for marker in FORMATTER_ESCAPES)
    ]
    assert offenders == []
