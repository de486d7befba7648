"""The status page as HTML: plain data in, one self-contained page out (inline SVG, no scripts).

Pure: no Kafka, no HTTP. ``streams/status/server.py`` gathers the data from the topics and
the workers' metrics and serves what :func:`page` returns. Numbers the page shows are also
in ``data-*`` attributes, so a browser test can check them.
"""

from __future__ import annotations

import difflib
import html
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from settle.schemas.models import ModelPublished
from settle.schemas.scored import ScoredExample

COLORS = {"keep": "#2e7d32", "too_easy": "#90a4ae", "too_hard": "#c62828", "unchanged": "#cfd8dc", "invalid": "#6d4c41"}
BINS = 20


@dataclass
class StatusData:
    scored: Sequence[ScoredExample] = ()
    #: scored examples seen in total (``scored`` keeps only the most recent)
    scored_total: int = 0
    decisions: Counter = field(default_factory=Counter)
    models: Sequence[ModelPublished] = ()
    #: {partition: open regions} and {(group, topic, partition): lag} from the workers' metrics
    open_regions: dict[str, float] = field(default_factory=dict)
    lag: dict[tuple[str, str, str], float] = field(default_factory=dict)
    metrics_errors: list[str] = field(default_factory=list)
    #: why the figures may be stale or incomplete (broker unreachable, topic missing, undecodable records)
    broker_errors: list[str] = field(default_factory=list)
    generated_at: float = 0.0


def statistic(s: ScoredExample) -> float | None:
    """The number the band decided on: solve rate, or median normalised distance."""
    d = s.decision
    return d.solve_rate if d.policy.mode == "solve_rate" else d.median


def thresholds(s: ScoredExample) -> tuple[float, float]:
    p = s.decision.policy
    return (p.keep_min_solve_rate, p.keep_max_solve_rate) if p.mode == "solve_rate" else (p.keep_min_median,
                                                                                          p.keep_max_median)


def _e(x: object) -> str:
    return html.escape(str(x))


def histogram_svg(scored: Sequence[ScoredExample], width: int = 760, height: int = 240) -> str:
    """Stacked histogram of the band statistic by decision, with the policy's thresholds drawn."""
    points = [(statistic(s), s.decision.decision) for s in scored]
    points = [(v, d) for v, d in points if v is not None]
    if not points:
        return '<p class="empty">no scored example with samples yet</p>'
    mode = scored[-1].decision.policy.mode
    lo_t, hi_t = thresholds(scored[-1])
    top = 1.0 if mode == "solve_rate" else max(1.5, hi_t * 1.25)
    counts: dict[int, Counter] = defaultdict(Counter)
    for v, d in points:
        counts[min(BINS - 1, max(0, int(min(v, top) / top * BINS)))][d] += 1
    tallest = max(sum(c.values()) for c in counts.values())
    pad, bar_w = 40, (width - 60) / BINS
    parts = [f'<svg id="band-histogram" width="{width}" height="{height + 40}" data-mode="{mode}" '
             f'data-count="{len(points)}" xmlns="http://www.w3.org/2000/svg">']
    for b in range(BINS):
        y = height
        for d in ("keep", "too_easy", "too_hard", "unchanged", "invalid"):
            n = counts.get(b, Counter())[d]
            if not n:
                continue
            h = n / tallest * (height - 20)
            y -= h
            parts.append(f'<rect class="bar" data-decision="{d}" data-count="{n}" data-bin="{b}" '
                         f'x="{pad + b * bar_w:.1f}" y="{y:.1f}" width="{bar_w - 2:.1f}" height="{h:.1f}" '
                         f'fill="{COLORS[d]}"><title>{d}: {n}</title></rect>')
    for name, t in (("keep_min", lo_t), ("keep_max", hi_t)):
        x = pad + min(t, top) / top * BINS * bar_w
        parts.append(f'<line class="threshold" data-name="{name}" data-value="{t:g}" x1="{x:.1f}" x2="{x:.1f}" '
                     f'y1="0" y2="{height}" stroke="#1565c0" stroke-width="2" stroke-dasharray="6 3"/>'
                     f'<text x="{x + 3:.1f}" y="12" fill="#1565c0" font-size="12">{name} {t:g}</text>')
    parts.append(f'<line x1="{pad}" x2="{width - 20}" y1="{height}" y2="{height}" stroke="#333"/>')
    for i in range(0, BINS + 1, 4):
        x = pad + i * bar_w
        parts.append(f'<text x="{x:.1f}" y="{height + 16}" font-size="11" text-anchor="middle">{top * i / BINS:.2f}</text>')
    label = "solve rate" if mode == "solve_rate" else "median normalised distance"
    parts.append(f'<text x="{width / 2:.0f}" y="{height + 34}" font-size="12" text-anchor="middle">{label}</text>')
    legend = "".join(f'<span class="swatch" style="background:{c}"></span>{d} ({sum(1 for _, x in points if x == d)}) '
                     for d, c in COLORS.items())
    return "".join(parts) + "</svg>" + f'<div class="legend">{legend}</div>'


def diff_html(a: str, b: str) -> str:
    """``a`` turned into ``b``, character by character: deletions struck, insertions marked."""
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(_e(a[i1:i2]))
        if op in ("delete", "replace"):
            out.append(f"<del>{_e(a[i1:i2])}</del>")
        if op in ("insert", "replace"):
            out.append(f"<ins>{_e(b[j1:j2])}</ins>")
    return "".join(out)


def decisions_html(scored: Sequence[ScoredExample], n: int = 8, samples: int = 3) -> str:
    rows = []
    # partitions interleave on the way in: the most recent by settle time, newest first
    for s in sorted(scored, key=lambda s: (s.example.settled_at_ms, s.id))[-n:][::-1]:
        ex, d = s.example, s.decision
        cells = [f'<td class="text"><div class="label">user: original &rarr; settled</div>'
                 f'<pre>{diff_html(ex.original_text, ex.settled_text)}</pre></td>']
        for i, text in enumerate(s.samples[:samples]):
            dist = s.normalised[i] if i < len(s.normalised) else None
            label = f"sample {i + 1} &rarr; settled, normalised {dist:.2f}" if dist is not None else f"sample {i + 1}"
            cells.append(f'<td class="text"><div class="label">{label}</div><pre>{diff_html(text, ex.settled_text)}</pre></td>')
        rows.append(f'<tr class="decision" data-id="{_e(s.id)}" data-decision="{d.decision}">'
                    f'<td><b style="color:{COLORS.get(d.decision, "#000")}">{d.decision}</b><br>{_e(ex.path)}<br>'
                    f'<small>{_e(d.reason)}<br>{_e(s.model_name)} {_e(s.model_version)}, '
                    f'{d.samples_used} samples</small></td>{"".join(cells)}</tr>')
    if not rows:
        return '<p class="empty">no decisions yet</p>'
    return f'<table id="decisions"><tbody>{"".join(rows)}</tbody></table>'


def partitions_html(data: StatusData) -> str:
    rows = []
    for p in sorted(data.open_regions, key=lambda x: int(x) if x.isdigit() else x):
        rows.append(f'<tr class="open-regions" data-partition="{_e(p)}" data-value="{data.open_regions[p]:g}">'
                    f'<td>edits/{_e(p)}</td><td>{data.open_regions[p]:g}</td></tr>')
    lag_rows = []
    tallest = max(data.lag.values(), default=0) or 1
    for (group, topic, p), v in sorted(data.lag.items(), key=lambda kv: (kv[0][0], kv[0][1], int(kv[0][2]))):
        lag_rows.append(f'<tr class="lag" data-group="{_e(group)}" data-partition="{_e(p)}" data-value="{v:g}">'
                        f'<td>{_e(group)}</td><td>{_e(topic)}/{_e(p)}</td><td>{v:g}</td>'
                        f'<td><svg width="200" height="12"><rect width="{v / tallest * 200:.1f}" height="12" '
                        f'fill="#ef6c00"/></svg></td></tr>')
    errors = "".join(f'<p class="error">{_e(e)}</p>' for e in data.metrics_errors)
    return (f'<div><h3>Open regions</h3><table id="open-regions"><tr><th>partition</th><th>open</th></tr>'
            f'{"".join(rows)}</table></div>'
            f'<div><h3>Consumer lag</h3><table id="lag"><tr><th>group</th><th>partition</th><th>records behind</th>'
            f'<th></th></tr>{"".join(lag_rows)}</table>{errors}</div>')


def models_html(models: Sequence[ModelPublished]) -> str:
    rows = []
    for m in list(models)[::-1]:
        metric = " ".join(f"{k} {v:.3g}" for k, v in sorted(m.metrics.items()) if k != "count")
        parent = " ".join(f"{k} {v:.3g}" for k, v in sorted(m.parent_metrics.items()) if k != "count")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(m.created_at_ms / 1000))
        rows.append(f'<tr class="model" data-version="{_e(m.version)}" data-status="{_e(m.status)}">'
                    f'<td>{_e(m.name)} {_e(m.version)}</td><td class="{_e(m.status)}">{_e(m.status)}</td>'
                    f'<td>{_e(m.parent_version or "-")}</td><td>{when}</td><td class="reason">{_e(m.reason)}</td>'
                    f'<td><small>{_e(metric) or "-"}<br>parent: {_e(parent) or "-"}</small></td></tr>')
    if not rows:
        return '<p class="empty">nothing published yet</p>'
    return ('<table id="models"><tr><th>model</th><th>verdict</th><th>parent</th><th>when (UTC)</th><th>reason</th>'
            f'<th>evaluation</th></tr>{"".join(rows)}</table>')


def kept_rate_series(scored: Sequence[ScoredExample], bucket_ms: int = 60_000) -> dict[str, list[tuple[int, float]]]:
    """{production model: [(bucket start, mean kept rate)]} over the examples' settle times."""
    acc: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for s in scored:
        r = s.example.production_kept_rate
        if r is not None:
            acc[s.example.production_model or "unknown"][s.example.settled_at_ms // bucket_ms * bucket_ms].append(
                r.kept_rate)
    return {m: [(t, sum(v) / len(v)) for t, v in sorted(b.items())] for m, b in sorted(acc.items())}


def kept_rate_svg(series: dict[str, list[tuple[int, float]]], width: int = 760, height: int = 200) -> str:
    points = [t for s in series.values() for t, _ in s]
    if not points:
        return '<p class="empty">no production prediction in the recent examples</p>'
    t0, t1 = min(points), max(points)
    span = max(1, t1 - t0)
    palette = ["#1565c0", "#ef6c00", "#2e7d32", "#6a1b9a", "#00838f", "#ad1457"]
    parts = [f'<svg id="kept-rate" width="{width}" height="{height + 30}" xmlns="http://www.w3.org/2000/svg">',
             f'<line x1="40" x2="{width - 10}" y1="{height}" y2="{height}" stroke="#333"/>']
    for y in (0.0, 0.5, 1.0):
        yy = height - y * (height - 10)
        parts.append(f'<text x="4" y="{yy + 4:.1f}" font-size="11">{y:.1f}</text>'
                     f'<line x1="40" x2="{width - 10}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#eee"/>')
    legend = []
    for i, (model, s) in enumerate(series.items()):
        color = palette[i % len(palette)]
        xy = [(40 + (t - t0) / span * (width - 60), height - v * (height - 10)) for t, v in s]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
        parts.append(f'<polyline class="kept-rate" data-model="{_e(model)}" data-points="{len(s)}" points="{path}" '
                     f'fill="none" stroke="{color}" stroke-width="2"/>')
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>' for x, y in xy]
        mean = sum(v for _, v in s) / len(s)
        legend.append(f'<span class="swatch" style="background:{color}"></span>{_e(model)} (mean {mean:.2f}) ')
    span_min = (t1 - t0) / 60_000
    parts.append(f'<text x="{width / 2:.0f}" y="{height + 24}" font-size="12" text-anchor="middle">'
                 f'settle time, {span_min:.0f} min span (per-minute means)</text></svg>')
    return "".join(parts) + f'<div class="legend">{"".join(legend)}</div>'


STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:20px;color:#222;max-width:1400px}
h1{margin:0 0 4px}h2{margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #ddd;padding:4px 8px;vertical-align:top;text-align:left}
pre{margin:0;white-space:pre-wrap;font:12px/1.35 ui-monospace,monospace;max-width:330px;max-height:130px;overflow:auto}
del{background:#ffcdd2;text-decoration:line-through}ins{background:#c8e6c9;text-decoration:none}
.label{font-size:11px;color:#666}.swatch{display:inline-block;width:12px;height:12px;margin:0 4px 0 10px}
.rejected{color:#c62828;font-weight:bold}.published{color:#2e7d32;font-weight:bold}.error{color:#c62828}
.banner{border:2px solid #c62828;background:#ffebee;border-radius:6px;padding:4px 14px;margin:8px 0}
.cards{display:flex;gap:16px}.row{display:flex;gap:32px;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:6px;padding:8px 14px}.card b{font-size:20px;display:block}
"""


def page(data: StatusData, topic_prefix: str = "") -> str:
    """The whole status page."""
    live = next((m for m in reversed(list(data.models)) if m.status == "published"), None)
    kept = data.decisions.get("keep", 0)
    cards = [("scored", data.scored_total, "scored-total"), ("kept", kept, "kept-total"),
             ("open regions", f"{sum(data.open_regions.values()):g}", "open-total"),
             ("lag", f"{sum(data.lag.values()):g}", "lag-total"),
             ("model in use", f"{live.name} {live.version}" if live else "-", "model-live")]
    cards_html = "".join(f'<div class="card" id="{i}"><b>{_e(v)}</b>{_e(k)}</div>' for k, v, i in cards)
    generated = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(data.generated_at or time.time()))
    banner = ""
    if data.broker_errors:  # a dead broker must not look like an empty deployment
        lines = "".join(f'<p class="error">{_e(e)}</p>' for e in data.broker_errors)
        banner = (f'<div class="banner" id="broker-errors" data-count="{len(data.broker_errors)}">'
                  f'<b>Not everything below is current</b>{lines}</div>')
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>settle status</title>
<meta http-equiv="refresh" content="30"><style>{STYLE}</style></head><body>
<h1>settle status</h1><div class="label">topics {_e(topic_prefix)}*, generated {generated}</div>{banner}
<div class="cards">{cards_html}</div>
<div class="row"><div><h2>Band (last {len(data.scored)} scored)</h2>{histogram_svg(data.scored, width=640)}</div>
<div><h2>Production kept rate over time</h2>{kept_rate_svg(kept_rate_series(data.scored), width=560)}</div></div>
<h2>Model versions and the gate's verdicts</h2>{models_html(data.models)}
<h2>Partitions</h2><div class="row">{partitions_html(data)}</div>
<h2>Recent decisions</h2>{decisions_html(data.scored)}
</body></html>"""
