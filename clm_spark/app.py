"""Command implementations: load config, build the session and lake, call the pipeline."""

from __future__ import annotations

import argparse

from clm_spark.config import load_config, parse_date
from clm_spark.errors import ClmError


def generate_command(args: argparse.Namespace) -> int:
    raise ClmError("clm generate is not implemented yet")


def segments_check_command(config_path: str) -> int:
    load_config(config_path)
    raise ClmError("clm segments check is not implemented yet")


def run_command(config_path: str, day: str) -> int:
    load_config(config_path)
    parse_date(day)
    raise ClmError("clm run is not implemented yet")


def backfill_command(config_path: str, start: str, end: str) -> int:
    load_config(config_path)
    parse_date(start, "--start")
    parse_date(end, "--end")
    raise ClmError("clm backfill is not implemented yet")


def demo_command(config_path: str, args: argparse.Namespace) -> int:
    load_config(config_path)
    raise ClmError("clm demo is not implemented yet")
