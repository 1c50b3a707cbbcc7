"""An independent implementation agrees: DuckDB SQL gives our published snapshot, row for row."""

from __future__ import annotations

import pytest
from helpers import PUBLISHED_DATES

from benchmarks.duckdb_peer import compare, run_baseline
from clm_spark.pipeline import snapshot_params
from clm_spark.tables import CUSTOMER_SNAPSHOT


@pytest.mark.parametrize("day", PUBLISHED_DATES, ids=str)
def test_duckdb_snapshot_equals_ours(published, day):
    con, _, rows = run_baseline(published.lake.root, day, snapshot_params(published.cfg), published.model)
    assert rows == published.lake.read(CUSTOMER_SNAPSHOT).filter(f"snapshot_date = '{day}'").count() > 0
    assert compare(con, published.lake.root, day) == 0


def test_compare_sees_a_single_changed_score(published):
    day = PUBLISHED_DATES[-1]
    con, _, _ = run_baseline(published.lake.root, day, snapshot_params(published.cfg), published.model)
    con.execute(
        "UPDATE duck SET r_score = 6 WHERE person_id = (SELECT min(person_id) FROM duck WHERE r_score = 1)"
    )
    assert compare(con, published.lake.root, day) == 2
