"""`python -m benchmarks --scale S [--days N] [--backfill-days N] [--config FILE] [--verbose]` (what `make bench` runs)."""

from __future__ import annotations

import argparse
import logging
import sys

from clm_spark.errors import ClmError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--scale", type=float, default=1.0, help="data scale; 1 = 100,000 persons (default 1)"
    )
    parser.add_argument("--days", type=int, default=120, help="days of generated activity (default 120)")
    parser.add_argument("--backfill-days", type=int, default=0, help="also time a backfill of N dates")
    parser.add_argument("--config", default="conf/bench.yaml", help="config file (default conf/bench.yaml)")
    parser.add_argument("--out", default="bench", help="folder for data/ and results/ (default bench)")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="also log each pipeline step with its time"
    )
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("py4j", "great_expectations", "deltalake", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        if args.scale <= 0:
            raise ClmError("--scale must be > 0")
        if args.days < 2:
            raise ClmError("--days must be at least 2 (history plus one daily run)")
        if not 0 <= args.backfill_days <= args.days:
            raise ClmError(f"--backfill-days must be between 0 and --days ({args.days})")
        from benchmarks.run import run_bench
        from clm_spark.app import open_context, prepare

        cfg, model = prepare(args.config)
        print(f"benchmark at scale {args.scale:g} ({args.days} days)")
        run_bench(open_context(cfg, model), args.scale, args.out, args.days, args.backfill_days)
    except ClmError as exc:
        print(f"benchmarks: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
