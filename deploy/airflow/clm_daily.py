"""Airflow DAG: one clm-spark daily run per logical date, submitted with SparkSubmitOperator.

Idempotent by design: `clm run --date D` ingests only files it has not seen, and replaces the
snapshot_date = D partitions of the gold tables atomically, so a retry or a manual re-run of a
date publishes the same rows again. Exit code 3 (critical data-quality failure) publishes nothing
for D; the retry then fails the same way until the data is fixed, which is what you want.

The date published is the UTC day before the run's data interval ends,
`{{ macros.ds_add(data_interval_end | ds, -1) }}`. That is the day that has ended on Airflow 2
(cron schedules make intervals: a 01:30 run ends the interval it belongs to) and on Airflow 3
(cron schedules are triggers: the interval ends at the run itself), where `{{ ds }}` would name
the running day on Airflow 3.

Nothing is read at import time (no Variable.get, no files): the scheduler parses this file often.
Paths come from Jinja templates that Airflow renders when the task runs.

Install on the Airflow side: apache-airflow-providers-apache-spark, and a `spark_default`
connection pointing at your cluster (spark://host:7077, yarn, k8s://...).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow import DAG
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

# Where `make package` output and conf/ were deployed; override with the Airflow Variable clm_home.
CLM_HOME = "{{ var.value.get('clm_home', '/opt/clm-spark') }}"
DELTA_PACKAGE = "io.delta:delta-spark_4.2_2.13:4.4.1"
DAY = "{{ macros.ds_add(data_interval_end | ds, -1) }}"  # the UTC day that has ended

with DAG(
    dag_id="clm_daily",
    description="clm-spark: ingest, refine, snapshot, transitions and validation for one UTC day",
    schedule="30 1 * * *",  # 01:30 UTC: publishes the day that has just ended (DAY)
    start_date=datetime(2024, 1, 1),
    catchup=False,  # backfill explicitly: airflow dags backfill -s 2024-01-01 -e 2024-01-31 clm_daily
    max_active_runs=1,  # runs share one lake: publish dates one at a time
    default_args={
        "owner": "data-engineering",
        "retries": 2,
        "retry_delay": timedelta(minutes=10),
        "retry_exponential_backoff": True,
        "execution_timeout": timedelta(hours=2),
    },
    tags=["clm", "spark", "delta"],
) as dag:
    SparkSubmitOperator(
        task_id="clm_run",
        conn_id="spark_default",
        name=f"clm-daily-{DAY}",
        application=f"{CLM_HOME}/jobs/daily.py",
        py_files=f"{CLM_HOME}/dist/clm_spark.zip",
        files=f"{CLM_HOME}/conf/clm.yaml,{CLM_HOME}/conf/segments.yaml,{CLM_HOME}/conf/expectations.yaml",
        packages=DELTA_PACKAGE,
        conf={
            "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
            "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
            "spark.sql.session.timeZone": "UTC",
        },
        application_args=["--config", f"{CLM_HOME}/conf/clm.yaml", "--date", DAY],
    )
