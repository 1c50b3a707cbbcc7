"""The JVM handles clm-spark uses live in one module, and say so clearly where there is no JVM."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from clm_spark import compat

PRIVATE = re.compile(r"\._(jvm|jsc|jdf|gateway|jsparkSession)\b")


def test_no_private_spark_handle_outside_the_compat_module():
    package = Path(compat.__file__).parent
    users = sorted(
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if p.name != "compat.py" and PRIVATE.search(p.read_text())
    )
    assert users == []


class _ConnectLikeSession:
    """What a Spark Connect session looks like to us: no JVM in this process."""

    _jsparkSession = None


@pytest.mark.parametrize(
    "call, feature",
    [
        (lambda s: compat.hadoop_file_system(s, "s3a://bucket/lake"), "storage access"),
        (lambda s: compat.delta_txn_version(s, "s3a://bucket/lake/t", "app"), "Delta idempotency keys"),
        (lambda s: compat.delta_version_and_id(s, "s3a://bucket/lake/t"), "Delta table versions"),
    ],
)
def test_without_a_jvm_the_error_names_the_feature_that_needs_classic_spark(call, feature):
    session = _ConnectLikeSession()
    assert not compat.is_classic(session)
    with pytest.raises(compat.ClassicSparkRequired, match=f"^{feature} needs classic Spark"):
        call(session)
    compat.set_log_level(session, "WARN")  # harmless without a JVM


def test_free_local_checkpoint_is_false_without_a_plan_handle():
    assert compat.free_local_checkpoint(object()) is False


def test_storage_round_trip_through_hadoop(spark, tmp_path):
    from clm_spark.storage import Storage

    storage = Storage(spark)
    uri = (tmp_path / "a" / "b" / "r.html").as_uri()
    storage.write_text(uri, "héllo")
    assert storage.read_bytes(uri).decode() == "héllo" and storage.exists(uri)
    (tmp_path / "a" / "_x.json").write_text("{}")
    assert [(f.rel, f.size) for f in storage.list_files(str(tmp_path / "a"))] == [
        ("_x.json", 2),
        ("b/r.html", 6),
    ]
    assert {(f.rel, f.is_dir) for f in storage.list_dir(tmp_path.as_uri() + "/a")} == {
        ("_x.json", False),
        ("b", True),
    }
    assert storage.list_files(str(tmp_path / "missing")) == []
    # a local tree is walked folder by folder; other file systems list it in one go: same files
    fs, base = compat.hadoop_file_system(spark, str(tmp_path))
    listed = {
        walk: sorted(s.getPath().toString() for s in Storage._statuses(fs, base, walk))
        for walk in (True, False)
    }
    assert listed[True] == listed[False] and len(listed[True]) == 2
    assert storage.delete(str(tmp_path / "a" / "b"), recursive=True) and not storage.exists(uri)
