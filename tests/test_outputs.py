"""What BI tools and people read: gold tables from non-Spark readers, the HTML report, the notebook."""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import nbformat
import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable
from helpers import PUBLISHED_DATES
from nbclient import NotebookClient

from clm_spark.reports.html import load_report_data, summary_table, write_html_report
from clm_spark.tables import GOLD_TABLES, SEGMENT_SUMMARY

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "clm_overview.ipynb"


@pytest.mark.parametrize("spec", GOLD_TABLES, ids=lambda s: s.name)
def test_gold_tables_open_in_deltalake_polars_and_duckdb_with_comments(published, spec):
    path = published.lake.path(spec)
    spark_rows = published.lake.read(spec).count()
    assert spark_rows > 0

    table = DeltaTable(path)
    assert table.to_pyarrow_table().num_rows == spark_rows
    assert pl.read_delta(path).height == spark_rows
    con = duckdb.connect()
    con.register("gold", table.to_pyarrow_dataset())  # the README's DuckDB recipe
    assert con.sql("select count(*) from gold").fetchall() == [(spark_rows,)]

    assert table.metadata().partition_columns == list(spec.partition_by)
    assert table.metadata().description == spec.comment
    fields = {f["name"]: f["metadata"].get("comment") for f in json.loads(table.schema().to_json())["fields"]}
    assert fields == {f.name: f.metadata["comment"] for f in spec.schema.fields}
    assert all(fields.values())

    actions = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    assert sum(a["num_records"] for a in actions) == spark_rows  # real per-file statistics
    if spec.partition_by == ("snapshot_date",):
        assert {str(a["partition.snapshot_date"]) for a in actions} <= {str(d) for d in PUBLISHED_DATES}


def test_html_report_is_self_contained_and_matches_the_summary(published, tmp_path):
    data = load_report_data(published.lake.root)
    assert data.latest == PUBLISHED_DATES[-1] and data.dates == list(PUBLISHED_DATES)
    table = summary_table(data)
    expected = published.lake.read(SEGMENT_SUMMARY).filter(f"snapshot_date = '{data.latest}'")
    assert int(table["persons"].sum()) == expected.groupBy().sum("persons").first()[0]
    assert len(table) == len(published.model.rules)

    page = Path(write_html_report(data, str(tmp_path / "report.html"))).read_text()
    assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,', page)) == 6
    assert not re.search(r"(src|href)=\"https?:", page) and "<script" not in page
    for segment in table["segment"]:
        assert f"<td>{segment}</td>" in page
    assert f"Population {int(table['persons'].sum()):,} persons" in page


def test_notebook_runs_headless_on_a_published_lake(published, monkeypatch):
    monkeypatch.setenv("CLM_LAKE", published.lake.root)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
    NotebookClient(
        notebook, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()  # raises CellExecutionError on any failing cell
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 6
    assert f"latest {PUBLISHED_DATES[-1]}" in "".join(o.get("text", "") for o in outputs)


def test_audiences_follow_the_published_dates(published):
    """audience_current holds the latest date's persons only; audience_changes one row per transition."""
    from pyspark.sql import functions as F

    from clm_spark.tables import AUDIENCE_CHANGES, AUDIENCE_CURRENT, CUSTOMER_SNAPSHOT, SEGMENT_TRANSITIONS

    lake, latest = published.lake, PUBLISHED_DATES[-1]
    current = lake.read(AUDIENCE_CURRENT)
    assert [r[0] for r in current.select("snapshot_date").distinct().collect()] == [latest]
    snapshot = lake.read(CUSTOMER_SNAPSHOT).filter(F.col("snapshot_date") == latest)
    keys = ["person_id", "segment", "is_control", "control_mixed"]
    assert current.select(keys).exceptAll(snapshot.select(keys)).count() == 0
    assert current.count() == snapshot.count()
    changes = lake.read(AUDIENCE_CHANGES).groupBy("snapshot_date").count().orderBy("snapshot_date").collect()
    moves = lake.read(SEGMENT_TRANSITIONS).groupBy("snapshot_date").count().orderBy("snapshot_date").collect()
    assert changes == moves and len(changes) == len(PUBLISHED_DATES)


def test_console_summary_states_the_control_group_and_the_day_s_changes(published):
    import io

    from pyspark.sql import functions as F

    from clm_spark.reports.summary import print_summary
    from clm_spark.tables import AUDIENCE_CHANGES, CUSTOMER_SNAPSHOT

    out = io.StringIO()
    print_summary(published.lake, out)
    latest = PUBLISHED_DATES[-1]
    snapshot = published.lake.read(CUSTOMER_SNAPSHOT).filter(F.col("snapshot_date") == latest)
    control = snapshot.filter("is_control").count()
    entered = published.lake.read(AUDIENCE_CHANGES).filter(F.col("snapshot_date") == latest)
    entered = entered.filter("change = 'entered'").count()
    text = out.getvalue()
    assert f"Segment summary for {latest}" in text
    assert f"control group: {control:,} persons" in text and f"{entered:,} entered" in text
