"""Self-contained HTML reports with embedded figures, and their machine-readable ``metrics.json``.

Any task can write one: build :class:`Section` objects (text, a table of numbers, matplotlib
figures, made with the helpers here or by hand) and call :func:`write_report`.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ecomodal.io.atomic import atomic_path

REPORT_NAME = "report.html"
METRICS_NAME = "metrics.json"

__all__ = [
    "METRICS_NAME",
    "REPORT_NAME",
    "Section",
    "bar_chart",
    "distributions",
    "heatmap",
    "reliability_diagram",
    "to_jsonable",
    "write_report",
]


@dataclass
class Section:
    """One part of a report: a heading, paragraphs, an optional table and figures.

    ``table`` is a list of rows (dicts with the same keys, the columns); ``figures`` are
    matplotlib figures (embedded as PNG and closed when written).
    """

    title: str
    text: str | Sequence[str] = ""
    table: Sequence[Mapping[str, Any]] | None = None
    figures: list[Any] = field(default_factory=list)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_chart(
    values: Mapping[str, Mapping[str, float]],
    *,
    title: str,
    ylabel: str,
    xlabel: str = "",
    annotations: Mapping[str, str] | None = None,
) -> Any:
    """Grouped bars: ``values[series][group]`` (e.g. model -> taxon group -> accuracy).

    ``annotations[group]`` (e.g. ``"n=120, 40 species"``) is printed under the group's name.
    """
    plt = _pyplot()
    series = list(values)
    groups = sorted({g for v in values.values() for g in v})
    width_in = max(6.0, 0.5 * len(groups) * max(1, len(series)) + (3.0 if len(series) > 1 else 0))
    fig, ax = plt.subplots(figsize=(min(width_in, 16.0), 4.2))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for i, name in enumerate(series):
        heights = [values[name].get(g, np.nan) for g in groups]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, heights, width, label=name)
    labels = [
        g + (f"\n{annotations[g]}" if annotations and g in annotations else "") for g in groups
    ]
    ax.set_xticks(x, labels, rotation=0 if len(groups) < 8 else 45, ha="center", fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    if xlabel:
        ax.set_xlabel(xlabel)
    if len(series) > 1:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def heatmap(
    matrix: np.ndarray,
    rows: Sequence[str],
    cols: Sequence[str],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    colorbar: str,
    fmt: str = "{:.2f}",
) -> Any:
    """A labelled heat map with each cell's value written in it (NaN cells left blank)."""
    plt = _pyplot()
    matrix = np.asarray(matrix, dtype=float)
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(cols), 1.0 + 0.7 * len(rows)))
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap="viridis")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for (i, j), value in np.ndenumerate(matrix):
        if np.isfinite(value):
            ax.text(j, i, fmt.format(value), ha="center", va="center", fontsize=7, color="w")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(image, ax=ax, label=colorbar)
    fig.tight_layout()
    return fig


def distributions(
    samples: Mapping[str, Sequence[float]], *, title: str, xlabel: str, ylabel: str
) -> Any:
    """Horizontal box plots, one per named sample (e.g. sigma_l1 per visible set)."""
    plt = _pyplot()
    names = list(samples)
    fig, ax = plt.subplots(figsize=(7, 1.0 + 0.3 * len(names)))
    ax.boxplot([list(samples[n]) for n in names], orientation="horizontal", showfliers=False)
    ax.set_yticks(range(1, len(names) + 1), names, fontsize=7)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def reliability_diagram(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str,
    xlabel: str = "mean expected error",
    ylabel: str = "mean observed error",
) -> Any:
    """Expected against observed values per bin (e.g. by decile of expected error), one line per
    named curve ``(expected, observed)``, with the diagonal a perfect predictor would follow."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    values = [v for x, y in curves.values() for v in (*x, *y) if np.isfinite(v)]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    ax.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1, label="ideal")
    for name, (x, y) in curves.items():
        ax.plot(list(x), list(y), marker="o", markersize=3, label=name)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _figure_html(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    _pyplot().close(figure)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return html.escape(str(value))


def _table_html(rows: Sequence[Mapping[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(row.get(c, ''))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def to_jsonable(value: Any) -> Any:
    """``value`` with numpy scalars/arrays, tuples, paths and non-finite floats made JSON-safe
    (NaN and inf become null)."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:0.85em;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}
img{max-width:100%;display:block;margin:1em 0}pre{background:#f6f6f6;padding:0.8em;font-size:0.8em}
"""


def write_report(
    out_dir: str | Path,
    *,
    title: str,
    sections: Sequence[Section],
    metrics: Mapping[str, Any],
    config: Mapping[str, Any] | None = None,
    fingerprint: str | None = None,
    seed: int | None = None,
) -> dict[str, Path]:
    """Write ``report.html`` (self-contained: styles inline, figures as base64 PNG) and
    ``metrics.json`` (``{"title", "created", "config", "data_fingerprint", "seed", "metrics"}``)
    into ``out_dir``, each atomically. Returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = to_jsonable(
        {
            "title": title,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "config": dict(config or {}),
            "data_fingerprint": fingerprint,
            "seed": seed,
            "metrics": metrics,
        }
    )
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<p>Data fingerprint: <code>{html.escape(str(fingerprint))}</code>; seed: {seed}; "
        f"created {payload['created']}.</p>",
    ]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        texts = [section.text] if isinstance(section.text, str) else list(section.text)
        parts += [f"<p>{html.escape(t)}</p>" for t in texts if t]
        if section.table:
            parts.append(_table_html(section.table))
        parts += [_figure_html(f) for f in section.figures]
    parts.append("<h2>Configuration</h2><pre>")
    parts.append(html.escape(json.dumps(payload["config"], indent=2)))
    parts.append("</pre></body></html>")
    paths = {"report": out / REPORT_NAME, "metrics": out / METRICS_NAME}
    with atomic_path(paths["metrics"]) as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
    with atomic_path(paths["report"]) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return paths
