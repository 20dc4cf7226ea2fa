"""The drift report as a self-contained HTML page (no scripts, no downloads)."""

from __future__ import annotations

import html

import numpy as np

from components.monitoring.monitor.drift import FeatureDrift, Histogram
from components.monitoring.monitor.report import DriftReport

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem;color:#1f2328;max-width:1200px}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem}table{border-collapse:collapse;margin:.5rem 0}
td,th{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:left;font-size:.9rem}th{background:#f6f8fa}
.bad{color:#cf222e;font-weight:600}.ok{color:#1a7f37}
.verdict{font-size:1.1rem;padding:.6rem 1rem;border-radius:6px;display:inline-block}
.v-retrain{background:#ffebe9}.v-watching{background:#fff8c5}.v-stable{background:#dafbe1}.v-insufficient{background:#eaeef2}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:1rem}
.card{border:1px solid #d0d7de;border-radius:6px;padding:.6rem}.card h3{margin:.2rem 0;font-size:1rem}
.legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 .8rem;vertical-align:middle}
"""
_REF, _CUR = "#8c959f", "#0969da"
_NO_QUALITY_ISSUE = '<p class="ok">No null-rate growth or unseen values beyond the tolerances.</p>'


def _bars(histogram: Histogram, width: int = 340, height: int = 150) -> str:
    """Reference and current shares per bin as an inline SVG bar chart."""
    n = len(histogram.labels)
    top = max([*histogram.reference, *histogram.current, 1e-9])
    left = 50  # room for the first rotated label
    slot = (width - left - 5) / max(n, 1)
    bar = max(slot / 2 - 1, 1)
    parts = [f'<svg width="{width}" height="{height + 40}" role="img">']
    for i, label in enumerate(histogram.labels):
        x = left + i * slot
        for j, (share, colour) in enumerate(((histogram.reference[i], _REF), (histogram.current[i], _CUR))):
            h = share / top * height
            title = html.escape(f"{label}: {'reference' if j == 0 else 'current'} {share:.1%}")
            parts.append(
                f'<rect x="{x + j * bar:.1f}" y="{height - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{colour}"><title>{title}</title></rect>'
            )
        if n <= 12:
            text = html.escape(label if len(label) <= 14 else label[:13] + "…")
            parts.append(
                f'<text x="{x + slot / 2:.1f}" y="{height + 12}" font-size="9" text-anchor="end" '
                f'transform="rotate(-35 {x + slot / 2:.1f} {height + 12})">{text}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _fmt(value: float | None, spec: str = ".4g") -> str:
    return "–" if value is None or not np.isfinite(value) else format(value, spec)


def render_html(report: DriftReport) -> str:
    """A self-contained page (no scripts, no downloads): verdict, tables and per-feature charts."""
    e = html.escape
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Drift report: {e(report.model_name)} v{e(report.model_version)}</title><style>{_STYLE}</style></head><body>
<h1>Drift report: {e(report.model_name)} v{e(report.model_version)}</h1>
<p>Window <code>{e(report.window)}</code>: {report.current_rows:,} rows against {report.reference_rows:,} reference
rows stored with the model at training; {e(report.created_at)}.</p>
<p class="verdict v-{report.verdict}"><b>{report.verdict}</b>: {e(report.reason)}</p>
<p>{len(report.drifted_features)} of {len(report.features)} features drifted ({report.drift_share:.0%};
the window drifts at {report.thresholds["drift_share"]:.0%}). A feature drifts when its test rejects at
p &lt; {report.thresholds["p_value"]} and its PSI reaches {report.thresholds["psi_min"]}, or its PSI alone
reaches {report.thresholds["psi_threshold"]} beyond what chance gives samples of these sizes.</p>
{_decay_section(report)}{_score_section(report)}
<h2>Features</h2><table><tr><th>feature</th><th>kind</th><th>verdict</th><th>test statistic</th><th>p-value</th>
<th>PSI</th><th>null rate</th><th>mean</th></tr>{_feature_rows(report)}</table>
<h2>Data quality</h2>{_quality_section(report)}
<h2>Distributions</h2><p class="legend"><span style="background:{_REF}"></span>reference (training)
<span style="background:{_CUR}"></span>current window</p><div class="grid">{_feature_cards(report)}</div>
<h2>Recent windows against this version</h2><table><tr><th>at</th><th>window</th><th>drift</th><th>decay</th>
<th>rows</th></tr>{_history_rows(report)}</table>
</body></html>
"""


def _by_drift(features: list[FeatureDrift]) -> list[FeatureDrift]:
    """Drifted features first, each group by falling PSI."""
    return sorted(features, key=lambda f: (not f.drifted, -f.psi))


def _feature_rows(report: DriftReport) -> str:
    """One table row per feature: its verdict, test, PSI, null rates and means."""
    e = html.escape
    rows = []
    for f in _by_drift(report.features):
        cls = "bad" if f.drifted else "ok"
        rows.append(
            f"<tr><td>{e(f.name)}</td><td>{f.kind}</td><td class='{cls}'>{'drifted' if f.drifted else 'stable'}</td>"
            f"<td>{f.test} {_fmt(f.statistic)}</td><td>{_fmt(f.p_value, '.3g')}</td><td>{_fmt(f.psi, '.3f')}</td>"
            f"<td>{f.reference_null_rate:.1%} → {f.current_null_rate:.1%}</td>"
            f"<td>{_fmt(f.reference_mean)} → {_fmt(f.current_mean)}</td></tr>"
        )
    return "".join(rows)


def _quality_section(report: DriftReport) -> str:
    e = html.escape
    quality = "".join(f"<li><b>{e(q.column)}</b> ({q.kind}): {e(q.detail)}</li>" for q in report.quality)
    return f"<ul>{quality}</ul>" if quality else _NO_QUALITY_ISSUE


def _decay_section(report: DriftReport) -> str:
    """The metric on labelled rows against training's, and the estimate without labels, when there are."""
    rows = []
    if report.decay:
        d = report.decay
        accuracy = f"; accuracy {d.accuracy:.4f}" if d.accuracy is not None else ""
        rows.append((d, f"on {d.rows} labelled rows", accuracy))
    if report.estimated:
        rows.append((report.estimated, f"estimated from the probabilities of {report.estimated.rows} rows (CBPE)", ""))
    paragraphs = [
        f"<p class='{'bad' if d.decayed else 'ok'}'>{html.escape(d.metric)} {what}: {d.current:.4f} "
        f"vs {d.baseline:.4f} held out at training (drop {d.drop:+.4f}; decayed beyond "
        f"{max(report.thresholds['decay_tolerance'], d.noise):.4f}: the tolerance or the noise, "
        f"whichever is larger){extra}</p>"
        for d, what, extra in rows
    ]
    return f"<h2>Performance</h2>{''.join(paragraphs)}" if paragraphs else ""


def _score_section(report: DriftReport) -> str:
    """The distance of the model's scores, and their histograms, when the window had scores."""
    if not report.score:
        return ""
    s = report.score
    cls = "bad" if s.drifted else "ok"
    return (
        f"<h2>Model scores</h2><p class='{cls}'>Jensen-Shannon distance {s.js_distance:.3f} "
        f"(threshold {report.thresholds['score_js_threshold']}); mean score {s.reference_mean:.3f} → "
        f"{s.current_mean:.3f}</p>{_bars(s.histogram, 720, 160)}"
        "<p><small>score from 0 (left) to 1 (right), 20 bins; hover a bar for its share</small></p>"
    )


def _feature_cards(report: DriftReport) -> str:
    """A chart of each feature's reference and current shares per bin."""
    return "".join(
        f"<div class='card'><h3 class='{'bad' if f.drifted else ''}'>{html.escape(f.name)}</h3>"
        f"<div>PSI {_fmt(f.psi, '.3f')}, p {_fmt(f.p_value, '.3g')}</div>{_bars(f.histogram)}</div>"
        for f in _by_drift(report.features)
        if f.histogram
    )


def _history_rows(report: DriftReport) -> str:
    e = html.escape
    return "".join(
        f"<tr><td>{e(w['at'])}</td><td>{e(w['window'])}</td><td>{'yes' if w['drift'] else 'no'}</td>"
        f"<td>{'–' if w['decay'] is None else 'yes' if w['decay'] else 'no'}</td><td>{w['rows']}</td></tr>"
        for w in report.history
    )
