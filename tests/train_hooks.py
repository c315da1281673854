"""Test-only hooks into a training run (none of them is a flag of train.py):

* ``stop_after_steps``: end the run with SystemExit after N optimiser steps (after that step's checkpoint, if any),
  as a kill between two checkpoints would;
* ``kill_during_save``: SIGKILL the process in the middle of the final save, right after the new weights are written;
* ``record_stream_ids``: with ``--streaming``, write the content ids of the training examples each process used.

In-process: ``install(monkeypatch, stop_after_steps=10)``. In a launched process (``accelerate launch``): run this
file as the training script with the hooks as JSON in ``INFODISENT_TEST_HOOKS`` (``tiny_assets.run_script(...,
hooks={...})`` does both); it installs them and runs ``training.train.cli()``.
"""

from __future__ import annotations

import json
import os
import signal
import sys

HOOKS_ENV = "INFODISENT_TEST_HOOKS"


class _Patcher:
    """The one method of pytest's monkeypatch that `install` uses, for a process without pytest."""

    def setattr(self, target, name, value):
        setattr(target, name, value)


def install(monkeypatch, stop_after_steps=None, kill_during_save=False, record_stream_ids=None) -> None:
    from training import fit, model_folder, streaming

    if stop_after_steps is not None:
        end_of_step = fit._Fit.end_of_step

        def stop_after(self):
            end_of_step(self)
            if self.state.global_step >= stop_after_steps:
                raise SystemExit(f"Stopped after {self.state.global_step} steps (test hook).")

        monkeypatch.setattr(fit._Fit, "end_of_step", stop_after)
    if kill_during_save:  # write_model_folder saves the image processor right after the weights
        monkeypatch.setattr(model_folder, "save_image_processor", lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL))
    if record_stream_ids:
        init = streaming.StreamSplit.__init__
        created = []

        def recording_init(self, *args, **kwargs):
            init(self, *args, **kwargs)
            if not created:  # the training split is the first stream train.py builds
                self.record_ids = record_stream_ids
            created.append(self)

        monkeypatch.setattr(streaming.StreamSplit, "__init__", recording_init)


if __name__ == "__main__":
    install(_Patcher(), **json.loads(os.environ.get(HOOKS_ENV, "{}")))
    from training.train import cli

    sys.exit(cli())
