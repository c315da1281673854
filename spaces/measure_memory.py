#!/usr/bin/env python
"""Peak memory of the Space under parallel large uploads (issue 13: "one 35 KB 6000x6000 PNG costs ~380 MiB").

Starts ``python spaces/app.py`` (or the app given with --app) in a subprocess on a free port, warms it up with one
small upload, then sends N parallel ``/explain`` API calls, each uploading a SIDE x SIDE PNG that compresses to a few
dozen KB, and reads the server process's peak resident memory (``VmHWM`` in /proc, Linux only) before and after.

    python spaces/measure_memory.py                         # 8 x 6000x6000, the bundled model
    python spaces/measure_memory.py --app /tmp/old/app.py   # another version of the app, for a before/after

Prints one JSON object: rss_before_mib (after warm-up), peak_mib (VmHWM after the burst), peak_increase_mib, the
per-call wall times, their outcomes, and how many uploaded files are left in Gradio's upload cache right afterwards
(an API call's upload is deleted 120 s after its last arrival: spaces/uploads.py).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent


def _status_mib(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def big_png(path: Path, side: int) -> int:
    """A side x side RGB PNG of flat shapes (a few dozen KB: cheap to upload, expensive to decode)."""
    image = Image.new("RGB", (side, side), (235, 235, 235))
    draw = ImageDraw.Draw(image)
    rng = np.random.default_rng(0)
    for _ in range(12):
        x, y = rng.integers(0, side, 2)
        r = int(rng.integers(side // 20, side // 5))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    image.save(path, optimize=True)
    return path.stat().st_size


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app", default=str(HERE / "app.py"))
    parser.add_argument("--model", default=str(HERE / "model"))
    parser.add_argument("--n", type=int, default=8, help="parallel uploads (default 8)")
    parser.add_argument("--side", type=int, default=6000, help="image side in pixels (default 6000)")
    parser.add_argument(
        "--same",
        action="store_true",
        help="upload the same bytes N times (Gradio stores them at one path: issue 26's load)",
    )
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    from gradio_client import Client, handle_file

    work = Path(tempfile.mkdtemp(prefix="infodisent-mem-"))
    cache = work / "gradio_cache"
    images = []
    for i in range(args.n):  # distinct files unless --same: Gradio stores identical uploads at one path
        path = work / f"big_{i}.png"
        if args.same and images:
            images.append(images[0])  # the same file (name and bytes): one path in Gradio's cache for all N
            continue
        big_png(path, args.side)
        if not args.same:
            with Image.open(path) as im:
                im.load()
                im.putpixel((i, 0), (i, 0, 0))
                im.save(path, optimize=True)
        images.append(path)
    small = work / "small.png"
    Image.new("RGB", (28, 28), (128, 128, 128)).save(small)
    port = _free_port()
    env = dict(
        os.environ,
        GRADIO_SERVER_PORT=str(port),
        INFODISENT_MODEL=args.model,
        HF_HUB_OFFLINE="1",
        GRADIO_ANALYTICS_ENABLED="False",
        GRADIO_TEMP_DIR=str(cache),
        OMP_WAIT_POLICY="PASSIVE",
    )
    log = open(work / "server.log", "w+")
    server = subprocess.Popen([sys.executable, args.app], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 240
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5):
                    break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    log.seek(0)
                    raise SystemExit(f"the app did not start:\n{log.read()[-3000:]}") from None
                time.sleep(0.5)
        Client(url, verbose=False).predict(handle_file(str(small)), api_name="/explain")  # warm-up
        rss_before = _status_mib(server.pid, "VmRSS")
        hwm_before = _status_mib(server.pid, "VmHWM")

        def call(path: Path) -> tuple[float, str]:
            start = time.perf_counter()
            try:
                Client(url, verbose=False).predict(handle_file(str(path)), api_name="/explain")
                outcome = "ok"
            except Exception as error:  # noqa: BLE001 - reported, not raised: the measurement goes on
                outcome = f"{type(error).__name__}: {error}"[:200]
            return time.perf_counter() - start, outcome

        start = time.perf_counter()
        with ThreadPoolExecutor(args.n) as pool:
            results = list(pool.map(call, images))
        wall = time.perf_counter() - start
        peak = _status_mib(server.pid, "VmHWM")
        left = [p for p in cache.rglob("*") if p.is_file() and p.suffix.lower() == ".png" and "big_" in p.name]
        report = {
            "app": args.app,
            "uploads": args.n,
            "same_bytes": args.same,
            "side": args.side,
            "png_bytes": images[0].stat().st_size,
            "rss_before_mib": round(rss_before, 1),
            "hwm_before_mib": round(hwm_before, 1),
            "peak_mib": round(peak, 1),
            "peak_increase_mib": round(peak - rss_before, 1),
            "burst_wall_s": round(wall, 2),
            "call_s": [round(t, 2) for t, _ in results],
            "outcomes": sorted({o for _, o in results}),
            "uploads_left_in_cache": len(left),
        }
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
