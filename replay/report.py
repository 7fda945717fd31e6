"""What a replay reports: every trade with its fills, and the summary figures of the run (JSON)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from core.formatting import iso as _iso
from core.formatting import plain_or_none as _plain
from execution.models import ExchangeAccount, Fill, PairTrade, Signal
from pairs.marketdata.validation import timeframe_ms
from pairs.quant.kpis import TradeResult, account_kpis, curve_kpis, finite_or_none
from risk.models import GuardEvent, Halt

LEG_ACTIONS = {"open": "open", "complete": "open", "close": "close", "unwind": "close", "reconcile": "adopted"}


def replay_trades(*, account: ExchangeAccount) -> list[dict]:
    """Every trade of the account, in the order they were planned, as the replay JSON lists them.

    ``pnl`` is the trade's realised PnL (net of fees and funding; null until the trade is closed or unwound),
    ``fees`` and ``funding`` its columns; ``legs`` every fill of every order, oldest first, with ``action`` "open"
    (open and complete orders) or "close" (close and unwind orders), its price (slippage included) and
    ``filled_at`` (by the execution model: the open time of the bar whose open it filled at). ``hedge_ratio``
    is the one both legs were sized with (the entry signal's), ``entry_zscore`` the entry signal's z-score,
    ``signal_at`` the close time of the bar that produced the entry signal (its open time plus one bar; null for a
    trade without an entry signal, such as one adopted by reconciliation). Decimals are strings, times ISO 8601 UTC.
    """
    trades = list(
        PairTrade.objects.filter(account=account)
        .select_related("pair__y_instrument", "pair__x_instrument", "entry_signal").order_by("pk")
    )  # fmt: skip
    legs: dict[int, list[dict]] = {t.pk: [] for t in trades}
    fills = (
        Fill.objects.filter(order__trade__account=account)
        .order_by("filled_at", "order_id", "pk")
        .values_list("order__trade_id", "order__instrument__symbol", "order__action", "order__side", "qty", "price",
                     "fee", "filled_at")
    )  # fmt: skip
    for trade_id, symbol, action, side, qty, price, fee, filled_at in fills:
        legs[trade_id].append({"symbol": symbol, "action": LEG_ACTIONS[action], "side": side, "qty": _plain(qty),
                               "price": _plain(price), "fee": _plain(fee), "filled_at": _iso(filled_at)})  # fmt: skip
    return [
        {
            "y": t.pair.y_instrument.symbol,
            "x": t.pair.x_instrument.symbol,
            "side": t.side,
            "hedge_ratio": t.hedge_ratio,
            "entry_zscore": t.entry_zscore,
            "signal_at": _signal_at(t.entry_signal),
            "opened_at": _iso(t.opened_at),
            "closed_at": _iso(t.closed_at),
            "exit_reason": t.exit_reason or None,
            "pnl": _plain(t.realised_pnl),
            "fees": _plain(t.fees),
            "funding": _plain(t.funding),
            "legs": legs[t.pk],
        }
        for t in trades
    ]


def _signal_at(signal: Signal | None) -> str | None:
    """When the signal was known: the close of its bar (``bar_time`` is the bar's open time)."""
    if signal is None:
        return None
    return _iso(signal.bar_time + timedelta(milliseconds=timeframe_ms(signal.timeframe)))


def replay_summary(*, trades: list[dict], start_equity: Decimal, equity: list[tuple[datetime, Decimal]]) -> dict:
    """The replay's figures, from the one metrics module (``pairs.quant.kpis``) as the dashboard, the API and the
    report compute them.

    - ``total_trades``, ``win_rate``, ``profit_factor`` (null without a loss: ``profit_factor_unbounded``),
      ``expectancy`` (mean PnL per trade),
      ``average_holding_hours``: over the trades with a PnL, which are the finished ones: closed and unwound (an
      unwound trade is a real result of trading the pair, so it counts); trades still open at the end, trades that
      failed to open (nothing was held) and trades closed by reconciliation have none and are left out. A win is a
      PnL > 0; the profit factor is null with no losing trade (or no trade): JSON has no infinity.
    - ``total_return`` = end equity / start equity - 1; ``start_equity`` is the paper wallet before the first bar,
      ``end_equity`` the equity (wallet + unrealised PnL of what is still open) after the last.
    - ``max_drawdown``: the largest fall from a running peak of the per-bar equity curve (marked to market at every
      bar), negative (-0.0436 is 4.36 %).
    - ``sharpe``, ``sortino``: daily equity returns (the equity after the last bar of each UTC day, the bar's open
      time deciding the day, starting from the start equity), mean over standard (downside) deviation, times
      sqrt(365); null with fewer than two days or no dispersion.
    Money is a string (a Decimal), ratios are numbers.
    """
    results = [TradeResult(pnl=float(Decimal(t["pnl"])), closed_at=_moment(t.get("closed_at")) or _EPOCH,
                           opened_at=_moment(t.get("opened_at")))
               for t in trades if t["pnl"] is not None]
    end_equity = equity[-1][1] if equity else start_equity
    # A bar's clock is its close; the bar belongs to the day of its open time.
    curve = [(None, float(start_equity))] + [(clock - timedelta(microseconds=1), float(e)) for clock, e in equity]
    first = equity[0][0] - timedelta(microseconds=1) if equity else _EPOCH
    last = equity[-1][0] if equity else _EPOCH
    kpis = account_kpis(capital=float(start_equity), trades=results, start=first, end=last)
    figures = curve_kpis(curve, first, last)
    return {
        "total_trades": kpis.trades,
        "win_rate": kpis.win_rate,
        "profit_factor": finite_or_none(kpis.profit_factor),
        # null above means either no trade or no losing trade: this says which (the API's flag of the same name).
        "profit_factor_unbounded": kpis.profit_factor == float("inf"),
        "total_return": float(end_equity / start_equity - 1) if start_equity else None,
        "max_drawdown": 0.0 - figures["max_drawdown"],
        "sharpe": figures["sharpe"],
        "sortino": figures["sortino"],
        "expectancy": kpis.expectancy,
        "average_holding_hours": kpis.average_holding_hours,
        "start_equity": _plain(start_equity),
        "end_equity": _plain(end_equity),
    }


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _moment(text: str | None) -> datetime | None:
    return None if not text else datetime.fromisoformat(text.replace("Z", "+00:00"))


def replay_halts(*, account: ExchangeAccount) -> list[dict]:
    """Every halt the guard (or a person) raised on the replay's account, at the replay's clock."""
    return [
        {"account": account.name, "reason": h.reason, "trigger": h.trigger, "mode": h.mode, "flatten": h.flatten,
         "at": _iso(h.created_at), "until": _iso(h.until) if h.until else None,
         "cleared_at": _iso(h.cleared_at) if h.cleared_at else None}
        for h in Halt.objects.filter(account=account).order_by("created_at", "pk")
    ]


def replay_guard_events(*, account: ExchangeAccount) -> list[dict]:
    return [
        {"at": _iso(e.created_at), "kind": e.kind, "severity": e.severity, "message": e.message}
        for e in GuardEvent.objects.filter(account=account).order_by("created_at", "pk")
    ]
