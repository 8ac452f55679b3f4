"""The ``ouro`` command: ``offline``, ``demo``, ``bench engine``."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ouro", description="Ouroboros looper")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("offline", help="run a performance script without JACK")
    p.add_argument("script", type=Path)
    p.add_argument("--input", type=Path, required=True, help="input WAV (engine frame 0 on)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when the engine refused any command of the script")

    p = sub.add_parser("demo", help="play the seed scenario offline and write its WAVs")
    p.add_argument("--out", type=Path, default=Path("demo-out"))

    p = sub.add_parser("bench", help="benchmarks")
    bsub = p.add_subparsers(dest="bench", required=True)
    b = bsub.add_parser("engine", help="time Engine.process() under full load")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    b.add_argument("--seconds", type=float, default=20.0, help="audio seconds per block size")
    b.add_argument("--block-sizes", default="64,128,256")

    args = parser.parse_args(argv)
    if args.command == "offline":
        from rtcore import offline

        return offline.run(args.script, args.input, args.out, strict=args.strict)
    if args.command == "demo":
        from rtcore.demo import run_demo

        return run_demo(args.out)
    if args.command == "bench" and args.bench == "engine":
        from rtcore.bench import bench_engine, format_report

        try:
            sizes = tuple(int(s) for s in args.block_sizes.split(","))
        except ValueError:
            parser.error(f"--block-sizes must be integers separated by commas, "
                         f"got {args.block_sizes!r}")
        bad = [s for s in sizes if not 16 <= s <= 8192]
        if bad:
            parser.error(f"--block-sizes must each be between 16 and 8192, got {bad[0]}")
        if not (math.isfinite(args.seconds) and 0 < args.seconds <= 3600):
            parser.error(f"--seconds must be a positive number up to 3600, got {args.seconds}")
        report = bench_engine(sizes, args.seconds)
        print(json.dumps(report) if args.json else format_report(report))
        return 0
    parser.error("unknown command")
    return 2


if __name__ == "__main__":
    sys.exit(main())
