"""Reads of monitoring: performance summaries and daily PnL, for the dashboard and the API."""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import QuerySet, Sum

from execution.models import ExchangeAccount, PairTrade
from pairs.quant.performance import max_drawdown, trade_metrics
from risk.models import DailyPnlSnapshot


@dataclass(frozen=True)
class PerformanceSummary:
    total_trades: int
    win_rate: float | None
    profit_factor: float | None
    realised_pnl: Decimal
    fees: Decimal
    funding: Decimal
    capital: Decimal
    total_return: float | None
    max_drawdown: float | None

    @property
    def total_return_pct(self) -> float | None:
        return None if self.total_return is None else 100 * self.total_return

    @property
    def max_drawdown_pct(self) -> float | None:
        return None if self.max_drawdown is None else 100 * self.max_drawdown

    @property
    def profit_factor_unbounded(self) -> bool:
        """True when there were wins and no losing trade (profit factor +inf)."""
        return self.profit_factor == math.inf


def closed_trades(*, account: ExchangeAccount | None = None) -> QuerySet[PairTrade]:
    """Finished trades with a result: closed ones, and failed or unwound ones whose legs cost or made money."""
    trades = PairTrade.objects.filter(state__in=PairTrade.FINAL_STATES, realised_pnl__isnull=False)
    if account is not None:
        trades = trades.filter(account=account)
    return trades


def performance_summary(*, account: ExchangeAccount | None = None) -> PerformanceSummary:
    """Closed-trade statistics and the drawdown of the trade-by-trade equity curve, from the capital allotted."""
    trades = closed_trades(account=account).order_by("closed_at", "pk")
    pnls = [float(p) for p in trades.values_list("realised_pnl", flat=True)]
    totals = trades.aggregate(pnl=Sum("realised_pnl"), fees=Sum("fees"), funding=Sum("funding"))
    accounts = ExchangeAccount.objects.filter(pk=account.pk) if account else ExchangeAccount.objects.all()
    capital = accounts.aggregate(total=Sum("capital"))["total"] or Decimal(0)
    metrics = trade_metrics(pnls)
    realised = totals["pnl"] or Decimal(0)
    if capital > 0:
        equity = [float(capital)]
        for pnl in pnls:
            equity.append(equity[-1] + pnl)
        total_return = float(realised / capital)
        drawdown = max_drawdown(equity)
    else:
        total_return = drawdown = None
    return PerformanceSummary(
        total_trades=metrics.trades,
        win_rate=metrics.win_rate,
        profit_factor=metrics.profit_factor,
        realised_pnl=realised,
        fees=totals["fees"] or Decimal(0),
        funding=totals["funding"] or Decimal(0),
        capital=capital,
        total_return=total_return,
        max_drawdown=drawdown,
    )


def daily_pnl(*, account: ExchangeAccount | None = None) -> QuerySet[DailyPnlSnapshot]:
    snapshots = DailyPnlSnapshot.objects.select_related("account")
    return snapshots.filter(account=account) if account else snapshots
