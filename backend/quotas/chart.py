"""Draw small stacked bar charts as inline SVG, so the admin needs no chart library or CDN."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

COLOURS = ["#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#06b6d4", "#84cc16", "#ec4899"]
WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 720, 220, 70, 24, 10


def colour_for(index: int) -> str:
    return COLOURS[index % len(COLOURS)]


def stacked_bars(
    days: list[dt.date], series: dict[str, dict[dt.date, Decimal | int]], label: str, unit: str = ""
) -> SafeString:
    """Return an SVG with one bar per day, stacked by series (model), and an axis with the largest total."""
    totals = {day: sum((values.get(day, 0) for values in series.values()), 0) for day in days}
    top = max(totals.values(), default=0) or 1
    plot_w, plot_h = WIDTH - LEFT - 10, HEIGHT - BOTTOM - TOP
    slot = plot_w / max(len(days), 1)
    bars = []
    for day_index, day in enumerate(days):
        y = TOP + plot_h
        for index, (name, values) in enumerate(series.items()):
            value = values.get(day, 0)
            if not value:
                continue
            height = float(value) / float(top) * plot_h
            y -= height
            bars.append(
                format_html(
                    '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{} {}: {}{}</title></rect>',
                    f"{LEFT + day_index * slot + 1:.1f}",
                    f"{y:.1f}",
                    f"{max(slot - 2, 1):.1f}",
                    f"{height:.1f}",
                    colour_for(index),
                    day.isoformat(),
                    name,
                    value,
                    unit,
                )
            )
    ticks = format_html_join(
        "",
        '<text x="{}" y="{}" font-size="10" text-anchor="middle">{}</text>',
        (
            (f"{LEFT + i * slot + slot / 2:.1f}", HEIGHT - 8, day.strftime("%d %b"))
            for i, day in enumerate(days)
            if i % 5 == 0 or i == len(days) - 1
        ),
    )
    axis = format_html(
        '<line x1="{l}" y1="{t}" x2="{l}" y2="{b}" stroke="#999"/>'
        '<line x1="{l}" y1="{b}" x2="{r}" y2="{b}" stroke="#999"/>'
        '<text x="{lx}" y="{ty}" font-size="10" text-anchor="end">{top}{unit}</text>'
        '<text x="{lx}" y="{b}" font-size="10" text-anchor="end">0</text>',
        l=LEFT,
        t=TOP,
        b=TOP + plot_h,
        r=WIDTH - 10,
        lx=LEFT - 4,
        ty=TOP + 8,
        top=top if top != 1 or totals else 0,
        unit=unit,
    )
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" width="100%" role="img" aria-label="{}">'
        "{}{}{}</svg>",
        WIDTH,
        HEIGHT,
        label,
        axis,
        mark_safe("".join(bars)),  # noqa: S308 - each bar was built with format_html
        ticks,
    )
