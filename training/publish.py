"""The output folder as one unit: written aside, made world-readable, then swapped into place.

A training run never writes its model into ``output_dir`` directly. It fills a sibling staging folder
(``<output_dir>.tmp-<pid>``) with the weights, image processor, gallery, results and card, and only when all of them
are there swaps it into place, so a run killed at any moment leaves either the previous model or the new one, never a
mix (new weights next to the old gallery and card). The swap is one ``renameat2(RENAME_EXCHANGE)`` where the kernel
offers it, else rename-aside / rename-in / delete (a kill between the two renames is repaired by the next run, see
:func:`recover_interrupted_swap`).

Checkpoints (``step_N`` / ``epoch_N``, the HF examples' layout) and tracker logs live inside ``output_dir`` while a run
trains, so that ``--resume_from_checkpoint latest`` finds them after a kill; the swap carries them over into the new
folder. Everything else of the previous model is replaced.

The published files name no path of this machine (:func:`public_name`, :func:`public_command`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import re
import shlex
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = [
    "CARRIED_OVER",
    "make_world_readable",
    "public_command",
    "public_name",
    "recover_interrupted_swap",
    "staging_dir",
    "swap_into_place",
]

REPO_ROOT = Path(__file__).resolve().parent.parent

# Entries of an existing output folder that belong to training runs rather than to the model: kept across the swap.
CARRIED_OVER = re.compile(r"(step|epoch)_\d+|logs")
_SIBLING = re.compile(r"\.(tmp|old)-(\d+)$")


def staging_dir(output_dir: str) -> str:
    """``<output_dir>.tmp-<pid>``: a sibling, so that renaming it into place never crosses a file system."""
    return f"{os.path.normpath(os.path.abspath(output_dir))}.tmp-{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def recover_interrupted_swap(output_dir: str) -> None:
    """Clean up after a run killed while saving: drop its staging folder, and put the previous model back if the
    kill fell between the two renames of the fallback swap (``output_dir`` missing, ``<output_dir>.old-<pid>``
    there). Siblings of live processes (a concurrent run) are left alone."""
    target = os.path.normpath(os.path.abspath(output_dir))
    parent, name = os.path.split(target)
    if not os.path.isdir(parent):
        return
    for entry in sorted(os.listdir(parent)):
        match = _SIBLING.search(entry)
        if not entry.startswith(name + ".") or match is None or entry[: match.start()] != name:
            continue
        if _pid_alive(int(match.group(2))):
            continue
        path = os.path.join(parent, entry)
        if match.group(1) == "old" and not os.path.exists(target):
            logger.warning("Restoring %s: a previous run was killed while replacing it.", target)
            os.rename(path, target)
        else:
            shutil.rmtree(path, ignore_errors=True)


def make_world_readable(folder: str) -> None:
    """rw-r--r-- files and rwxr-xr-x folders: some writers (safetensors' temporary file + rename) leave 0600,
    which another user or a Space container cannot read."""
    os.chmod(folder, 0o755)
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)


def _exchange(a: str, b: str) -> bool:
    """Atomically exchange two paths with renameat2(RENAME_EXCHANGE) (Linux >= 3.15, glibc >= 2.28); False where
    the system or the file system does not offer it."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def swap_into_place(staging: str, output_dir: str) -> None:
    """Replace ``output_dir`` by the complete ``staging`` folder, carrying over its checkpoints and logs."""
    target = os.path.normpath(os.path.abspath(output_dir))
    if not os.path.exists(target):
        os.rename(staging, target)
        return
    if _exchange(staging, target):
        old = staging  # the previous model now sits at the staging path
    else:
        old = f"{target}.old-{os.getpid()}"
        os.rename(target, old)
        os.rename(staging, target)
    for entry in os.listdir(old):
        if CARRIED_OVER.fullmatch(entry) and not os.path.exists(os.path.join(target, entry)):
            os.rename(os.path.join(old, entry), os.path.join(target, entry))
    shutil.rmtree(old)


def _looks_like_path(value: str) -> bool:
    return value.startswith(("/", "~", "./", "../")) or os.path.isabs(value)


def public_name(value: str | None) -> str | None:
    """How a path is written in the published folder: relative to the repository (the bundled defaults) or to the
    current directory when under them, else ``.../<parent>/<name>``; Hub ids and other non-paths as given. Never an
    absolute path of this machine (a user's home directory would be published to the Hub)."""
    if value is None:
        return None
    if not _looks_like_path(value) and not os.path.exists(os.path.expanduser(value)):
        return value  # a Hub id
    if not _looks_like_path(value):
        return os.path.normpath(value)  # an existing relative path: nothing of the machine in it
    path = Path(os.path.expanduser(value)).resolve()
    for base in (REPO_ROOT, Path.cwd().resolve()):
        try:
            return str(path.relative_to(base)) or "."
        except ValueError:
            continue
    tail = path.parts[-2:] if len(path.parts) > 2 else path.parts[-1:]
    return ".../" + "/".join(tail)


def public_command(argv: list[str], program: str = "accelerate launch training/train.py") -> str:
    """The command as published in ``all_results.json`` and the card: every absolute path through `public_name`."""
    words = []
    for word in argv:
        if word.startswith("--") and "=" in word:
            flag, value = word.split("=", 1)
            words.append(f"{flag}={public_name(value) if _looks_like_path(value) else value}")
        else:
            words.append(public_name(word) if _looks_like_path(word) else word)
    return program + (" " + shlex.join(words) if words else "")
