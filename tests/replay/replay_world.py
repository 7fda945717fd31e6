"""A small real market for replay tests: four symbols of the shared data, imported with ``import_candles`` into a
freshly migrated test database, and a strategy configuration short enough for a replay of a week to run in
seconds.

With these windows (formation 500 bars, validation the 200 after it, z-score 150) and level 1 asking 4 validation
trades instead of 8 (a week of replay needs a pair on level 1, and 200 validation bars rarely hold 8 trades), the
walk-forward selection of 2021-03-29 finds NEOUSDT/BATUSDT, grades it onto level 1 on its validation backtest (4
trades of the rolling rule, as the bot trades it), and the replay account trades it that week.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from django.core.management import call_command

from execution.models import (
    BotHeartbeat,
    ExchangeAccount,
    Fill,
    FundingPayment,
    Order,
    PairTrade,
    Signal,
    SignalState,
)
from notifications.models import Notification
from pairs.models import CointegrationRun, Level, LevelChange, Pair, PairStatistics, PairTest, StrategyConfig
from risk.models import DailyPnlSnapshot, GuardEvent, Halt

SYMBOLS = ["BATUSDT", "NEOUSDT", "OMGUSDT", "ZRXUSDT"]
START = datetime(2021, 3, 29, tzinfo=UTC)
L1_MIN_TRADES = 4
SHORT_WINDOWS = {
    "lookback_bars": 500,
    "validation_bars": 200,
    "zscore_window_bars": 150,
    "min_history_bars": 500,
}
TRADE_KEYS = {"y", "x", "side", "hedge_ratio", "entry_zscore", "signal_at", "opened_at", "closed_at", "exit_reason",
              "pnl", "fees", "funding", "legs"}
LEG_KEYS = {"symbol", "action", "side", "qty", "price", "fee", "filled_at"}
SUMMARY_KEYS = {
    "total_trades",
    "win_rate",
    "profit_factor",
    "profit_factor_unbounded",
    "total_return",
    "max_drawdown",
    "sharpe",
    "sortino",
    "expectancy",
    "average_holding_hours",
    "start_equity",
    "end_equity",
}


def import_market(directory: Path) -> StrategyConfig:
    call_command("import_candles", str(directory), symbols=",".join(SYMBOLS), verbosity=0)
    config = StrategyConfig.current()
    for name, value in SHORT_WINDOWS.items():
        setattr(config, name, value)
    config.save()
    Level.objects.filter(number=1).update(min_trades=L1_MIN_TRADES)
    return config


def cash_flow(leg: dict) -> Decimal:
    """What one fill paid (-) or received (+), before its fee."""
    amount = Decimal(leg["qty"]) * Decimal(leg["price"])
    return amount if leg["side"] == "sell" else -amount


def db_trades(account: ExchangeAccount) -> list[dict]:
    """The account's trades read straight from the tables, in the replay JSON's shape (for comparison)."""

    def plain(value):
        return None if value is None else Decimal(value)

    rows = []
    for trade in PairTrade.objects.filter(account=account).order_by("pk"):
        fills = (
            Fill.objects.filter(order__trade=trade)
            .select_related("order__instrument")
            .order_by("filled_at", "order_id", "pk")
        )
        rows.append(
            {
                "y": trade.pair.y_instrument.symbol,
                "x": trade.pair.x_instrument.symbol,
                "side": trade.side,
                "hedge_ratio": trade.hedge_ratio,
                "entry_zscore": trade.entry_zscore,
                # hourly bars: the signal is known at its bar's close
                "signal_at": trade.entry_signal.bar_time + timedelta(hours=1) if trade.entry_signal else None,
                "opened_at": trade.opened_at,
                "closed_at": trade.closed_at,
                "exit_reason": trade.exit_reason or None,
                "pnl": plain(trade.realised_pnl),
                "fees": trade.fees,
                "funding": trade.funding,
                "legs": [
                    {
                        "symbol": f.order.instrument.symbol,
                        "action": "open" if f.order.action in (Order.Action.OPEN, Order.Action.COMPLETE) else "close",
                        "side": f.order.side,
                        "qty": f.qty,
                        "price": f.price,
                        "fee": f.fee,
                        "filled_at": f.filled_at,
                    }
                    for f in fills
                ],
            }
        )
    return rows


def parsed(trade: dict) -> dict:
    """A JSON trade with its strings turned back into Decimals and datetimes."""

    def moment(text):
        return None if text is None else datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)

    def number(text):
        return None if text is None else Decimal(text)

    return {
        **trade,
        "signal_at": moment(trade["signal_at"]),
        "opened_at": moment(trade["opened_at"]),
        "closed_at": moment(trade["closed_at"]),
        "pnl": number(trade["pnl"]),
        "fees": number(trade["fees"]),
        "funding": number(trade["funding"]),
        "legs": [
            {**leg, "qty": Decimal(leg["qty"]), "price": Decimal(leg["price"]), "fee": Decimal(leg["fee"]),
             "filled_at": moment(leg["filled_at"])}
            for leg in trade["legs"]
        ],
    }


def wipe_replay() -> None:
    """Everything a replay wrote, so that another one can run on the same candles within one test."""
    accounts = ExchangeAccount.objects.all()
    Fill.objects.all().delete()
    FundingPayment.objects.all().delete()
    Order.objects.all().delete()
    PairTrade.objects.all().delete()
    GuardEvent.objects.all().delete()
    Halt.objects.all().delete()
    BotHeartbeat.objects.all().delete()
    DailyPnlSnapshot.objects.all().delete()
    accounts.delete()  # the paper exchange's rows cascade
    Signal.objects.all().delete()
    SignalState.objects.all().delete()
    PairStatistics.objects.all().delete()
    PairTest.objects.all().delete()
    LevelChange.objects.all().delete()
    Pair.objects.all().delete()
    CointegrationRun.objects.all().delete()
    Notification.objects.all().delete()
