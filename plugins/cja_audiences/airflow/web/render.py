"""HTML for the dashboard: Jinja templates shipped with the package, and inline SVG charts.

Everything is rendered on the server (no CDN, no build step); ``static/dashboard.js`` only
turns UTC timestamps into the viewer's time zone and sorts and filters tables.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, Undefined, select_autoescape
from markupsafe import Markup, escape

HERE = Path(__file__).parent
STATUS_LABELS = {
    "published": "Published",
    "dry_run": "Dry run",
    "skipped": "Skipped",
    "blocked": "Blocked",
    "failed": "Failed",
    "running": "Running",
    "never": "Never run",
    "invalid": "Spec invalid",
}
VERDICT_LABELS = {"pass": "Pass", "warn": "Warn", "block": "Block"}


def _missing(value: Any) -> bool:
    return value is None or isinstance(value, Undefined) or not isinstance(value, int | float)


def number(value: Any) -> str:
    """12,345 (a dash when a run did not record the figure)."""
    if _missing(value):
        return "–"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def compact(value: Any) -> str:
    if _missing(value):
        return "–"
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.1f}".rstrip("0").rstrip(".") + suffix
    return str(int(value))


def moment(value: datetime | str | None, empty: str = "–") -> Markup:
    """A <time> the script shows in the viewer's zone; the text is UTC until it runs."""
    if not value:
        return Markup(f'<span class="muted">{escape(empty)}</span>')
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    iso = value.isoformat()
    text = value.strftime("%Y-%m-%d %H:%M UTC")
    return Markup(f'<time datetime="{escape(iso)}" title="{escape(text)}">{escape(text)}</time>')


def status_chip(status: str | None) -> Markup:
    status = status or "never"
    label = STATUS_LABELS.get(status, status.replace("_", " ").title())
    return Markup(f'<span class="chip s-{escape(status)}">{escape(label)}</span>')


def verdict_chip(verdict: str | None) -> Markup:
    if not verdict:
        return Markup('<span class="muted">–</span>')
    label = VERDICT_LABELS.get(verdict, verdict)
    return Markup(f'<span class="chip v-{escape(verdict)}">{escape(label)}</span>')


def _scale(values: list[float], low: float, high: float) -> list[float]:
    top, bottom = max(values), min(values)
    span = (top - bottom) or 1
    return [high - (v - bottom) / span * (high - low) for v in values]


def sparkline(values: list[int], width: int = 120, height: int = 28) -> Markup:
    """The committed size over time, as a small trend line."""
    if len(values) < 2:
        return Markup('<span class="muted" title="a trend needs two publishes">—</span>')
    step = width / (len(values) - 1)
    ys = _scale([float(v) for v in values], 3, height - 3)
    points = " ".join(f"{i * step:.1f},{y:.1f}" for i, y in enumerate(ys))
    trend = "up" if values[-1] > values[0] else "down" if values[-1] < values[0] else "flat"
    return Markup(
        f'<svg class="spark {trend}" width="{width}" height="{height}" viewBox="0 0 {width} '
        f'{height}" role="img" aria-label="size trend: {compact(values[0])} to '
        f'{compact(values[-1])}"><polyline points="{points}"/>'
        f'<circle cx="{(len(values) - 1) * step:.1f}" cy="{ys[-1]:.1f}" r="2.5"/></svg>'
    )


def size_chart(runs: list[Any], width: int = 720, height: int = 220) -> Markup:
    """Size per published run (line) with entered above and exited below the axis (bars)."""
    points = [r for r in runs if r.size is not None and r.status in ("published", "dry_run")]
    if not points:
        return Markup('<p class="muted">No sized runs yet: run a dry run to see the size.</p>')
    pad_l, pad_r, pad_t, pad_b = 56, 12, 12, 28
    inner_w, inner_h = width - pad_l - pad_r, height - pad_t - pad_b
    sizes = [float(r.size) for r in points]
    top = max(sizes) * 1.1 or 1
    step = inner_w / max(len(points) - 1, 1)

    def y(v: float) -> float:
        return pad_t + inner_h - v / top * inner_h

    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="audience size over {len(points)} runs">'
    ]
    for frac in (0, 0.5, 1):
        gy = y(top * frac / 1.1 if frac else 0)
        parts.append(
            f'<line class="grid" x1="{pad_l}" x2="{width - pad_r}" y1="{gy:.1f}" y2="{gy:.1f}"/>'
        )
        parts.append(
            f'<text class="axis" x="{pad_l - 6}" y="{gy + 4:.1f}" text-anchor="end">'
            f"{compact(top * frac / 1.1 if frac else 0)}</text>"
        )
    change_top = max([(r.entered or 0) for r in points] + [(r.exited or 0) for r in points] + [1])
    bar_h = inner_h * 0.25
    base = pad_t + inner_h
    line = []
    for i, run in enumerate(points):
        x = pad_l + i * step
        line.append(f"{x:.1f},{y(run.size):.1f}")
        width_bar = max(min(step * 0.35, 10), 2)
        for value, cls, sign in ((run.entered, "in", -1), (run.exited, "out", 1)):
            if value:
                h = value / change_top * bar_h
                top_y = base - h if sign < 0 else base
                parts.append(
                    f'<rect class="bar {cls}" x="{x - width_bar / 2:.1f}" y="{top_y:.1f}" '
                    f'width="{width_bar:.1f}" height="{h:.1f}"/>'
                )
    parts.append(f'<polyline class="line" points="{" ".join(line)}"/>')
    for i, run in enumerate(points):
        x = pad_l + i * step
        label = (
            f"{run.created_at:%Y-%m-%d %H:%M} UTC · {number(run.size)} members · "
            f"+{number(run.entered)} / −{number(run.exited)} · {STATUS_LABELS[run.status]}"
        )
        cls = "dot dry" if run.status == "dry_run" else "dot"
        parts.append(
            f'<circle class="{cls}" cx="{x:.1f}" cy="{y(run.size):.1f}" r="3.5">'
            f"<title>{escape(label)}</title></circle>"
        )
    first, last = points[0].created_at, points[-1].created_at
    parts.append(f'<text class="axis" x="{pad_l}" y="{height - 8}">{first:%b %d}</text>')
    parts.append(
        f'<text class="axis" x="{width - pad_r}" y="{height - 8}" text-anchor="end">{last:%b %d}</text>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))


def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        number=number,
        compact=compact,
        moment=moment,
        status=status_chip,
        verdict=verdict_chip,
        sparkline=sparkline,
    )
    env.globals.update(size_chart=size_chart, STATUS_LABELS=STATUS_LABELS)
    return env
