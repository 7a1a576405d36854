"""Report the widget's size as served: raw, gzip and brotli bytes, against the budgets of issue 7.

Usage: .venv/bin/python bench/widget_size.py [--url http://127.0.0.1:8000/widget.js]
Without --url it measures the committed build (widget/dist/parley.js) and the readable source.
"""

from __future__ import annotations

import argparse
import gzip
import platform
import sys
from pathlib import Path

import brotli
import httpx

ROOT = Path(__file__).resolve().parent.parent
BUDGET_BEFORE_OPEN = 10 * 1024  # gzip bytes loaded before the visitor opens the panel
BUDGET_TOTAL = 25 * 1024  # gzip bytes of everything, panel included


def sizes(body: bytes) -> tuple[int, int, int]:
    return len(body), len(gzip.compress(body, 9, mtime=0)), len(brotli.compress(body, quality=11))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="measure what a running server serves at this URL")
    args = parser.parse_args()
    if args.url:
        rows = {f"served {args.url}": httpx.get(args.url, headers={"Accept-Encoding": "identity"}).content}
    else:
        rows = {
            "widget/dist/parley.js (served)": (ROOT / "widget/dist/parley.js").read_bytes(),
            "widget/parley.js (source)": (ROOT / "widget/parley.js").read_bytes(),
        }
    print(f"python {platform.python_version()}, brotli {brotli.version}, {platform.machine()} {platform.system()}")
    print(f"{'file':<40} {'raw':>8} {'gzip -9':>8} {'brotli 11':>9}")
    served_gzip = 0
    for name, body in rows.items():
        raw, gz, br = sizes(body)
        served_gzip = served_gzip or gz
        print(f"{name:<40} {raw:>8,} {gz:>8,} {br:>9,}")
    # The widget is one script: what loads before the panel opens is everything.
    ok = served_gzip <= BUDGET_BEFORE_OPEN and served_gzip <= BUDGET_TOTAL
    print(f"budget before open {BUDGET_BEFORE_OPEN:,} gzip, total {BUDGET_TOTAL:,} gzip: {'OK' if ok else 'OVER'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
