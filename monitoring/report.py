"""The performance report (``manage.py performance_report``): the KPIs of one scope with its equity and drawdown,
monthly returns, and PnL by pair and by exit reason, as a PNG, a PDF or a self-contained HTML page. Every figure
comes from ``monitoring.selectors``, so the report prints what the dashboard and the API show."""

from __future__ import annotations

import base64
import io
from decimal import Decimal
from html import escape
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: files only

from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from core.formatting import cents
from monitoring.selectors import (
    PerformanceSummary,
    Scope,
    scope_equity,
    scope_monthly_returns,
    scope_performance,
    scope_pnl_by,
)

FORMATS = (".png", ".pdf", ".html")
GREEN, RED, BLUE = "#067647", "#b42318", "#2e5aac"
NONE = "n/a"  # a figure that is not defined (no trade, no capital)


def _pct(value: float | None, digits: int = 2) -> str:
    return NONE if value is None else f"{100 * value:.{digits}f}%"


def _num(value, digits: int = 2) -> str:
    if isinstance(value, Decimal):  # money: to the cent on the exact decimal, as the dashboard (not via a double)
        return format(cents(value), ",f")
    return NONE if value is None else f"{float(value):,.{digits}f}"


def kpi_rows(summary: PerformanceSummary) -> list[tuple[str, str]]:
    """The KPIs as (name, text) rows, formatted for people."""
    profit_factor = "∞" if summary.profit_factor_unbounded else _num(summary.profit_factor)
    return [
        ("Scope", summary.label),
        ("Period (UTC)", f"{summary.start:%Y-%m-%d %H:%M} to {summary.end:%Y-%m-%d %H:%M}"),
        ("Capital", _num(summary.capital)),
        ("Trades", str(summary.total_trades)),
        ("Win rate", _pct(summary.win_rate, 1)),
        ("Profit factor", profit_factor),
        ("Net PnL", _num(summary.realised_pnl)),
        ("Return", _pct(summary.total_return)),
        ("Max drawdown", NONE if summary.max_drawdown is None else f"-{100 * summary.max_drawdown:.2f}%"),
        ("Sharpe", _num(summary.sharpe)),
        ("Sortino", _num(summary.sortino)),
        ("Expectancy", _num(summary.expectancy)),
        ("Average win / loss", f"{_num(summary.average_win)} / {_num(summary.average_loss)}"),
        ("Average holding", NONE if summary.average_holding_hours is None
         else _num(summary.average_holding_hours, 1) + " h"),
        ("Exposure", _pct(summary.exposure, 0)),
        ("Fees", _num(summary.fees)),
        ("Funding", _num(summary.funding)),
    ]


def _bars(axis, labels, values, title: str) -> None:
    axis.set_title(title, fontsize=10)
    if not values:
        axis.text(0.5, 0.5, "no data", ha="center", va="center", transform=axis.transAxes)
        return
    axis.bar(range(len(values)), values, color=[RED if v < 0 else GREEN for v in values])
    axis.set_xticks(range(len(values)), labels, rotation=45, ha="right", fontsize=7)
    axis.axhline(0, color="#667", linewidth=0.6)


def report_figure(scope: Scope) -> tuple[Figure, PerformanceSummary]:
    summary = scope_performance(scope)
    equity = scope_equity(scope)
    months = scope_monthly_returns(scope)
    by_pair = scope_pnl_by(scope, "pair")[:15]
    by_reason = scope_pnl_by(scope, "exit_reason")
    figure = plt.figure(figsize=(11.7, 8.3))  # A4 landscape
    grid = figure.add_gridspec(3, 3, height_ratios=[2, 1, 1.4], hspace=0.75, wspace=0.35)
    text = figure.add_subplot(grid[0, 0])
    text.axis("off")
    text.set_title("Performance", fontsize=12, loc="left")
    for row, (name, value) in enumerate(kpi_rows(summary)):
        text.text(0, 1 - row * 0.06, f"{name}: {value}", fontsize=7.5, transform=text.transAxes, va="top")
    curve = figure.add_subplot(grid[0, 1:])
    steps = range(len(equity))
    curve.step(steps, [p.equity for p in equity], where="post", color=BLUE)
    curve.set_title("Equity (end of each day with a close or a mark)", fontsize=10)
    curve.set_xticks([])
    drawdown = figure.add_subplot(grid[1, 1:], sharex=curve)
    drawdown.fill_between(steps, [-100 * p.drawdown for p in equity], step="post", color=RED, alpha=0.35)
    drawdown.set_title("Drawdown (%)", fontsize=10)
    _bars(figure.add_subplot(grid[1, 0]), [f"{m['year']}-{m['month']:02d}" for m in months],
          [100 * (m["return"] or 0) for m in months], "Monthly return (%)")
    _bars(figure.add_subplot(grid[2, :2]), [r["name"] for r in by_pair], [float(r["pnl"]) for r in by_pair],
          "PnL by pair")
    _bars(figure.add_subplot(grid[2, 2]), [r["name"] for r in by_reason], [float(r["pnl"]) for r in by_reason],
          "PnL by exit reason")
    return figure, summary


def _html(scope: Scope, figure: Figure, summary: PerformanceSummary) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    image = base64.b64encode(buffer.getvalue()).decode()
    kpis = "".join(f"<tr><th>{escape(n)}</th><td>{escape(v)}</td></tr>" for n, v in kpi_rows(summary))
    months = "".join(f"<tr><td>{m['year']}-{m['month']:02d}</td><td>{_pct(m['return'])}</td></tr>"
                     for m in scope_monthly_returns(scope))
    pairs = "".join(f"<tr><td>{escape(r['name'])}</td><td>{r['trades']}</td><td>{_num(r['pnl'])}</td></tr>"
                    for r in scope_pnl_by(scope, "pair"))
    reasons = "".join(f"<tr><td>{escape(r['name'])}</td><td>{r['trades']}</td><td>{_num(r['pnl'])}</td></tr>"
                      for r in scope_pnl_by(scope, "exit_reason"))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Performance report: {escape(summary.label)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem}}table{{border-collapse:collapse;margin:1rem 0}}
th,td{{padding:.2rem .8rem;border-bottom:1px solid #ddd;text-align:left}}img{{max-width:100%}}</style></head>
<body><h1>Performance report</h1><h2>{escape(summary.label)}</h2>
<table>{kpis}</table>
<img alt="equity, drawdown, monthly returns, PnL by pair and exit reason" src="data:image/png;base64,{image}">
<h2>Monthly returns</h2><table><tr><th>Month</th><th>Return</th></tr>{months}</table>
<h2>PnL by pair</h2><table><tr><th>Pair</th><th>Trades</th><th>PnL</th></tr>{pairs}</table>
<h2>PnL by exit reason</h2><table><tr><th>Exit reason</th><th>Trades</th><th>PnL</th></tr>{reasons}</table>
</body></html>
"""


def performance_report_write(*, scope: Scope, out: Path) -> PerformanceSummary:
    """Write the report of ``scope`` to ``out``; its suffix (.png, .pdf, .html) chooses the format."""
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{out}: the report is written as {', '.join(FORMATS)}")
    figure, summary = report_figure(scope)
    try:
        if suffix == ".html":
            out.write_text(_html(scope, figure, summary), encoding="utf-8")
        else:
            figure.savefig(out, format=suffix[1:], dpi=130)
    finally:
        plt.close(figure)
    return summary
