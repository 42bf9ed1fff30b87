"""Charts rendered on the server as SVG by pygal, inlined into the page.

pygal: a maintained, pure-Python charting library whose output is plain SVG, so a chart needs no
JavaScript, no asset server and no network (the console works offline). Its tooltip script would
load from the internet, so `js=[]`, and the config <script> pygal writes anyway is removed from
the tree: the page's Content-Security-Policy allows no inline script.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pygal
from markupsafe import Markup
from pygal.style import Style

from ledger_service.finance.schemas import Aging, Cohorts, RollForward

SVG_NS = "{http://www.w3.org/2000/svg}"

STYLE = Style(
    background="transparent",
    plot_background="#ffffff",
    foreground="#1f2933",
    foreground_strong="#1f2933",
    foreground_subtle="#7b8794",
    colors=("#2f6fde", "#e0803b", "#8a8f98", "#2f9e6f"),
    font_family="system-ui, sans-serif",
    title_font_size=18,
    legend_font_size=15,
    label_font_size=14,
    major_label_font_size=14,
    no_data_font_size=18,
)


def _svg(chart: pygal.graph.graph.Graph) -> Markup:
    tree = chart.render_tree()
    for parent in tree.iter():
        for child in list(parent):
            if child.tag in (f"{SVG_NS}script", "script"):
                parent.remove(child)
    from xml.etree import ElementTree

    return Markup(ElementTree.tostring(tree, encoding="unicode"))  # noqa: S704 (our own SVG, from numbers)


def _base(
    chart_type: type[pygal.graph.graph.Graph], title: str, labels: Sequence[str]
) -> pygal.graph.graph.Graph:
    chart = chart_type(
        js=[],
        style=STYLE,
        width=600,  # drawn at about this width on a laptop; scaled down on a phone, hence the large fonts
        height=320,
        explicit_size=False,  # scales with its container: the page sets its width
        disable_xml_declaration=True,
        show_minor_x_labels=False,
        x_label_rotation=0,
        legend_at_bottom=True,
        legend_at_bottom_columns=3,
        truncate_legend=-1,
        truncate_label=-1,
        print_values=False,
        margin=8,
    )
    chart.title = title
    chart.x_labels = list(labels)
    chart.x_labels_major_every = max(1, len(labels) // 4)
    return chart


def _day(d: Any) -> str:
    return str(d.strftime("%m-%d"))


def flows_chart(roll: RollForward) -> Markup:
    """Issued, redeemed and expired points per day (the roll-forward's rows)."""
    chart = _base(pygal.Bar, "Points per day", [_day(r.period_start) for r in roll.rows])
    chart.add("issued", [r.issued for r in roll.rows])
    chart.add("redeemed", [r.redeemed for r in roll.rows])
    chart.add("expired", [r.expired for r in roll.rows])
    return _svg(chart)


def liability_chart(roll: RollForward) -> Markup:
    """Liability in cash (major units) at the end of each day."""
    chart = _base(
        pygal.Line,
        f"Liability ({roll.cash_value.currency}) at day end",
        [_day(r.period_start) for r in roll.rows],
    )
    chart.show_legend = False
    chart.add("liability", [r.closing_cash_minor / 100 for r in roll.rows])
    return _svg(chart)


def aging_chart(aging: Aging) -> Markup:
    """Outstanding points by when they expire."""
    chart = _base(pygal.Bar, "Outstanding by expiry", [b.bucket for b in aging.buckets])
    chart.x_labels_major_every = 1
    chart.show_legend = False
    chart.add("points", [b.points for b in aging.buckets])
    return _svg(chart)


def cohort_chart(cohorts: Cohorts) -> Markup:
    """Each issuance month's share redeemed within 1, 3, 6 and 12 months (complete points only)."""
    chart = _base(pygal.Line, "Redeemed within n months of issue (%)", ["1", "3", "6", "12"])
    chart.x_labels_major_every = 1
    chart.no_data_text = "No cohort is old enough for a point of its curve yet"
    for c in cohorts.cohorts[-6:]:
        chart.add(
            c.month.strftime("%Y-%m"),
            [None if (p.share_bps is None or not p.complete) else p.share_bps / 100 for p in c.curve],
        )
    return _svg(chart)
