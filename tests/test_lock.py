"""The lake lock: overlapping runs fail at once, other runs wait, a killed holder frees it."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import date

import pytest

from clm_spark.lock import LakeBusy, lake_lock

D1, D2 = date(2024, 1, 1), date(2024, 1, 2)


def test_an_overlapping_run_fails_at_once_naming_the_holder(tmp_path):
    with lake_lock(str(tmp_path), "run-a", [D1, D2], wait_seconds=60):
        started = time.monotonic()
        busy = r"run run-a \(pid \d+ .*\) is already publishing 2024-01-02"
        with pytest.raises(LakeBusy, match=busy), lake_lock(str(tmp_path), "run-b", [D2], wait_seconds=60):
            pass
        assert time.monotonic() - started < 5


def test_a_run_for_other_dates_waits_for_the_holder(tmp_path):
    order = []

    def other():
        with lake_lock(str(tmp_path), "run-b", [D2], wait_seconds=60):
            order.append("b")

    with lake_lock(str(tmp_path), "run-a", [D1], wait_seconds=60):
        thread = threading.Thread(target=other)
        thread.start()
        time.sleep(1.5)
        order.append("a done")
    thread.join(timeout=30)
    assert order == ["a done", "b"]


def test_waiting_gives_up_after_lock_wait_seconds(tmp_path):
    with (
        lake_lock(str(tmp_path), "run-a", [D1], wait_seconds=60),
        pytest.raises(LakeBusy, match="still holds the lake after 1s"),
        lake_lock(str(tmp_path), "run-b", [D2], wait_seconds=1),
    ):
        pass


def test_a_killed_holder_never_leaves_a_stale_lock(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, datetime; from clm_spark.lock import lake_lock\n"
            f"with lake_lock({str(tmp_path)!r}, 'run-k', [datetime.date(2024, 1, 1)], 5):\n"
            "    print('locked', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LakeBusy), lake_lock(str(tmp_path), "run-b", [D1], wait_seconds=0):
            pass
    finally:
        holder.kill()  # SIGKILL: no cleanup code runs
        holder.wait(timeout=30)
    with lake_lock(str(tmp_path), "run-b", [D1], wait_seconds=0):
        pass


def test_lock_none_and_object_store_roots_take_no_file_lock(tmp_path, caplog):
    """Without a lock two runs of the same date both start: the scheduler must serialise them."""
    with (
        lake_lock(str(tmp_path), "run-a", [D1], wait_seconds=0, mode="none"),
        lake_lock(str(tmp_path), "run-b", [D1], wait_seconds=0, mode="none"),
    ):
        pass
    assert not (tmp_path / "_locks").exists()
    with caplog.at_level("WARNING"), lake_lock("s3a://bucket/lake", "run-c", [D1], wait_seconds=0):
        pass
    assert "the scheduler must run one job at a time" in caplog.text


def test_file_lock_on_a_file_uri_root(tmp_path):
    root = tmp_path.as_uri()
    with (
        lake_lock(root, "run-a", [D1], wait_seconds=0, mode="file"),
        pytest.raises(LakeBusy, match="already publishing 2024-01-01"),
        lake_lock(str(tmp_path), "run-b", [D1], wait_seconds=0),
    ):
        pass
