"""Keep the Space's bundled model code (spaces/model/*.py) equal to the package's source.

The bundled folder must load with ``trust_remote_code=True`` on the Hub, so it carries the files transformers'
``save_pretrained`` copies for the model: ``modeling_infodisent.py`` and everything it imports relatively
(``configuration_infodisent.py`` and the sibling modules), listed by transformers' own
``get_relative_import_files``. This script writes those files from ``modeling_infodisent/`` and removes code files
that are no longer part of the model; ``--check`` only reports (exit 1) what differs (a test runs it).

Usage: python spaces/sync_model_code.py [--check] [--target spaces/model]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "modeling_infodisent")
DEFAULT_TARGET = os.path.join(REPO, "spaces", "model")


def model_code_files() -> dict[str, str]:
    """{file name: path in the package} of the code a saved model carries (what save_pretrained copies)."""
    from transformers.dynamic_module_utils import get_relative_import_files

    modeling = os.path.join(PACKAGE, "modeling_infodisent.py")
    return {os.path.basename(path): path for path in [modeling, *get_relative_import_files(modeling)]}


def differences(target: str = DEFAULT_TARGET) -> tuple[list[str], list[str]]:
    """(files of `target` to write because they are missing or differ, stale .py files of `target` to remove)."""
    files = model_code_files()
    to_write = []
    for name, source in sorted(files.items()):
        copy = os.path.join(target, name)
        with open(source, "rb") as handle:
            wanted = handle.read()
        if not os.path.isfile(copy) or open(copy, "rb").read() != wanted:
            to_write.append(name)
    present = sorted(f for f in os.listdir(target) if f.endswith(".py")) if os.path.isdir(target) else []
    return to_write, [f for f in present if f not in files]


def sync(target: str = DEFAULT_TARGET) -> list[str]:
    """Write the model code into `target` (each file whole: a temporary file renamed over the old one) and remove
    stale code files. Returns what changed."""
    files = model_code_files()
    to_write, stale = differences(target)
    os.makedirs(target, exist_ok=True)
    for name in to_write:
        with open(files[name], "rb") as handle:
            data = handle.read()
        fd, tmp = tempfile.mkstemp(dir=target, prefix=f".{name}.")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, os.path.join(target, name))
    for name in stale:
        os.remove(os.path.join(target, name))
    return [f"wrote {name}" for name in to_write] + [f"removed {name}" for name in stale]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="report differences (exit 1), change nothing")
    parser.add_argument("--target", default=DEFAULT_TARGET, help="the bundled model folder (default: spaces/model)")
    args = parser.parse_args(argv)
    if args.check:
        to_write, stale = differences(args.target)
        if to_write or stale:
            problems = [f"{name} differs from modeling_infodisent/{name}" for name in to_write]
            problems += [f"{name} is not part of the model code" for name in stale]
            print(f"{args.target}: " + "; ".join(problems) + ". Run: python spaces/sync_model_code.py", file=sys.stderr)
            return 1
        print(f"{args.target}: model code matches modeling_infodisent/")
        return 0
    for line in sync(args.target) or ["already in sync"]:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
