#!/usr/bin/env python
"""Run the fault suite's table (tests/fault_cases.py) outside pytest and print the tally per category, for the
issue note: tries / right result / clear error / traceback / wrong result / data lost.

    python tests/fault_table.py                    # Markdown table on stdout
    python tests/fault_table.py --json faults.json # also the per-case verdicts as JSON
    python tests/fault_table.py --verbose          # and every case's verdict and detail
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import fault_cases  # noqa: E402  (the same table pytest runs)
import fault_kit  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default=None, help="write the per-case verdicts here")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="infodisent-faults-") as root:
        ctx = fault_kit.Context(Path(root))
        for case in fault_cases.CASES:
            try:
                verdict, detail = fault_kit.judge(case, ctx)
            except BaseException as error:  # noqa: BLE001 - pytest.skip and the like
                if type(error).__name__ != "Skipped":
                    raise
                verdict, detail = "skipped", str(error)
            rows.append(
                {
                    "category": case.category,
                    "case": case.name,
                    "expected": case.expect,
                    "verdict": verdict,
                    "detail": detail,
                }
            )
            if args.verbose:
                print(f"{verdict:>13}  {case.id}  {detail[:200]}", file=sys.stderr)
    categories = sorted({r["category"] for r in rows}, key=[c.category for c in fault_cases.CASES].index)
    print("| category | tries | right result | clear error | traceback | wrong result | data lost |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    total = Counter()
    for category in categories + ["all"]:
        counts = Counter(r["verdict"] for r in rows if category in ("all", r["category"]))
        tries = sum(v for k, v in counts.items() if k != "skipped")
        cells = [str(tries)] + [str(counts.get(v, 0)) for v in fault_kit.VERDICTS]
        name = "**all**" if category == "all" else category
        print(f"| {name} | " + " | ".join(cells) + " |")
        if category == "all":
            total = counts
    print(
        f"\n{len(rows)} cases in {time.perf_counter() - started:.0f} s"
        + (f"; {total['skipped']} skipped" if total.get("skipped") else "")
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"cases": rows}, indent=1, ensure_ascii=False) + "\n")
    bad = sum(total.get(v, 0) for v in ("traceback", "wrong result", "data lost"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
