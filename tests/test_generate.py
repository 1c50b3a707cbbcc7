"""The raw lake generator: deterministic bytes, every bad-input kind, skipped names present."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from datetime import date

from clm_spark.sample import generate as generate_module
from clm_spark.sample.generate import generate


def _digest(root) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_whatever_the_workers_and_all_bad_kinds(tmp_path, monkeypatch):
    a = generate(tmp_path / "a", persons=400, days=12, start=date(2024, 1, 1), seed=3, bad_rate=0.05)
    monkeypatch.setattr(generate_module, "_start_method", lambda: "spawn")  # as when a JVM is up
    b = generate(
        tmp_path / "b", persons=400, days=12, start=date(2024, 1, 1), seed=3, bad_rate=0.05, workers=2
    )
    # forked workers, in a fresh interpreter: this one may be running the tests' Spark JVM
    forked = "generate('{}', persons=400, days=12, start=date(2024, 1, 1), seed=3, bad_rate=0.05, workers=2)"
    code = "from datetime import date; from clm_spark.sample.generate import generate; " + forked
    subprocess.run([sys.executable, "-c", code.format(tmp_path / "f")], check=True, timeout=120)
    assert _digest(tmp_path / "f") == _digest(tmp_path / "a")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")  # days written in worker processes
    assert (b.event_lines, b.files, b.by_kind) == (a.event_lines, a.files, a.by_kind)
    other = generate(tmp_path / "c", persons=400, days=12, start=date(2024, 1, 1), seed=4, bad_rate=0.05)
    assert _digest(tmp_path / "c") != _digest(tmp_path / "a") and other.event_lines > 0
    kinds = {k.split(":")[1] for k in a.by_kind}
    assert kinds == {
        "malformed",
        "not_object",
        "missing_field",
        "bad_timestamp",
        "clock_error",
        "negative_amount",
        "bad_amount",
        "unknown_currency",
        "unknown_status",
        "empty_file",
        "corrupt_file",
    }
    names = {p.name for p in (tmp_path / "a").rglob("*")}
    assert "_SUCCESS" in names and ".staging.csv" in names
    assert any(n.endswith(".json.gz") for n in names) and any(n.endswith(".csv") for n in names)
    assert a.rate > 0 and a.order_lines > 0


def test_workers_are_spawned_not_forked_while_a_spark_jvm_is_up(spark):
    # a forked worker would share the py4j gateway's socket (seen: "Connection reset by peer")
    assert spark.sparkContext._gateway is not None
    assert generate_module._start_method() == "spawn"
