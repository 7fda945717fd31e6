"""Replay: the live engine driven bar by bar over stored candles, walk-forward.

For every bar with open time t in [start, end] the clock is t + 1 bar (the bar has just closed), and in order:

1. **selection**, at the first bar and then every ``reselect_every``: ``screening_run`` and
   ``pair_statistics_update`` with ``end=t``, so screening (formation window ending ``validation_bars`` before t,
   point-in-time universe), validation grading and the level moves see only bars with open time <= t (the
   selection maintenance is not run: it ages data on the newest stored bar and the wall clock, which a replay must
   not see);
2. **signals** for bar t (``signals_update(end=t)``), with closes served from memory by ``ReplayMarket``
   (``replay.market``), which applies the grid rules of ``pairs.marketdata.grid`` to history loaded once;
3. **one bot tick** (``bot_tick`` at the clock t + 1 bar) on the replay account against the paper exchange, both
   priced by the same ``ReplayMarket``: sizing and marks at the close of each instrument's newest closed bar as of
   the clock, never a later one; market orders fill by the execution model (``pairs.quant.fills``) at the open of
   bar t + 1 + ``execution_delay_bars`` (the bar opening at the clock when the delay is 0) with the slippage of the
   configuration, as the vectorised backtest fills them. With a delay the fill is priced at that later open and
   stamped with its open time, but booked at the clock (the trade's opened_at/closed_at, the paper position and
   its funding), so funding can differ from the backtest's by a settlement in between;
4. the paper account's **equity** (wallet + unrealised PnL at the same prices) is recorded for the summary.

Each bar is one transaction: an interrupted replay stops at a bar boundary. Everything is written as live trading
writes it (signals, trades, orders, fills, funding, notifications, heartbeat) on the replay account.

One replay at a time: a replay holds the database's replay lock (``replay.lock``) from before its first write to its
end, and a second one is refused at once with the name of the one running and since when.

Defaults, created when missing (``replay_account``): a paper account named ``replay`` on level 1 (paper), capital
10,000 USDT, 500 USDT per leg, at most 10 trades at once, leverage 2 (ten trades of at most 1,000 gross notional use
at most half of the wallet as margin, so no entry is refused for margin after a few losses; the gross exposure cap
of capital x leverage is never the binding limit), and ``enabled=False`` so the live beat never ticks it (the replay
ticks it with ``require_enabled=False``). The levels are seeded by the ``pairs`` migrations. An existing account is
reused only if it has no trades; its simulated-exchange rows and heartbeat are reset so that it starts from its
capital.

The replay needs a database that holds candles but no pairs: the walk-forward selection creates them. Pairs chosen
on later data would be look-ahead. With ``reselect_every=None`` there is no selection, and the pairs already in
the database (active, on level 1) are traded as they are: a fixed set, for benchmarks and what-if runs.
"""

from __future__ import annotations

import copy
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db import transaction

from core.audit import audit_record
from core.clock import ManualClock
from core.commands import shell_operator
from core.formatting import iso as _iso
from execution.bot.lease import lease_release
from execution.bot.tick import bot_tick
from execution.models import (
    BotHeartbeat,
    ExchangeAccount,
    PairTrade,
    PaperAccount,
    PaperFunding,
    PaperOrder,
    PaperPosition,
    SignalState,
)
from execution.paper.exchange import paper_exchange_for
from execution.services.signals import MAX_CATCH_UP_BARS, signal_pairs, signals_update
from ladder.services import pair_statistics_update
from monitoring.guard.cycle import guard_run
from monitoring.guard.receivers import trade_finished_cycles_covered
from notifications.services import notifications_held
from pairs.marketdata.grid import LEAD_BARS
from pairs.marketdata.validation import timeframe_ms
from pairs.models import Level, Pair, StrategyConfig
from pairs.quant.fills import check_delay
from pairs.selectors import candle_bounds, universe_candidates
from pairs.services.screening import ScreeningError, screening_run
from replay.errors import ReplayError
from replay.lock import (
    REPLAY_LOCK_RENEW_EVERY,
    replay_lock_acquire,
    replay_lock_owner,
    replay_lock_release,
    replay_lock_renew,
)
from replay.market import ReplayMarket
from replay.report import replay_guard_events, replay_halts, replay_summary, replay_trades
from replay.sensitivity import delay_sensitivity
from risk.models import AccountGuardState, DailyPnlSnapshot, GuardEvent, Halt, RiskLimit

logger = logging.getLogger(__name__)

DEFAULT_ACCOUNT_NAME = "replay"
REPLAY_LEVEL_NUMBER = 1  # the paper level
DEFAULT_CAPITAL = Decimal("10000")
DEFAULT_PER_TRADE_BUDGET = Decimal("500")
DEFAULT_MAX_CONCURRENT_TRADES = 10
DEFAULT_LEVERAGE = Decimal("2")
DEFAULT_RESELECT_EVERY = timedelta(days=7)
# Live bots reconcile every 5 minutes of wall clock; a replay's clock moves an hour a bar, and its paper exchange
# can't drift from the database, so it reconciles once a simulated day (and at its first bar).
REPLAY_RECONCILE_EVERY = timedelta(days=1)


# ------------------------------------------------------------------------------------------------------ the account


def replay_account(*, config: StrategyConfig, name: str = DEFAULT_ACCOUNT_NAME) -> ExchangeAccount:
    """The replay's paper account: found by name, or created with the documented defaults (module docstring)."""
    level = Level.objects.filter(number=REPLAY_LEVEL_NUMBER).first()
    if level is None:
        raise ReplayError(f"level {REPLAY_LEVEL_NUMBER} (paper) is missing: run the migrations, which seed the levels")
    account, _ = ExchangeAccount.objects.select_related("level").get_or_create(
        name=name,
        defaults={
            "exchange": config.exchange, "mode": ExchangeAccount.Mode.PAPER, "level": level,
            "capital": DEFAULT_CAPITAL, "per_trade_budget": DEFAULT_PER_TRADE_BUDGET,
            "max_concurrent_trades": DEFAULT_MAX_CONCURRENT_TRADES, "leverage": DEFAULT_LEVERAGE, "enabled": False,
        },
    )  # fmt: skip
    return account


def _check_account(account: ExchangeAccount, config: StrategyConfig) -> None:
    """ReplayError unless the account can take a replay: paper, on the candles' exchange, without trades."""
    if account.mode != ExchangeAccount.Mode.PAPER:
        raise ReplayError(f"account {account.name!r} is a {account.mode} account: a replay trades on paper only")
    if account.exchange != config.exchange:
        raise ReplayError(f"account {account.name!r} is on {account.exchange}, the candles on {config.exchange}")
    trades = PairTrade.objects.filter(account=account).count()
    if trades:
        raise ReplayError(
            f"account {account.name!r} already has {trades} trade(s), from an earlier replay or live paper trading: "
            "replay on a fresh database, or name another account (--account)"
        )


@transaction.atomic
def _prepare_account(account: ExchangeAccount) -> ExchangeAccount:
    """Disable the account's live bot and start its simulated exchange afresh (it has no trades: checked). What a
    person had set on it (the bot enabled, halts: a kill switch raised by hand) is audited as it goes."""
    was_enabled = account.enabled
    halts = [f"#{halt.pk} {halt.source}" + ("" if halt.cleared_at else " (in force)")
             for halt in Halt.objects.filter(account=account).order_by("pk")]
    if account.enabled:
        account.enabled = False  # the live beat must not tick it in between the replay's own ticks
        account.save(update_fields=["enabled", "updated_at"])
    if was_enabled or halts:
        changes = (["bot disabled"] if was_enabled else []) + ([f"halts deleted: {', '.join(halts)}"] if halts else [])
        audit_record(action="prepare_replay_account", channel="command", actor_label=shell_operator("replay"),
                     target=account, summary=f"paper account {account.name} taken for a replay: {'; '.join(changes)}",
                     details={"disabled": was_enabled, "halts_deleted": halts})
    # No trades, so nothing the bot knows of lives there: start the simulated exchange afresh from the capital.
    PaperOrder.objects.filter(account=account).delete()
    PaperPosition.objects.filter(account=account).delete()
    PaperFunding.objects.filter(account=account).delete()
    PaperAccount.objects.filter(account=account).delete()
    BotHeartbeat.objects.filter(account=account).delete()
    # The guard's memory of an earlier replay on this account (its halts would stop this one).
    Halt.objects.filter(account=account).delete()
    GuardEvent.objects.filter(account=account).delete()
    DailyPnlSnapshot.objects.filter(account=account).delete()
    AccountGuardState.objects.filter(account=account).delete()
    return ExchangeAccount.objects.select_related("level").get(pk=account.pk)


# ------------------------------------------------------------------------------------------------------- the range


def history_bars_needed(config: StrategyConfig) -> int:
    """Bars a selection step reads: the screening (formation) window, with the history it requires, and the
    validation bars after it."""
    return max(config.lookback_bars, config.min_history_bars) + config.validation_bars


def replay_default_range(config: StrategyConfig) -> tuple[datetime, datetime]:
    """(first bar with the full history of ``history_bars_needed`` behind it, last stored bar) as open times.
    ReplayError when no candle is stored or the history is too short for a single step."""
    first, last = candle_bounds(exchange=config.exchange, timeframe=config.timeframe)
    if first is None:
        raise ReplayError(
            f"no {config.timeframe} candles of {config.exchange} are stored: import them first "
            "(python manage.py import_candles DIR)"
        )
    step = timedelta(milliseconds=timeframe_ms(config.timeframe))
    start = first + step * (history_bars_needed(config) - 1)
    if start > last:
        raise ReplayError(
            f"the stored candles ({_iso(first)} to {_iso(last)}) are shorter than the "
            f"{history_bars_needed(config)} bars one selection step needs (lookback {config.lookback_bars} or "
            f"min_history_bars {config.min_history_bars}, + validation_bars {config.validation_bars})"
        )
    return start, last


def _floor_to_bar(moment: datetime, step: timedelta) -> datetime:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((moment - epoch) // step) * step


# --------------------------------------------------------------------------------------------------- the run


@dataclass
class ReplayResult:
    account: ExchangeAccount
    start: datetime  # open time of the first bar replayed
    end: datetime  # open time of the last
    bars: int
    start_equity: Decimal
    equity: list[tuple[datetime, Decimal]]  # (clock, equity) after each bar
    selection_runs: list[int] = field(default_factory=list)  # CointegrationRun ids, in order
    selection_errors: list[str] = field(default_factory=list)
    tick_statuses: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    config: StrategyConfig | None = None  # the settings replayed (with the delay the replay ran at)

    @property
    def end_equity(self) -> Decimal:
        return self.equity[-1][1] if self.equity else self.start_equity

    def trades(self) -> list[dict]:
        return replay_trades(account=self.account)

    def as_json(self) -> dict:
        trades = self.trades()
        data = {
            "summary": replay_summary(trades=trades, start_equity=self.start_equity, equity=self.equity),
            "trades": trades,
            "halts": replay_halts(account=self.account),
            "guard_events": replay_guard_events(account=self.account),
        }
        if self.config is not None:
            traded = list(Pair.objects.filter(trades__account=self.account).distinct().order_by("pk")
                          .select_related("y_instrument", "x_instrument"))
            data["execution_delay"] = delay_sensitivity(config=self.config, pairs=traded, start=self.start,
                                                        end=self.end,
                                                        replay_delay_bars=self.config.execution_delay_bars)
        return data


def replay_run(
    *,
    start: datetime,
    end: datetime,
    config: StrategyConfig,
    account: ExchangeAccount | None = None,
    reselect_every: timedelta | None = DEFAULT_RESELECT_EVERY,
    progress: Callable[[int, int], None] | None = None,
    daily_loss_limit_pct: float | None = None,
    notify: bool = False,
    execution_delay_bars: int | None = None,
) -> ReplayResult:
    """Replay the bars with open time in [start, end], trimmed to the stored candles (see the module docstring).
    ``reselect_every`` None (or zero) trades the pairs already in the database without any selection;
    ``progress(done, total)`` is called after each bar; ``daily_loss_limit_pct`` (a fraction of start-of-day
    equity) sets the replay account's daily loss limit. ReplayError at once while another replay runs.
    The replay's notifications are kept in the database as held, never sent, unless ``notify``.
    ``execution_delay_bars`` overrides the configuration's for this replay (its selection's grading included),
    without saving it."""
    if execution_delay_bars is not None:
        try:
            delay = check_delay(execution_delay_bars)
        except ValueError as exc:
            raise ReplayError(str(exc)) from None
        config = copy.copy(config)
        config.execution_delay_bars = delay
    owner = replay_lock_owner()
    name = account.name if account is not None else DEFAULT_ACCOUNT_NAME
    replay_lock_acquire(owner=owner, description=f"account {name!r}, {_iso(start)} to {_iso(end)}")
    try:
        with notifications_held(not notify):
            return _replay_locked(start=start, end=end, config=config, account=account,
                                  reselect_every=reselect_every, progress=progress, owner=owner,
                                  daily_loss_limit_pct=daily_loss_limit_pct)  # fmt: skip
    finally:
        replay_lock_release(owner=owner)


def _replay_locked(
    *, start: datetime, end: datetime, config: StrategyConfig, account: ExchangeAccount | None,
    reselect_every: timedelta | None, progress: Callable[[int, int], None] | None, owner: str,
    daily_loss_limit_pct: float | None = None,
) -> ReplayResult:
    """``replay_run`` once it holds the replay lock (``owner``), which it renews between bars."""
    started = time.monotonic()
    step = timedelta(milliseconds=timeframe_ms(config.timeframe))
    requested = _floor_to_bar(start, step)
    start, end = _stored_range(config, requested, _floor_to_bar(end, step))
    reselect_every = reselect_every or None
    if reselect_every is not None:
        _check_selection_history(config, requested, start)
    account = _replay_account_checked(config, account, start, reselect=reselect_every is not None)
    if daily_loss_limit_pct is not None:
        RiskLimit.objects.update_or_create(account=account, defaults={"daily_loss_limit_pct": daily_loss_limit_pct,
                                                                      "enabled": True})
    clock = ManualClock(start)  # before the first bar: the bar before ``start`` has just closed
    market = _replay_market(config, start, end, clock)
    exchange = paper_exchange_for(account, market=market, config=config)
    start_equity = exchange.balance().equity  # opens the paper wallet with the capital at the clock
    result = ReplayResult(account=account, start=start, end=end, bars=0, start_equity=start_equity, equity=[],
                          config=config)
    bot_owner = f"replay:{uuid.uuid4().hex[:12]}"
    total = (end - start) // step + 1
    last_selection: datetime | None = None
    active: list[Pair] | None = None  # the signals' pairs, kept between bars until a selection changes them
    renewed = time.monotonic()
    try:
        for index in range(total):
            bar = start + step * index
            clock.set(bar + step)
            with trade_finished_cycles_covered() as finished, transaction.atomic():
                if reselect_every is not None and (last_selection is None or bar - last_selection >= reselect_every):
                    _select(config, bar, result)
                    last_selection = bar
                    active = None
                if active is None or any(_unsaved_state(p) for p in active):
                    active = signal_pairs(config)
                signals_update(config=config, end=bar, market=market, pairs=active)
                report = bot_tick(account=account, exchange=exchange, market=market, clock=clock, config=config,
                                  owner=bot_owner, require_enabled=False, sleep=_no_sleep,
                                  reconcile_every=REPLAY_RECONCILE_EVERY)  # fmt: skip
                # The live guard's code at the replay's clock: its halts stop the next bar's entries. It is also the
                # cycle a trade finishing in the tick asks for (``trade_finished_cycles_covered``).
                guard_run(now=clock.now(), market=market, accounts=[account], live=False)
                result.equity.append((clock.now(), exchange.balance().equity))
            _check_covered(finished, account, clock.now(), market)
            _record_tick(result, report, clock.now())
            if time.monotonic() - renewed >= REPLAY_LOCK_RENEW_EVERY.total_seconds():
                replay_lock_renew(owner=owner)
                renewed = time.monotonic()
            if progress is not None:
                progress(index + 1, total)
    finally:
        lease_release(account, bot_owner)
        result.seconds = time.monotonic() - started
    return result


def _stored_range(config: StrategyConfig, start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """[start, end] trimmed to the stored candles: no bars to tick before the first candle or after the last."""
    if start > end:
        raise ReplayError(f"the start {_iso(start)} is after the end {_iso(end)}")
    first, last = candle_bounds(exchange=config.exchange, timeframe=config.timeframe, start=start, end=end)
    if first is None:
        raise ReplayError(f"no {config.timeframe} candles of {config.exchange} between {_iso(start)} and {_iso(end)}")
    return first, last


def _check_selection_history(config: StrategyConfig, requested: datetime, start: datetime) -> None:
    """ReplayError when the first bar replayed (``start``) lacks the history the first selection reads: every
    selection step would fail for want of history, and the replay would trade nothing."""
    earliest, _ = replay_default_range(config)
    if start < earliest:
        first, _ = candle_bounds(exchange=config.exchange, timeframe=config.timeframe)
        raise ReplayError(
            f"--start {_iso(requested)} is too early for the replay's selection: a selection step reads "
            f"{history_bars_needed(config)} bars (lookback {config.lookback_bars} or min_history_bars "
            f"{config.min_history_bars}, + validation_bars {config.validation_bars}) and the candles start at "
            f"{_iso(first)}; the earliest start is {_iso(earliest)} (or --reselect-every-days 0 trades the pairs "
            "already stored, without a selection)"
        )


def _replay_account_checked(config: StrategyConfig, account: ExchangeAccount | None, start: datetime, *,
                            reselect: bool) -> ExchangeAccount:
    """The replay's account, fit for the run and started afresh; ReplayError when the database isn't fit for it."""
    account = account or ExchangeAccount.objects.filter(name=DEFAULT_ACCOUNT_NAME).first()
    if account is not None:
        _check_account(account, config)
    pairs = Pair.objects.filter(timeframe=config.timeframe, y_instrument__exchange=config.exchange)
    if reselect and pairs.exists():
        raise ReplayError(
            f"the database already holds {pairs.count()} pair(s): the replay selects its pairs walk-forward, and "
            "pairs chosen on later data would be look-ahead. Replay on a database with candles only (or without "
            "reselection, to trade the pairs as they are)"
        )
    ahead = SignalState.objects.filter(pair__in=pairs, last_bar_time__gte=start).count()
    if ahead:
        raise ReplayError(f"{ahead} pair(s) have signals at or after {_iso(start)}: their rule can't be replayed")
    return _prepare_account(account or replay_account(config=config))


def _replay_market(config: StrategyConfig, start: datetime, end: datetime, clock: ManualClock) -> ReplayMarket:
    """The history the replay reads, in memory: the universe and every stored pair's legs, from as far back as the
    signals read (zscore_window_bars + 1 + MAX_CATCH_UP_BARS bars before the clock, and the grid's lead before them)."""
    step = timedelta(milliseconds=timeframe_ms(config.timeframe))
    instruments = {i.pk: i for i in universe_candidates(config=config)}  # any selection's universe
    pairs = Pair.objects.filter(timeframe=config.timeframe, y_instrument__exchange=config.exchange)
    for pair in pairs.select_related("y_instrument", "x_instrument"):
        instruments.setdefault(pair.y_instrument_id, pair.y_instrument)
        instruments.setdefault(pair.x_instrument_id, pair.x_instrument)
    first = start - step * (config.zscore_window_bars + MAX_CATCH_UP_BARS + 1 + LEAD_BARS)
    # The fills of the last bar's decisions are at the open of a bar after it (the execution model): loaded too,
    # read by ``fill_quotes`` only (signals and marks never read past the clock).
    last = end + step * (1 + config.execution_delay_bars)
    return ReplayMarket(timeframe=config.timeframe, first=first, last=last, instruments=instruments.values(),
                        clock=clock)


def _check_covered(finished: set, account: ExchangeAccount, now: datetime, market: ReplayMarket) -> None:
    """The trades that finished in the bar (noted when it committed) were all the replay account's, at the bar's
    clock, so the bar's own guard cycle, after the tick, was the cycle a finished trade asks for; any other (none
    is expected) gets its cycle now, as the receiver would have run it."""
    for account_id, at in sorted(finished - {(account.pk, now)}):
        other = account if account_id == account.pk else ExchangeAccount.objects.get(pk=account_id)
        logger.warning("replay: a trade of account %s finished at %s, outside the bar's guard cycle", other, _iso(at))
        guard_run(now=at, market=market, accounts=[other], live=False)


def _record_tick(result: ReplayResult, report, now: datetime) -> None:
    result.tick_statuses[report.status] = result.tick_statuses.get(report.status, 0) + 1
    if report.status != "ok":
        logger.warning("replay tick at %s: %s %s", _iso(now), report.status, report.error)
    result.bars += 1


def _select(config: StrategyConfig, bar: datetime, result: ReplayResult) -> None:
    """Screening and grading on the bars up to ``bar`` (both read the database with ``end=bar``)."""
    try:
        with transaction.atomic():
            outcome = screening_run(config=config, end=bar)
        result.selection_runs.append(outcome.run.pk)
    except ScreeningError as exc:  # e.g. too few symbols with the history: no new pairs this step
        result.selection_errors.append(f"{_iso(bar)}: {exc}")
        logger.info("replay selection at %s: %s", _iso(bar), exc)
    pair_statistics_update(config=config, end=bar)


def _unsaved_state(pair: Pair) -> bool:
    """A state the signals created but whose primary key the database didn't hand back: reload the pairs."""
    state = getattr(pair, "signal_state", None)
    return state is not None and state.pk is None


def _no_sleep(seconds: float) -> None:
    """The paper exchange fills at once: nothing to wait for between polls."""


