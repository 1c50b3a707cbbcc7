"""The `clm` command line: parse arguments, load config, call one function in clm_spark."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from clm_spark.errors import ClmError

DEFAULT_CONFIG = "conf/clm.yaml"


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help=f"config file (default {DEFAULT_CONFIG})")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logs")

    parser = argparse.ArgumentParser(
        prog="clm",
        description="clm-spark: customer lifecycle snapshots, RFM segments and transitions on Delta Lake.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run", parents=[common], help="ingest + refine + snapshot + transitions + validation for one date"
    )
    run.add_argument("--date", required=True, help="snapshot date D: YYYY-MM-DD, today or yesterday (UTC)")

    backfill = sub.add_parser(
        "backfill",
        parents=[common],
        help="publish every date from --start to --end (one pass, one commit per table)",
    )
    backfill.add_argument("--start", required=True, help="first snapshot date (YYYY-MM-DD)")
    backfill.add_argument("--end", required=True, help="last snapshot date (YYYY-MM-DD), inclusive")

    gen = sub.add_parser("generate", parents=[common], help="write a synthetic raw lake")
    gen.add_argument("--out", required=True, help="folder for clickstream/ and orders/")
    gen.add_argument("--persons", type=int, default=2000, help="number of people (default 2000)")
    gen.add_argument("--days", type=int, default=30, help="days of activity (default 30)")
    gen.add_argument("--start", default="2024-01-01", help="first day (default 2024-01-01)")
    gen.add_argument("--seed", type=int, default=7, help="random seed; same seed gives the same bytes")
    gen.add_argument(
        "--bad-rate", type=float, default=0.01, help="share of bad records injected (default 0.01)"
    )

    demo = sub.add_parser("demo", parents=[common], help="generate data, run several days, print a summary")
    demo.add_argument("--persons", type=int, default=3000, help="number of people (default 3000)")
    demo.add_argument("--days", type=int, default=45, help="days of generated activity (default 45)")
    demo.add_argument("--snapshots", type=int, default=3, help="snapshot dates to publish (default 3)")

    report = sub.add_parser(
        "report", parents=[common], help="write the offline HTML report (charts + latest summary)"
    )
    report.add_argument(
        "--out", default=None, help="output file (default <lake.root>/_reports/clm-report-<date>.html)"
    )

    vacuum = sub.add_parser(
        "vacuum", parents=[common], help="delete files no table version needs (retention, see README)"
    )
    vacuum.add_argument(
        "--retain-hours", type=float, default=168, help="keep unreferenced files this long (default 168)"
    )
    vacuum.add_argument("--force", action="store_true", help="allow --retain-hours below 168")

    peval = sub.add_parser(
        "predict-eval",
        parents=[common],
        help="fit the CLV models as of a date and compare with the purchases of the days after it",
    )
    peval.add_argument("--calibration-end", required=True, help="last day of the calibration (YYYY-MM-DD)")
    peval.add_argument("--holdout-days", type=int, required=True, help="days after it to compare with")

    export = sub.add_parser(
        "export",
        parents=[common],
        help="write one segment's audience of a published date as a file (control group left out)",
    )
    export.add_argument("--date", required=True, help="published snapshot date (YYYY-MM-DD)")
    export.add_argument("--segment", required=True, help="segment id, e.g. cant_lose_them")
    export.add_argument(
        "--format", default="csv", choices=("csv", "parquet"), help="file format (default csv)"
    )
    export.add_argument("--out", required=True, help="new folder (any Hadoop URI) for the file")
    export.add_argument(
        "--include-control",
        action="store_true",
        help="keep the control group's persons (flagged is_control) instead of leaving them out",
    )

    seg = sub.add_parser("segments", parents=[common], help="segment rules tools")
    seg_sub = seg.add_subparsers(dest="segments_command", required=True, metavar="ACTION")
    check = seg_sub.add_parser(
        "check", parents=[common], help="validate the rules and print the coverage grid"
    )
    check.add_argument(
        "--date",
        default=None,
        help="also print the share of customers per R, F and M score on this date (from silver, "
        "nothing written): a hollow score shows before publishing",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config_path = getattr(args, "config", DEFAULT_CONFIG)
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,  # under spark-submit a handler may already be installed; ours must win
    )
    for noisy in ("py4j", "great_expectations", "deltalake", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return _dispatch(args, config_path)
    except ClmError as exc:
        print(f"clm: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("clm: interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace, config_path: str) -> int:
    from clm_spark import app
    from clm_spark.config import parse_date

    if args.command == "generate":
        _generate(args)
    elif args.command == "segments":
        _segments_check(config_path, args.date)
    elif args.command == "run":
        _print_run(app.start(config_path, [parse_date(args.date)], "run"))
    elif args.command == "backfill":
        dates = app.date_range(parse_date(args.start, "--start"), parse_date(args.end, "--end"))
        _print_run(app.start(config_path, dates, "backfill"))
    elif args.command == "vacuum":
        for table, n in app.vacuum(config_path, args.retain_hours, args.force).items():
            print(f"  {table:<32} {n:>6} file(s) removed")
    elif args.command == "report":
        print(f"report: {app.report(config_path, args.out)}")
    elif args.command == "demo":
        _demo(config_path, args)
    elif args.command == "predict-eval":
        day = parse_date(args.calibration_end, "--calibration-end")
        _print_eval(app.predict_eval(config_path, day, args.holdout_days))
    elif args.command == "export":
        day = parse_date(args.date)
        result = app.export(config_path, day, args.segment, args.format, args.out, args.include_control)
        print(
            f"exported {result.persons:,} of {result.segment_persons:,} persons of {args.segment} on {day} "
            f"to {result.out}"
        )
        if result.control_left_out:
            print(
                f"  {result.control_left_out:,} control-group persons left out (--include-control keeps them)"
            )
    else:  # pragma: no cover - argparse guards this
        raise ClmError(f"unknown command {args.command}")
    return 0


def _print_eval(result) -> None:
    from clm_spark.tables import FREQUENCY_CAP

    h, p = result.holdout, result.fit.purchases.params
    print(f"BG/NBD as of {result.fit.snapshot_date}: " + ", ".join(f"{k} {v:.4g}" for k, v in p.items()))
    print(f"holdout {h.days} days, {h.customers:,} customers: order days predicted vs actual")
    for b in h.by_frequency:
        x = f"{b['x']}+" if b["x"] == FREQUENCY_CAP else str(b["x"])
        print(f"  x = {x:<3} {b['customers']:>9,} customers  {b['predicted']:>12,.1f}  {b['actual']:>10,}")
    error = "n/a" if h.relative_error is None else f"{h.relative_error:.1%}"
    print(f"  total {h.customers:>13,} customers  {h.predicted:>12,.1f}  {h.actual:>10,}  error {error}")
    for warning in result.warnings:
        print(f"  warning: {warning}")
    print(f"recorded in gold/clv_model (version {result.version})")


def _print_run(result) -> None:
    print(f"run {result.run_id} succeeded")
    for line in result.validation.split("; "):
        print(f"  validation {line}")
    for feed, c in result.counts.items():
        print(
            f"  {feed:<11} delivered {c['delivered']:>10,}  accepted {c['accepted']:>10,}  "
            f"quarantined {c['quarantined']:>8,}  duplicates {c['duplicates']:>8,}"
        )


def _generate(args: argparse.Namespace) -> None:
    from clm_spark.config import parse_date
    from clm_spark.errors import ConfigError
    from clm_spark.sample.generate import generate

    if args.persons < 1 or args.days < 1 or not 0 <= args.bad_rate < 1:
        raise ConfigError("--persons and --days must be >= 1 and --bad-rate in [0, 1)")
    start = parse_date(args.start, "--start")
    stats = generate(args.out, args.persons, args.days, start, args.seed, args.bad_rate)
    print(
        f"wrote {stats.event_lines:,} event lines and {stats.order_lines:,} order lines in {stats.files} files "
        f"to {args.out} in {stats.seconds:.1f}s ({stats.rate:,.0f} lines/s); bad lines injected: {stats.bad_lines:,}"
    )


def _segments_check(config_path: str, day: str | None) -> None:
    from clm_spark.app import prepare, score_shares
    from clm_spark.config import parse_date
    from clm_spark.lifecycle.segments import coverage_grid

    cfg, model = prepare(config_path)
    print(f"{cfg.segments}: {len(model.rules)} segments, {model.score_bins} score bins - OK")
    coverage_grid(model)
    if day is None:
        return
    shares, methods = score_shares(config_path, parse_date(day))
    print(
        f"\nshare of customers per score on {day} ("
        + ", ".join(f"{d}: {m}" for d, m in methods.items())
        + ")"
    )
    print("  score " + "".join(f"{d:>9}" for d in "rfm"))
    for score in range(1, model.score_bins + 1):
        print(f"  {score:>5} " + "".join(f"{shares[d][score]:>9.1%}" for d in "rfm"))
    hollow = [f"{d} {s}" for d in "rfm" for s, share in shares[d].items() if share == 0]
    if hollow:
        print("  hollow scores (no customer): " + ", ".join(hollow) + "; see rfm.scoring in the README")


def _demo(config_path: str, args: argparse.Namespace) -> None:
    from clm_spark import app
    from clm_spark.reports.summary import print_summary

    result = app.demo(config_path, args.persons, args.days, args.snapshots)
    if result.generated:
        print(f"generated {result.generated}")
    _print_run(result.run)
    print_summary(result.lake, sys.stdout)
    print(f"\nreport: {result.report}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
