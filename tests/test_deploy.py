"""Scheduling examples stay true to the code: the Airflow DAG and the Databricks bundle.

Airflow is not a dependency of ours, so the DAG is imported against a recording stand-in of the
two Airflow names it uses; anything else it touched at import time (Variables, files) would fail.
"""

from __future__ import annotations

import importlib.util
import sys
import tomllib
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jinja2
import pytest
import yaml

from clm_spark.cli import _parser
from clm_spark.session import DELTA_CONF

REPO = Path(__file__).resolve().parents[1]


class _Recorder:
    created: list[dict] = []

    def __init__(self, **kwargs):
        _Recorder.created.append({"class": type(self).__name__, **kwargs})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class DAG(_Recorder):
    pass


class SparkSubmitOperator(_Recorder):
    pass


@pytest.fixture
def airflow_stub(monkeypatch):
    modules = {
        "airflow": types.ModuleType("airflow"),
        "airflow.providers": types.ModuleType("airflow.providers"),
        "airflow.providers.apache": types.ModuleType("airflow.providers.apache"),
        "airflow.providers.apache.spark": types.ModuleType("airflow.providers.apache.spark"),
        "airflow.providers.apache.spark.operators": types.ModuleType(
            "airflow.providers.apache.spark.operators"
        ),
    }
    modules["airflow"].DAG = DAG
    spark_submit = types.ModuleType("airflow.providers.apache.spark.operators.spark_submit")
    spark_submit.SparkSubmitOperator = SparkSubmitOperator
    modules[spark_submit.__name__] = spark_submit
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    _Recorder.created.clear()
    return _Recorder.created


def test_airflow_dag_submits_the_ended_day_with_retries_and_delta(airflow_stub):
    path = REPO / "deploy" / "airflow" / "clm_daily.py"
    spec = importlib.util.spec_from_file_location("clm_daily_dag", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))

    dag, task = airflow_stub
    assert dag["class"] == "DAG" and dag["dag_id"] == "clm_daily"
    assert dag["max_active_runs"] == 1 and dag["catchup"] is False
    assert dag["default_args"]["retries"] >= 1
    assert task["class"] == "SparkSubmitOperator"
    assert task["application"].endswith("/jobs/daily.py")
    assert task["py_files"].endswith("/dist/clm_spark.zip")
    args = task["application_args"]
    assert args[args.index("--date") + 1] == task["name"].removeprefix("clm-daily-")
    assert {k: task["conf"][k] for k in DELTA_CONF} == DELTA_CONF
    pins = dict(line.split("==") for line in (REPO / "requirements.txt").read_text().split() if "==" in line)
    assert task["packages"] == f"io.delta:delta-spark_4.2_2.13:{pins['delta-spark']}"
    run_args = _parser().parse_args(["run", *args])  # the job's arguments are valid `clm run` arguments
    template = run_args.date

    # The 01:30 run of 2024-03-02 must publish 2024-03-01 under both schedulers' semantics:
    # Airflow 2 (cron = data intervals: logical date 03-01 01:30, interval ends 03-02 01:30) and
    # Airflow 3 (cron = triggers: logical date = interval start = end = 03-02 01:30).
    run_at = datetime(2024, 3, 2, 1, 30, tzinfo=UTC)
    airflow2 = {"logical_date": run_at - timedelta(days=1), "data_interval_end": run_at}
    airflow3 = {"logical_date": run_at, "data_interval_end": run_at}
    for context in (airflow2, airflow3):
        assert _render(template, context) == "2024-03-01"
    assert _render("{{ ds }}", airflow3) == "2024-03-02"  # what `ds` would have published on Airflow 3


def _render(template: str, context: dict) -> str:
    """Render as Airflow does: the `ds` filter and `macros.ds_add`, with `ds` = the logical date."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.filters["ds"] = lambda value: value.strftime("%Y-%m-%d")

    def ds_add(ds: str, days: int) -> str:
        return (datetime.strptime(ds, "%Y-%m-%d") + timedelta(days=days)).strftime("%Y-%m-%d")

    macros = types.SimpleNamespace(ds_add=ds_add)
    return env.from_string(template).render(
        **context, ds=context["logical_date"].strftime("%Y-%m-%d"), macros=macros
    )


def test_databricks_bundle_runs_the_wheel_entry_point():
    bundle = yaml.safe_load((REPO / "deploy" / "databricks" / "databricks.yml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    job = bundle["resources"]["jobs"]["clm_daily"]
    [task] = job["tasks"]
    wheel = task["python_wheel_task"]
    assert wheel["package_name"] == "clm_spark"
    assert project["scripts"][wheel["entry_point"]] == "clm_spark.cli:main"
    params = wheel["parameters"]
    assert params[0] == "run" and params[params.index("--date") + 1] == "yesterday"
    assert _parser().parse_args(params).command == "run"
    assert job["max_concurrent_runs"] == 1 and task["max_retries"] >= 1
    assert job["schedule"]["timezone_id"] == "UTC"
    assert "pyspark" not in " ".join(project["dependencies"]), (
        "the wheel must not replace the runtime's Spark"
    )
    assert "../../conf" in bundle["sync"]["paths"]
    config = params[params.index("--config") + 1]
    # workspace.file_path is already an absolute /Workspace/... path: prefixing it doubled it
    assert config.startswith("${workspace.file_path}/") and "/Workspace$" not in config
    cluster = job["job_clusters"][0]["new_cluster"]
    assert cluster["node_type_id"] == "${var.node_type_id}" and "node_type_id" in bundle["variables"]


# The top-level mappings a databricks.yml may hold (Databricks Asset Bundles configuration
# reference); anything else is a typo the CLI would reject at `bundle validate`.
BUNDLE_TOP_LEVEL = {
    "bundle", "include", "scripts", "sync", "artifacts", "variables", "workspace", "resources",
    "targets", "permissions", "presets", "run_as", "experimental", "python", "git",
}  # fmt: skip


def test_databricks_bundle_matches_the_published_bundle_schema():
    """Every job resource loads into the job model generated from the bundle schema
    (databricks-bundles, published by Databricks): an unknown or misplaced key, a wrong type or
    a missing required field fails here instead of at `databricks bundle validate`."""
    from databricks.bundles.jobs import Job

    bundle = yaml.safe_load((REPO / "deploy" / "databricks" / "databricks.yml").read_text())
    assert set(bundle) <= BUNDLE_TOP_LEVEL, set(bundle) - BUNDLE_TOP_LEVEL
    assert set(bundle["resources"]) == {"jobs"}
    for name, spec in bundle["resources"]["jobs"].items():
        job = Job.from_dict(dict(spec))
        assert job.as_dict()["tasks"][0]["task_key"] == "clm_run", name
    for var in bundle["variables"].values():
        assert set(var) <= {"description", "default", "type", "lookup"}
    for target in bundle["targets"].values():
        assert target.get("mode") in {None, "development", "production"}
    # the model is strict: a misplaced key is refused, so the check above can fail
    broken = dict(bundle["resources"]["jobs"]["clm_daily"], node_type_id="m5.large")
    with pytest.raises(ValueError, match="node_type_id"):
        Job.from_dict(broken)
