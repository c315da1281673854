"""Who may delete an uploaded file, and when (issue 26: the Space failed half the requests when several people sent
the same image at once).

Gradio stores an upload at ``<cache>/<sha256 of its bytes>/<name>``: identical uploads from different visitors get
the *same* path, and each new upload of those bytes renames a fresh file over it. Deleting "my" upload when my API
call is done therefore deletes it for every other caller who uploaded the same bytes and whose call is still queued
(between a client's upload and its call there is no request the app sees, so no in-call reference count can cover
that window). `UploadLeases` deletes a cached upload only when

- no request is reading it now (a count per path, taken for the whole call),
- the page has not used it (a visitor re-reads their upload when they change the class; the page's uploads are left
  to Gradio's own age-based sweep, ``delete_cache``),
- it is not one of the files Gradio keeps (``keep_in_cache``: the examples' copies, at the path an upload of the
  same bytes gets; deleting one would break every later click on that example), and
- its last arrival is at least `GRACE_S` old: a rename by a newer identical upload resets the file's ctime, so a
  caller who uploaded within the grace period still finds the file when its queued call starts.

Folders are never removed: Gradio creates the folder and renames the upload into it in two steps, and removing an
empty folder between them would lose that upload (Gradio's own sweep leaves folders too).
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

# Longer than any wait between a client's upload and the start of its call: the queue holds at most 32 events served
# two at a time, each well under a second on a small CPU (a 6000 x 6000 decode ~1 s), so ~16 s at worst.
GRACE_S = 120.0


class UploadLeases:
    """Reference counts on the uploads in one Gradio cache folder, and the deletion of those nobody may still need."""

    def __init__(self, cache_dir: str | os.PathLike, grace_s: float = GRACE_S, protected=None):
        """`protected`: a callable returning the paths never to delete (asked at every sweep: Gradio adds to them
        while the app starts)."""
        self.cache = Path(cache_dir).resolve()
        self.grace_s = float(grace_s)
        self._protected = protected or (lambda: ())
        self._lock = threading.Lock()
        self._holders: dict[Path, int] = {}
        self._pending: set[Path] = set()  # released by every holder, waiting for their grace period
        self._kept: set[Path] = set()  # used by the page: left to Gradio's sweep

    def _cached(self, path) -> Path | None:
        """The resolved path when it lies inside the cache folder (the bundled examples are passed by path too and
        are never ours to delete), else None."""
        if not path:
            return None
        resolved = Path(path).resolve()
        return resolved if self.cache in resolved.parents else None

    @contextmanager
    def hold(self, path):
        """Keep `path` on disk while the block runs; afterwards it may be deleted once nobody needs it."""
        key = self._cached(path)
        if key is None:
            yield
            return
        with self._lock:
            self._holders[key] = self._holders.get(key, 0) + 1
            self._pending.discard(key)
        try:
            yield
        finally:
            with self._lock:
                self._holders[key] -= 1
                if self._holders[key] == 0:
                    del self._holders[key]
                    if key not in self._kept:
                        self._pending.add(key)
            self.sweep()
            timer = threading.Timer(self.grace_s + 1.0, self.sweep)
            timer.daemon = True
            timer.start()

    def keep(self, path) -> None:
        """The page uses `path`: never delete it here (the visitor may come back to it)."""
        key = self._cached(path)
        if key is not None:
            with self._lock:
                self._kept.add(key)
                self._pending.discard(key)

    def sweep(self, now: float | None = None) -> list[Path]:
        """Delete every released upload whose grace period is over and that nobody holds; the deleted paths."""
        now = time.time() if now is None else now
        deleted = []
        with self._lock:
            protected = {Path(p).resolve() for p in self._protected()} if self._pending else set()
            for key in list(self._pending):
                if key in self._holders or key in self._kept or key in protected:
                    self._pending.discard(key)
                    continue
                try:
                    stat = key.lstat()
                except FileNotFoundError:
                    self._pending.discard(key)
                    continue
                # ctime: a newer identical upload renamed over the path resets it (mtime is kept for safety).
                if now - max(stat.st_ctime, stat.st_mtime) < self.grace_s:
                    continue
                key.unlink(missing_ok=True)
                self._pending.discard(key)
                deleted.append(key)
            if len(self._kept) > 256:  # forget the page's uploads that Gradio's sweep has deleted
                self._kept = {key for key in self._kept if key.exists()}
        return deleted

    def holders(self, path) -> int:
        key = self._cached(path)
        with self._lock:
            return self._holders.get(key, 0) if key is not None else 0
