"""Charts and the offline HTML report over the small gold tables (no Spark needed).

Everything here reads aggregates only: `gold/segment_summary`, `gold/segment_transition_matrix`
and `gold/rfm_cutpoints` hold a few dozen rows per date, so they are read into pandas on one
machine: through the lake's Spark session when one is given (any lake URI, either engine), else
with `deltalake` (no Spark needed). Customer-level rows are never loaded. The notebook in `notebooks/` calls
the same functions, so the notebook and `clm report` always show the same pictures.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import posixpath
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pandas as pd
from matplotlib.figure import Figure

from clm_spark.errors import ClmError
from clm_spark.lake import Lake, TableSpec
from clm_spark.lifecycle.segments import DEFAULT_STAGES
from clm_spark.tables import (
    CLV_MODEL,
    COHORT_RETENTION,
    FREQUENCY_CAP,
    LIFECYCLE_KPIS,
    RFM_CUTPOINTS,
    SEGMENT_SUMMARY,
    SEGMENT_TRANSITION_MATRIX,
)

NEW, LEFT = "(new)", "(left)"


@dataclass(frozen=True)
class ReportData:
    """The aggregates behind every chart: all dates of the summary, the latest date of the rest."""

    summary: pd.DataFrame  # every date x segment
    matrix: pd.DataFrame  # latest date: from_segment, to_segment, persons
    cutpoints: pd.DataFrame  # latest date: dimension, score, min/max, customers
    latest: date
    clv: pd.DataFrame | None = None  # gold/clv_model, every date (predict.enabled), else None
    kpis: pd.DataFrame | None = None  # gold/lifecycle_kpis, scope all, every date
    cohorts: pd.DataFrame | None = None  # gold/cohort_retention, every month

    @property
    def dates(self) -> list[date]:
        return sorted(self.summary["snapshot_date"].unique())

    def stages(self) -> list[str]:
        present = list(dict.fromkeys(self.summary["stage"]))
        return [s for s in DEFAULT_STAGES if s in present] + [s for s in present if s not in DEFAULT_STAGES]


def _read(root: str, spec: TableSpec, latest: date | None = None, lake: Lake | None = None) -> pd.DataFrame:
    missing = f"{spec.name} does not exist under {root}: publish a snapshot first (clm run --date D)"
    if lake is not None:
        if not lake.exists(spec):
            raise ClmError(missing)
        df = lake.read(spec)
        if latest is not None:
            df = df.filter(df.snapshot_date == latest)
        return df.toPandas()  # a few dozen aggregate rows per date, never customers
    from deltalake import DeltaTable

    path = posixpath.join(root.rstrip("/"), spec.name)
    if not DeltaTable.is_deltatable(path):
        raise ClmError(missing)
    filters = None if latest is None else [("snapshot_date", "=", latest)]
    return DeltaTable(path).to_pandas(filters=filters)


def load_report_data(root: str, lake: Lake | None = None) -> ReportData:
    """Read the three small gold tables of the lake at `root` (through `lake` when given)."""
    summary = _read(root, SEGMENT_SUMMARY, lake=lake)
    if summary.empty:
        raise ClmError(f"no snapshot published yet under {root}")
    summary["snapshot_date"] = pd.to_datetime(summary["snapshot_date"]).dt.date
    summary = summary.sort_values(["snapshot_date", "stage", "segment"], ignore_index=True)
    latest = max(summary["snapshot_date"])
    matrix = _read(root, SEGMENT_TRANSITION_MATRIX, latest, lake)
    cutpoints = _read(root, RFM_CUTPOINTS, latest, lake).sort_values(
        ["dimension", "score"], ignore_index=True
    )
    clv = None
    if _exists(root, CLV_MODEL, lake):
        clv = _read(root, CLV_MODEL, lake=lake).sort_values("snapshot_date", ignore_index=True)
    kpis = cohorts = None
    if _exists(root, LIFECYCLE_KPIS, lake):  # lakes of earlier releases have neither table
        kpis = _read(root, LIFECYCLE_KPIS, lake=lake)
        kpis = kpis[kpis["scope_type"] == "all"].sort_values("snapshot_date", ignore_index=True)
    if _exists(root, COHORT_RETENTION, lake):
        cohorts = _read(root, COHORT_RETENTION, lake=lake)
    return ReportData(summary, matrix, cutpoints, latest, clv, kpis, cohorts)


def _exists(root: str, spec: TableSpec, lake: Lake | None) -> bool:
    if lake is not None:
        return lake.exists(spec)
    from deltalake import DeltaTable

    return DeltaTable.is_deltatable(posixpath.join(root.rstrip("/"), spec.name))


def clv_section(data: ReportData) -> str:
    """The CLV models per date and the latest holdout comparison (empty without predictions)."""
    if data.clv is None or data.clv.empty:
        return ""

    def num(v, fmt="{:.4g}"):
        return "-" if v is None or pd.isna(v) else fmt.format(v)

    rows = "\n".join(
        "<tr>"
        + f"<td>{r.snapshot_date}</td><td>{html.escape(str(r.status))}</td>"
        + "".join(
            f'<td class="n">{num(getattr(r, k))}</td>' for k in ("r", "alpha", "a", "b", "p", "q", "gamma")
        )
        + f'<td class="n">{num(r.parameter_drift, "{:.1%}")}</td>'
        + f'<td class="n">{num(r.holdout_predicted, "{:,.1f}")} / {num(r.holdout_actual, "{:,.0f}")}</td>'
        + f'<td class="n">{num(r.holdout_relative_error, "{:.1%}")}</td>'
        + f"<td>{html.escape(str(r.reason or ''))}</td></tr>"
        for r in data.clv.itertuples()
    )
    part = (
        "<section><h2>Predicted value: BG/NBD and Gamma-Gamma fits</h2><table><thead><tr><th>date</th>"
        "<th>status</th>"
        + "".join(f'<th class="n">{k}</th>' for k in ("r", "alpha", "a", "b", "p", "q", "gamma"))
        + '<th class="n">drift</th><th class="n">holdout predicted / actual</th><th class="n">error</th>'
        + f"<th>reason</th></tr></thead><tbody>{rows}</tbody></table>"
    )
    evaluated = data.clv[data.clv["holdout_by_frequency"].notna()]
    if not evaluated.empty:
        last = evaluated.iloc[-1]
        buckets = json.loads(last["holdout_by_frequency"])
        body = "".join(
            f'<tr><td>{b["x"]}{"+" if b["x"] == FREQUENCY_CAP else ""}</td><td class="n">{b["customers"]:,}</td>'
            f'<td class="n">{b["predicted"]:,.1f}</td><td class="n">{b["actual"]:,}</td></tr>'
            for b in buckets
        )
        part += (
            f"<h3>Holdout of {last['snapshot_date']}: {int(last['holdout_days'])} days, order days per "
            "repeat purchases in calibration</h3><table><thead><tr><th>repeat purchases</th>"
            '<th class="n">customers</th><th class="n">predicted</th><th class="n">actual</th></tr>'
            f"</thead><tbody>{body}</tbody></table>"
        )
    return part + "</section>"


def _segment_order(data: ReportData) -> list[str]:
    order = {s: i for i, s in enumerate(data.stages())}
    latest = data.summary[data.summary["snapshot_date"] == data.latest]
    return list(latest.assign(o=latest["stage"].map(order)).sort_values(["o", "segment"])["segment"])


def segment_mix_chart(data: ReportData) -> Figure:
    """Share of the population per segment, one stacked bar per snapshot date."""
    segments = _segment_order(data)
    pivot = data.summary.pivot_table(index="snapshot_date", columns="segment", values="share", aggfunc="sum")
    pivot = pivot.reindex(columns=segments).fillna(0.0)
    fig = Figure(figsize=(10, 4.8), layout="constrained")
    ax = fig.subplots()
    labels = [d.isoformat() for d in pivot.index]
    bottom = [0.0] * len(pivot)
    colors = _palette(len(segments))
    for segment, color in zip(segments, colors, strict=True):
        values = list(pivot[segment])
        ax.bar(labels, values, bottom=bottom, label=segment, color=color, width=0.7)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel("share of population")
    ax.set_ylim(0, 1)
    ax.set_title("Segment mix over time")
    ax.tick_params(axis="x", labelrotation=45 if len(labels) > 6 else 0)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    return fig


def transition_heatmap(data: ReportData) -> Figure:
    """Persons moving from each segment (rows, previous date) to each segment (columns) on the latest date."""
    segments = _segment_order(data)
    m = data.matrix.assign(
        from_segment=data.matrix["from_segment"].fillna(NEW),
        to_segment=data.matrix["to_segment"].fillna(LEFT),
    )
    grid = m.pivot_table(index="from_segment", columns="to_segment", values="persons", aggfunc="sum")
    grid = grid.reindex(index=[NEW, *segments], columns=[*segments, LEFT]).fillna(0).astype("int64")
    fig = Figure(figsize=(10, 8.2), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(grid.to_numpy(), cmap="Blues", aspect="auto")
    ax.set_xticks(range(len(grid.columns)), grid.columns, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(grid.index)), grid.index, fontsize=8)
    ax.set_xlabel(f"segment on {data.latest}")
    ax.set_ylabel("segment on the previous snapshot")
    ax.set_title(f"Segment transitions into {data.latest}")
    peak = max(int(grid.to_numpy().max()), 1)
    for (i, j), value in _cells(grid):
        if value:
            color = "white" if value > peak / 2 else "black"
            ax.text(j, i, f"{value:,}", ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(image, ax=ax, shrink=0.6, label="persons")
    return fig


def stage_funnel(data: ReportData) -> Figure:
    """Persons per lifecycle stage on the latest date, in lifecycle order."""
    latest = data.summary[data.summary["snapshot_date"] == data.latest]
    stages = data.stages()
    persons = latest.groupby("stage")["persons"].sum().reindex(stages).fillna(0).astype("int64")
    total = max(int(persons.sum()), 1)
    fig = Figure(figsize=(8, 3.6), layout="constrained")
    ax = fig.subplots()
    ax.barh(stages[::-1], list(persons)[::-1], color=_palette(len(stages))[::-1])
    for y, value in enumerate(list(persons)[::-1]):
        ax.text(value, y, f" {value:,} ({value / total:.0%})", va="center", fontsize=9)
    ax.set_xlabel("persons")
    ax.set_title(f"Lifecycle stages on {data.latest}")
    ax.margins(x=0.2)
    return fig


def rfm_distribution(data: ReportData) -> Figure:
    """Customers per R, F and M score on the latest date."""
    fig = Figure(figsize=(10, 3.4), layout="constrained")
    axes = fig.subplots(1, 3, sharey=True)
    names = {"r": "recency", "f": "frequency", "m": "monetary"}
    for ax, dim in zip(axes, ("r", "f", "m"), strict=True):
        part = data.cutpoints[data.cutpoints["dimension"] == dim]
        ax.bar(part["score"].astype(str), part["customers"], color="#4c72b0")
        ax.set_title(f"{names[dim]} score")
        ax.set_xlabel("score")
    axes[0].set_ylabel("customers")
    fig.suptitle(f"RFM score distribution on {data.latest}")
    return fig


KPI_LINES = {
    "visitor_conversion_rate": "visitor → customer conversion",
    "repeat_purchase_rate": "repeat purchase rate",
    "returning_customer_rate": "returning share of buyers",
    "retention_rate": "retention (window)",
    "churn_rate": "churn (window)",
}


def kpi_trends(data: ReportData) -> Figure:
    """The whole population's rates per date, and its revenue per day."""
    k = data.kpis
    days = [str(d)[:10] for d in k["snapshot_date"]]  # one tick per published date
    fig = Figure(figsize=(10, 5.6), layout="constrained")
    rates, money = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
    for column, label in KPI_LINES.items():
        rates.plot(days, k[column].astype("float64"), marker="o", label=label)
    rates.set_ylim(0, 1)
    rates.set_ylabel("rate")
    rates.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    rates.set_title("Lifecycle KPIs (whole population)")
    money.bar(days, k["revenue_d"].astype("float64"), color="#4c72b0")
    money.set_ylabel("revenue of the day")
    money.tick_params(axis="x", rotation=30)
    return fig


def cohort_heatmap(data: ReportData) -> Figure:
    """Share of each acquisition cohort ordering in each month since its first."""
    c = data.cohorts.assign(share=data.cohorts["active_customers"] / data.cohorts["cohort_size"])
    grid = c.pivot_table(index="cohort_month", columns="months_since_first", values="share", aggfunc="sum")
    fig = Figure(figsize=(10, 0.5 * len(grid) + 2.2), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(grid.to_numpy(dtype="float64"), cmap="Greens", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(grid.columns)), [str(m) for m in grid.columns], fontsize=8)
    ax.set_yticks(range(len(grid.index)), [str(m)[:7] for m in grid.index], fontsize=8)
    ax.set_xlabel("months since the first order")
    ax.set_ylabel("cohort (month of the first order)")
    ax.set_title("Cohort retention: share of each cohort ordering in the month")
    for (i, j), value in _cells(grid.fillna(-1)):
        if value >= 0:
            ax.text(j, i, f"{value:.0%}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, shrink=0.6, label="share of the cohort")
    return fig


def charts(data: ReportData) -> dict[str, Figure]:
    out = {
        "Segment mix over time": segment_mix_chart(data),
        "Transition matrix": transition_heatmap(data),
        "Stage funnel": stage_funnel(data),
        "RFM score distributions": rfm_distribution(data),
    }
    if data.kpis is not None and not data.kpis.empty:
        out["Lifecycle KPIs"] = kpi_trends(data)
    if data.cohorts is not None and not data.cohorts.empty:
        out["Cohort retention"] = cohort_heatmap(data)
    return out


def summary_table(data: ReportData) -> pd.DataFrame:
    """The latest date's segment summary in lifecycle order, as shown in the report."""
    order = {s: i for i, s in enumerate(data.stages())}
    latest = data.summary[data.summary["snapshot_date"] == data.latest]
    latest = latest.assign(o=latest["stage"].map(order)).sort_values(["o", "segment"])
    return latest[
        ["stage", "segment", "segment_name", "persons", "share", "entered", "left", "avg_monetary"]
    ].reset_index(drop=True)


def write_html_report(data: ReportData, out_path: str) -> str:
    """Write the report page to a local file (its folder is created); returns its path."""
    try:
        os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)
        with open(out_path, "w", encoding="utf-8") as handle:
            handle.write(render_html_report(data))
    except OSError as exc:
        raise ClmError(f"cannot write the report to {out_path}: {exc.strerror or exc}") from exc
    return out_path


def render_html_report(data: ReportData) -> str:
    """One self-contained HTML page (charts inlined as PNG data URIs, no scripts, no network)."""
    table = summary_table(data)
    rows = "\n".join(
        "<tr>"
        + "".join(f"<td>{html.escape(str(v))}</td>" for v in (r.stage, r.segment, r.segment_name))
        + "".join(
            f'<td class="n">{html.escape(v)}</td>'
            for v in (
                f"{r.persons:,}",
                f"{r.share:.1%}",
                f"{r.entered:,}",
                f"{r.left:,}",
                "-" if pd.isna(r.avg_monetary) else str(r.avg_monetary),
            )
        )
        + "</tr>"
        for r in table.itertuples()
    )
    figures = "\n".join(
        f'<section><h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" src="{_png(fig)}"></section>'
        for title, fig in charts(data).items()
    )
    population = int(table["persons"].sum())
    dates = ", ".join(d.isoformat() for d in data.dates)
    return _PAGE.format(
        latest=data.latest.isoformat(),
        population=f"{population:,}",
        dates=html.escape(dates),
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        rows=rows,
        figures=figures + clv_section(data),
    )


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _cells(grid: pd.DataFrame):
    values = grid.to_numpy()
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            yield (i, j), int(values[i, j])


def _palette(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return [cmap(i % 20) for i in range(n)]


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>clm-spark report {latest}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 64rem; color: #222; }}
h1 {{ margin-bottom: 0.2rem; }} .meta {{ color: #666; margin-top: 0; }}
table {{ border-collapse: collapse; width: 100%; font-size: 0.9rem; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.3rem 0.5rem; text-align: left; }}
th {{ background: #f3f3f3; }} td.n, th.n {{ text-align: right; }}
img {{ max-width: 100%; }} section {{ margin-top: 2rem; }}
</style></head><body>
<h1>Customer lifecycle report &mdash; {latest}</h1>
<p class="meta">Population {population} persons &middot; snapshot dates: {dates} &middot; generated {generated}</p>
<h2>Segment summary on {latest}</h2>
<table><thead><tr><th>stage</th><th>segment</th><th>name</th><th class="n">persons</th><th class="n">share</th>
<th class="n">entered</th><th class="n">left</th><th class="n">avg monetary</th></tr></thead>
<tbody>
{rows}
</tbody></table>
{figures}
</body></html>
"""
