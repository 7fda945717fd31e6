"""The read-only commands' answers, from the same selectors as the dashboard and the API (plain text)."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from core.formatting import cents_text, plain
from execution.models import ExchangeAccount
from monitoring.positions import open_positions
from monitoring.selectors import closed_trades, daily_pnl, performance_summary
from pairs.selectors import ladder_pairs, level_counts
from risk.selectors import active_halts

MAX_ROWS = 30


class BadArgument(ValueError):
    """An argument the read can't use: the console answers its text and the command's usage."""


def _count(args: list[str], default: int) -> int:
    """The number of rows the first argument asks for (at most MAX_ROWS); a word or a number below 1 is a mistake
    to be told, not a reason to answer something else than was asked."""
    if not args:
        return default
    if not (args[0].isascii() and args[0].isdigit()) or int(args[0]) < 1:
        raise BadArgument(f"{args[0]!r} is not a number of rows (1 to {MAX_ROWS})")
    return min(MAX_ROWS, int(args[0]))


def status(args: list[str]) -> str:
    positions = sorted(open_positions(), key=lambda p: p.trade.pk)
    lines = [f"open trades: {len(positions)}"]
    total = sum((p.net_pnl for p in positions if p.net_pnl is not None), start=Decimal(0))
    unpriced = sum(1 for p in positions if p.net_pnl is None)
    for p in positions:
        t = p.trade
        legs = ", ".join(f"{leg.symbol} {plain(leg.qty)}" for leg in p.legs)
        lines.append(f"#{t.pk} [{t.account.name}] {t.pair} {t.side} {t.state}: {legs}, uPnL {cents_text(p.net_pnl)}")
    lines.append(f"unrealised PnL (at the newest closes, net of fees paid and funding): {cents_text(total)} USDT"
                 + (f" ({unpriced} trade(s) without a current price not counted)" if unpriced else ""))
    halts = list(active_halts().select_related("account", "pair__y_instrument", "pair__x_instrument"))
    lines.append("halts: " + ("; ".join(str(h) for h in halts) if halts else "none"))
    return "\n".join(lines)


def _accounts(args: list[str]) -> list[ExchangeAccount] | str:
    """The account named by the first argument, or every account; a name that matches none is an answer."""
    if not args:
        return list(ExchangeAccount.objects.order_by("name"))
    account = ExchangeAccount.objects.filter(name=args[0]).first()
    return [account] if account is not None else f"no account named {args[0]!r}"


def _factor(value: float | None, *, unbounded: bool) -> str:
    if unbounded:
        return "inf"
    return "n/a" if value is None else f"{value:.2f}"


def profit(args: list[str]) -> str:
    """One block per account: a combined figure would mix paper with real money and accounts' capitals."""
    accounts = _accounts(args)
    if isinstance(accounts, str):
        return accounts
    blocks = []
    for account in accounts:
        s = performance_summary(account=account)
        win = "n/a" if s.win_rate is None else f"{100 * s.win_rate:.1f}%"
        factor = _factor(s.profit_factor, unbounded=s.profit_factor_unbounded)
        ret = "n/a" if s.total_return_pct is None else f"{s.total_return_pct:.2f}%"
        drawdown = "n/a" if s.max_drawdown_pct is None else f"-{s.max_drawdown_pct:.2f}%"  # a fall, as on the dashboard
        sharpe = "n/a" if s.sharpe is None else f"{s.sharpe:.2f}"
        blocks.append(f"[{account.name}] {account.mode}: closed trades {s.total_trades}, win rate {win}, profit "
                      f"factor {factor}\nrealised PnL {cents_text(s.realised_pnl)} USDT (net of fees "
                      f"{cents_text(s.fees)} and funding {cents_text(s.funding)})\nreturn {ret} on "
                      f"{cents_text(s.capital)} capital, max drawdown {drawdown}, Sharpe {sharpe}")
    return "\n\n".join(blocks) or "no accounts"


def daily(args: list[str]) -> str:
    """Every account's PnL on each of the last n days that have one (n days, not n rows: with three accounts, rows
    would have shown a little over two days for /daily 7)."""
    days = list(daily_pnl().order_by("-date").values_list("date", flat=True).distinct()[:_count(args, 7)])
    rows = list(daily_pnl().filter(date__in=days).order_by("-date", "account__name"))
    if not rows:
        return "no daily PnL yet"
    return "\n".join(f"{r.date} [{r.account.name}] PnL {cents_text(r.realised_pnl)}, trades {r.trades_closed} closed, "
                     f"equity {cents_text(r.ending_equity)}" for r in rows)


def balance(args: list[str]) -> str:
    """Capital, realised PnL, the open trades marked as /status marks them, and the equity of the three (the
    guard's and the dashboard's equity); unknown while a held leg has no current price."""
    positions: dict[int, list] = defaultdict(list)
    for position in open_positions():
        positions[position.trade.account_id].append(position)
    lines = []
    for account in ExchangeAccount.objects.order_by("name"):
        s = performance_summary(account=account)
        state = "" if account.enabled else " (disabled)"
        marks = [p.net_pnl for p in positions[account.pk]]
        if not marks:
            open_part, equity = "", cents_text(s.capital + s.realised_pnl)
        elif None in marks:
            open_part = f", {len(marks)} open trade(s), {marks.count(None)} without a current price"
            equity = "n/a"
        else:
            open_pnl = sum(marks, Decimal(0))
            open_part = f", open trades {cents_text(open_pnl)}"
            equity = cents_text(s.capital + s.realised_pnl + open_pnl)
        lines.append(f"[{account.name}] {account.mode}{state}: capital {cents_text(s.capital)}, realised "
                     f"{cents_text(s.realised_pnl)}{open_part}, equity {equity}")
    return "\n".join(lines) or "no accounts"


def trades(args: list[str]) -> str:
    rows = list(closed_trades().select_related("account", "pair__y_instrument", "pair__x_instrument")
                .order_by("-closed_at", "-pk")[:_count(args, 10)])  # fmt: skip
    if not rows:
        return "no closed trades yet"
    return "\n".join(f"#{t.pk} [{t.account.name}] {t.pair} {t.side} {t.state} {t.closed_at:%m-%d %H:%M}: PnL "
                     f"{cents_text(t.realised_pnl)} ({t.get_exit_reason_display() or '-'})" for t in rows)


def pairs(args: list[str]) -> str:
    counts = ", ".join(f"L{row['level'].number} {row['pairs']}" for row in level_counts())
    top = [f"L{row['pair'].level.number} {row['pair']}" for row in ladder_pairs(limit=_count(args, 15))]
    return f"active pairs per level: {counts}\n" + ("\n".join(top) if top else "no pair on a trading level")
