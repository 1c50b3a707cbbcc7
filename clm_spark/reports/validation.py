"""The validation report: one self-contained HTML page per gate, under <lake.root>/_reports/<run_id>/."""

from __future__ import annotations

import html
import json
import posixpath

from clm_spark.quality import ValidationReport
from clm_spark.storage import Storage


def write_validation_report(
    storage: Storage, root: str, run_id: str, name: str, report: ValidationReport
) -> str:
    """A self-contained HTML report under <lake.root>/_reports/<run_id>/; returns its path."""
    path = posixpath.join(root, "_reports", run_id, f"{name}.html")
    rows = "".join(
        f"<tr class='{'ok' if r.success else r.check.severity}'><td>{html.escape(r.check.table)}</td>"
        f"<td>{html.escape(r.check.type)}</td><td>{html.escape(json.dumps(r.check.kwargs, default=str))}</td>"
        f"<td>{r.check.severity}</td><td>{'pass' if r.success else 'FAIL'}</td>"
        f"<td>{'' if r.unexpected is None else r.unexpected}</td></tr>"
        for r in report.results
    )
    doc = (
        "<!doctype html><meta charset='utf-8'><title>clm-spark validation</title>"
        "<style>body{font-family:sans-serif}td,th{padding:4px 8px;border-bottom:1px solid #ddd}"
        ".critical{background:#fdd}.warning{background:#ffd}.ok{background:#efe}</style>"
        f"<h1>Validation {html.escape(name)}</h1><p>run {html.escape(run_id)}: {html.escape(report.summary())}</p>"
        "<table><tr><th>table</th><th>expectation</th><th>arguments</th><th>severity</th><th>result</th>"
        f"<th>unexpected rows</th></tr>{rows}</table>"
    )
    storage.write_text(path, doc)
    return path
