"""Peak memory of a block of code, for the benchmarks that report it (`scale.py`, `rotation.py`)."""

from __future__ import annotations

import os
import threading

import torch


class PeakMemory:
    """Peak resident memory (MB) of this process while the block runs, sampled every 20 ms from /proc (on a CUDA
    device: `torch.cuda.max_memory_allocated` as well)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mb = 0.0
        self.cuda_peak_mb = None
        self._stop = threading.Event()

    @staticmethod
    def rss_mb() -> float:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except (OSError, ValueError):  # not Linux: the process's lifetime peak is the best there is
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    def _sample(self):
        while not self._stop.wait(0.02):
            self.peak_mb = max(self.peak_mb, self.rss_mb())

    def __enter__(self):
        self.peak_mb = self.rss_mb()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self.rss_mb())
        if self.device.type == "cuda":
            self.cuda_peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
