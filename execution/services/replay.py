"""Replay: the live engine driven bar by bar over stored candles, walk-forward.

For every bar with open time t in [start, end] the clock is t + 1 bar (the bar has just closed), and in order:

1. **selection**, at the first bar and then every ``reselect_every``: ``screening_run`` and
   ``pair_statistics_update`` with ``end=t``, so screening, out-of-sample grading and the level moves see only bars
   with open time <= t (the selection maintenance is not run: it ages data on the newest stored bar and the wall
   clock, which a replay must not see);
2. **signals** for bar t (``signals_update(end=t)``), with closes served from memory by ``ReplayMarket``, which
   applies ``price_window``'s rules to history loaded once;
3. **one bot tick** (``bot_tick(now=t + 1 bar)``) on the replay account against the paper exchange, priced by
   ``ReplayFeed``: the close of each instrument's newest closed bar as of the clock, never a later one;
4. the paper account's **equity** (wallet + unrealised PnL at the same prices) is recorded for the summary.

Each bar is one transaction: an interrupted replay stops at a bar boundary. Everything is written as live trading
writes it (signals, trades, orders, fills, funding, notifications, heartbeat) on the replay account.

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

import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
from django.db import transaction
from django.db.models import Max, Min

from execution.exchanges.paper import paper_exchange_for
from execution.feeds import MAX_PRICE_AGE_BARS, SymbolPrices
from execution.models import (
    BotHeartbeat,
    ExchangeAccount,
    Fill,
    PairTrade,
    PaperAccount,
    PaperFunding,
    PaperOrder,
    PaperPosition,
    SignalState,
)
from execution.services.bot import bot_tick, lease_release
from execution.services.signals import MAX_CATCH_UP_BARS, signal_pairs, signals_update
from pairs.marketdata.validation import timeframe_ms
from pairs.models import Candle, Instrument, Level, Pair, SelectionConfig
from pairs.quant.performance import max_drawdown, sharpe_ratio, trade_metrics
from pairs.selectors import (
    MAX_FILLED_FRACTION,
    MAX_FORWARD_FILL_BARS,
    PriceWindow,
    candle_closes_frame,
    universe_instruments,
)
from pairs.services.screening import ScreeningError, screening_run
from pairs.services.statistics import pair_statistics_update

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
DAYS_PER_YEAR = 365  # crypto trades every day
# The bar's open time and an ISO 8601 UTC timestamp, as the other JSON outputs write them.
ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_NS_PER_MS = 1_000_000


class ReplayError(Exception):
    """The replay can't run as asked (no candles, a bad range, a database or account that isn't fit for it)."""


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).strftime(ISO_FORMAT) if moment else None


def _plain(value: Decimal | None) -> str | None:
    """A Decimal as the JSON writes it: a string in plain notation without the columns' zero padding."""
    if value is None:
        return None
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _ns(moment: datetime) -> int:
    """Epoch nanoseconds of an aware datetime (naive: UTC), in integers; a pandas Timestamp keeps its nanoseconds.
    Called several times a bar: pd.Timestamp(moment).value gives the same number, slower."""
    if isinstance(moment, pd.Timestamp):
        return int(moment.as_unit("ns").value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MICROSECOND * 1000


# ----------------------------------------------------------------------------------------------- market in memory


class ReplayClock:
    """The replay's clock: ``now`` is the close of the bar being replayed."""

    def __init__(self, now: datetime):
        self.now = now


class ReplayMarket:
    """Closes of a set of instruments, loaded once into a (bars x instruments) matrix on the regular grid of the
    timeframe (NaN where a bar is missing), read as doubles as ``price_window`` reads them.

    It is the signals' ``PriceSource`` (``newest_bars`` and ``window``, with ``price_window``'s rules for
    ``min_history_bars=None``) and answers only what lies at or before the ``end`` it is asked about. Instruments
    asked for that were not loaded are loaded on first use.
    """

    def __init__(self, *, timeframe: str, first: datetime, last: datetime, instruments: Iterable[Instrument]):
        self.timeframe = timeframe
        self._step_ns = timeframe_ms(timeframe) * _NS_PER_MS
        self._first_ns, self._last_ns = _ns(first), _ns(last)
        # Integer arithmetic: np.arange(first, last + 1, step) sizes itself in doubles, which can't hold ns epochs.
        bars = (self._last_ns - self._first_ns) // self._step_ns + 1
        self.times_ns = self._first_ns + self._step_ns * np.arange(bars, dtype=np.int64)
        self._column: dict[int, int] = {}
        self.closes = np.empty((len(self.times_ns), 0))
        self._last_real = np.empty((len(self.times_ns), 0), dtype=np.int64)
        self._decimals: dict[int, dict[int, Decimal]] = {}
        self._times: dict[int, datetime] = {}
        self._load(list(instruments))

    # --------------------------------------------------------------------------------------------------- loading

    def _load(self, instruments: list[Instrument]) -> None:
        new = [i for i in {i.pk: i for i in instruments}.values() if i.pk not in self._column]
        if not new:
            return
        ids = np.array(sorted(i.pk for i in new), dtype=np.int64)
        block = np.full((len(self.times_ns), len(ids)), np.nan)
        instrument_ids, open_ns, closes = self._rows(ids.tolist())
        if len(instrument_ids):
            block[(open_ns - self._first_ns) // self._step_ns, np.searchsorted(ids, instrument_ids)] = closes
        # Row index of the newest real bar up to each row (-1 before the first).
        rows = np.arange(len(self.times_ns), dtype=np.int64)[:, None]
        last_real = np.maximum.accumulate(np.where(np.isnan(block), -1, rows), axis=0)
        offset = self.closes.shape[1]
        for k, instrument_id in enumerate(ids.tolist()):
            self._column[instrument_id] = offset + k
        self.closes = np.hstack([self.closes, block])
        self._last_real = np.hstack([self._last_real, last_real])

    def _rows(self, instrument_ids: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(instrument ids, open times in ns, closes as doubles) of the stored bars in the grid's range, read as
        ``price_window`` reads them (``candle_closes_frame``)."""
        frame = candle_closes_frame(instrument_ids, self.timeframe, _from_ns(self._first_ns), _from_ns(self._last_ns))
        if frame.empty:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), np.empty(0)
        open_ns = pd.DatetimeIndex(frame["open_time"]).as_unit("ns").asi8
        return (frame["instrument_id"].to_numpy(dtype=np.int64), np.asarray(open_ns, dtype=np.int64),
                frame["close"].to_numpy(dtype=float))

    def _ensure(self, instruments: Iterable[Instrument]) -> None:
        missing = [i for i in instruments if i.pk not in self._column]
        if missing:
            self._load(missing)

    def row_at_or_before(self, moment: datetime | None) -> int:
        """Grid row of the newest bar with open time <= ``moment`` (-1 if before the grid)."""
        if moment is None:
            return len(self.times_ns) - 1
        return min(int((_ns(moment) - self._first_ns) // self._step_ns), len(self.times_ns) - 1)

    # ----------------------------------------------------------------------------------------- PriceSource protocol

    def newest_bars(self, *, instrument_ids: Iterable[int], timeframe: str, end: datetime | None
                    ) -> dict[int, datetime]:  # fmt: skip
        self._check_timeframe(timeframe)
        ids = list(instrument_ids)
        missing = [i for i in ids if i not in self._column]
        if missing:
            self._ensure(Instrument.objects.filter(pk__in=missing))
        row = self.row_at_or_before(end)
        if row < 0:
            return {}
        newest = {}
        for instrument_id in ids:
            real = int(self._last_real[row, self._column[instrument_id]])
            if real >= 0:
                newest[instrument_id] = self._time_of(real)
        return newest

    def _time_of(self, row: int) -> datetime:
        if row not in self._times:
            self._times[row] = _from_ns(int(self.times_ns[row]))
        return self._times[row]

    def window(self, *, instruments: list[Instrument], timeframe: str, bars: int, end: datetime) -> PriceWindow:
        """``price_window(..., min_history_bars=None)`` from memory: same grid, same exclusions, same fill."""
        self._check_timeframe(timeframe)
        self._ensure(instruments)
        end_ts = pd.Timestamp(end).tz_convert("UTC") if pd.Timestamp(end).tzinfo else pd.Timestamp(end, tz="UTC")
        grid = pd.date_range(end=end_ts, periods=bars, freq=pd.Timedelta(self._step_ns, unit="ns"))
        last = (_ns(end) - self._first_ns) // self._step_ns
        first = last - bars + 1
        ordered = sorted(instruments, key=lambda i: i.symbol)
        columns = [self._column[i.pk] for i in ordered]
        block = np.full((bars, len(ordered)), np.nan)
        lo, hi = max(first, 0), min(last, len(self.times_ns) - 1)
        if lo <= hi:
            block[lo - first : hi - first + 1] = self.closes[lo : hi + 1][:, columns]
        real = ~np.isnan(block)
        filled = block if real.all() else pd.DataFrame(block).ffill(limit=MAX_FORWARD_FILL_BARS).to_numpy()
        window = PriceWindow(timeframe=timeframe, times=grid, symbols=[], instrument_ids=[], closes=np.empty((0, 0)))
        keep = []
        # Column by column below, but counted for all columns at once (this runs every bar of a replay).
        reals, starts, gaps = real.sum(axis=0).tolist(), real[0].tolist(), np.isnan(filled).any(axis=0).tolist()
        for k, instrument in enumerate(ordered):
            n_real = reals[k]
            if n_real == 0:
                window.excluded[instrument.symbol] = "no candles in the window"
            elif not starts[k]:
                window.excluded[instrument.symbol] = "short history: no bar at the window start"
            elif gaps[k]:
                window.excluded[instrument.symbol] = f"a gap longer than {MAX_FORWARD_FILL_BARS} bars"
            elif bars - n_real > max(MAX_FORWARD_FILL_BARS, MAX_FILLED_FRACTION * bars):
                window.excluded[instrument.symbol] = f"{bars - n_real} of {bars} bars missing in the window"
            else:
                if n_real < bars:
                    window.filled_bars[instrument.symbol] = bars - n_real
                keep.append(k)
                window.symbols.append(instrument.symbol)
                window.instrument_ids.append(instrument.pk)
        window.closes = filled[:, keep] if keep else np.empty((bars, 0))
        return window

    def _check_timeframe(self, timeframe: str) -> None:
        if timeframe != self.timeframe:
            raise ValueError(f"the replay holds {self.timeframe} closes, not {timeframe}")

    # ------------------------------------------------------------------------------------------------- feed side

    def close_at(self, instrument_id: int, row: int, max_age_bars: int) -> Decimal | None:
        """The stored close (exact Decimal) of the instrument's newest real bar at or before grid row ``row`` and
        less than ``max_age_bars`` bars older than it; None if there is none."""
        column = self._column.get(instrument_id)
        if column is None:
            self._ensure(Instrument.objects.filter(pk=instrument_id))
            column = self._column.get(instrument_id)
        if column is None or row < 0:
            return None
        real = int(self._last_real[min(row, len(self.times_ns) - 1), column])
        if real < 0 or real <= row - max_age_bars:
            return None
        return self._decimals_of(instrument_id)[real]

    def _decimals_of(self, instrument_id: int) -> dict[int, Decimal]:
        """Grid row -> the close as stored (Decimal), loaded per instrument on first use (only traded legs)."""
        if instrument_id not in self._decimals:
            rows = Candle.objects.filter(
                instrument_id=instrument_id, timeframe=self.timeframe,
                open_time__gte=_from_ns(self._first_ns), open_time__lte=_from_ns(self._last_ns),
            ).values_list("open_time", "close")  # fmt: skip
            self._decimals[instrument_id] = {(_ns(t) - self._first_ns) // self._step_ns: c for t, c in rows}
        return self._decimals[instrument_id]


def _from_ns(value: int) -> datetime:
    return pd.Timestamp(value, unit="ns", tz="UTC").to_pydatetime()


class ReplayFeed:
    """The bots' ``PriceFeed`` in a replay: each instrument's newest closed bar as of the replay clock (open time +
    timeframe <= now), at most ``MAX_PRICE_AGE_BARS`` old, as ``StoredCandleFeed`` answers live; the close is the
    stored Decimal."""

    def __init__(self, market: ReplayMarket, clock: ReplayClock, *, max_age_bars: int = MAX_PRICE_AGE_BARS):
        self._market = market
        self._clock = clock
        self._max_age_bars = max_age_bars

    def closes(self, instrument_ids: Iterable[int]) -> dict[int, Decimal]:
        market = self._market
        newest_open = self._clock.now - timedelta(milliseconds=timeframe_ms(market.timeframe))
        row = market.row_at_or_before(newest_open)
        prices = {}
        for instrument_id in set(instrument_ids):
            price = market.close_at(instrument_id, row, self._max_age_bars)
            if price is not None:
                prices[instrument_id] = price
        return prices


# ------------------------------------------------------------------------------------------------------ the account


def replay_account(*, config: SelectionConfig, name: str = DEFAULT_ACCOUNT_NAME) -> ExchangeAccount:
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


def _check_account(account: ExchangeAccount, config: SelectionConfig) -> None:
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
    """Disable the account's live bot and start its simulated exchange afresh (it has no trades: checked)."""
    if account.enabled:
        account.enabled = False  # the live beat must not tick it in between the replay's own ticks
        account.save(update_fields=["enabled", "updated_at"])
    # No trades, so nothing the bot knows of lives there: start the simulated exchange afresh from the capital.
    PaperOrder.objects.filter(account=account).delete()
    PaperPosition.objects.filter(account=account).delete()
    PaperFunding.objects.filter(account=account).delete()
    PaperAccount.objects.filter(account=account).delete()
    BotHeartbeat.objects.filter(account=account).delete()
    return ExchangeAccount.objects.select_related("level").get(pk=account.pk)


# ------------------------------------------------------------------------------------------------------- the range


def _candles(config: SelectionConfig):
    return Candle.objects.filter(instrument__exchange=config.exchange, timeframe=config.timeframe)


def history_bars_needed(config: SelectionConfig) -> int:
    """Bars a selection step reads: the screening window, the out-of-sample window before it, and the z-score
    window that the out-of-sample backtest's first bar is fitted on."""
    return config.lookback_bars + config.backtest_oos_bars + config.zscore_window_bars


def replay_default_range(config: SelectionConfig) -> tuple[datetime, datetime]:
    """(first bar with the full history of ``history_bars_needed`` behind it, last stored bar) as open times.
    ReplayError when no candle is stored or the history is too short for a single step."""
    bounds = _candles(config).aggregate(first=Min("open_time"), last=Max("open_time"))
    if bounds["first"] is None:
        raise ReplayError(
            f"no {config.timeframe} candles of {config.exchange} are stored: import them first "
            "(python manage.py import_candles DIR)"
        )
    step = timedelta(milliseconds=timeframe_ms(config.timeframe))
    start = bounds["first"] + step * (history_bars_needed(config) - 1)
    if start > bounds["last"]:
        raise ReplayError(
            f"the stored candles ({_iso(bounds['first'])} to {_iso(bounds['last'])}) are shorter than the "
            f"{history_bars_needed(config)} bars one selection step needs (lookback {config.lookback_bars} + "
            f"out of sample {config.backtest_oos_bars} + z-score window {config.zscore_window_bars})"
        )
    return start, bounds["last"]


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

    @property
    def end_equity(self) -> Decimal:
        return self.equity[-1][1] if self.equity else self.start_equity

    def trades(self) -> list[dict]:
        return replay_trades(account=self.account)

    def as_json(self) -> dict:
        trades = self.trades()
        return {
            "summary": replay_summary(trades=trades, start_equity=self.start_equity, equity=self.equity),
            "trades": trades,
        }


def replay_run(
    *,
    start: datetime,
    end: datetime,
    config: SelectionConfig,
    account: ExchangeAccount | None = None,
    reselect_every: timedelta | None = DEFAULT_RESELECT_EVERY,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Replay the bars with open time in [start, end], trimmed to the stored candles (see the module docstring).
    ``reselect_every`` None (or zero) trades the pairs already in the database without any selection;
    ``progress(done, total)`` is called after each bar."""
    started = time.monotonic()
    step = timedelta(milliseconds=timeframe_ms(config.timeframe))
    start, end = _floor_to_bar(start, step), _floor_to_bar(end, step)
    if start > end:
        raise ReplayError(f"the start {_iso(start)} is after the end {_iso(end)}")
    stored = (
        _candles(config)
        .filter(open_time__gte=start, open_time__lte=end)
        .aggregate(first=Min("open_time"), last=Max("open_time"))
    )
    if stored["first"] is None:
        raise ReplayError(f"no {config.timeframe} candles of {config.exchange} between {_iso(start)} and {_iso(end)}")
    start, end = stored["first"], stored["last"]  # no bars to tick before the first candle or after the last
    account = account or ExchangeAccount.objects.filter(name=DEFAULT_ACCOUNT_NAME).first()
    if account is not None:
        _check_account(account, config)
    reselect_every = reselect_every or None
    pairs = Pair.objects.filter(timeframe=config.timeframe, y_instrument__exchange=config.exchange)
    if reselect_every is not None and pairs.exists():
        raise ReplayError(
            f"the database already holds {pairs.count()} pair(s): the replay selects its pairs walk-forward, and "
            "pairs chosen on later data would be look-ahead. Replay on a database with candles only (or without "
            "reselection, to trade the pairs as they are)"
        )
    ahead = SignalState.objects.filter(pair__in=pairs, last_bar_time__gte=start).count()
    if ahead:
        raise ReplayError(f"{ahead} pair(s) have signals at or after {_iso(start)}: their rule can't be replayed")
    account = _prepare_account(account or replay_account(config=config))

    instruments = {i.pk: i for i in universe_instruments(config=config)}
    for pair in pairs.select_related("y_instrument", "x_instrument"):
        instruments.setdefault(pair.y_instrument_id, pair.y_instrument)
        instruments.setdefault(pair.x_instrument_id, pair.x_instrument)
    # The signals read up to zscore_window_bars + 1 + MAX_CATCH_UP_BARS bars before the clock; the feed 3.
    first = start - step * (config.zscore_window_bars + MAX_CATCH_UP_BARS + 1)
    market = ReplayMarket(timeframe=config.timeframe, first=first, last=end, instruments=instruments.values())
    clock = ReplayClock(start)  # before the first bar: the bar before ``start`` has just closed
    feed = ReplayFeed(market, clock)
    exchange = paper_exchange_for(account, price_of=SymbolPrices(feed, exchange=account.exchange),
                                  now=lambda: clock.now, config=config)  # fmt: skip
    start_equity = exchange.balance().equity  # opens the paper wallet with the capital at the clock
    result = ReplayResult(account=account, start=start, end=end, bars=0, start_equity=start_equity, equity=[])
    owner = f"replay:{uuid.uuid4().hex[:12]}"
    total = (end - start) // step + 1
    last_selection: datetime | None = None
    active: list[Pair] | None = None  # the signals' pairs, kept between bars until a selection changes them
    try:
        for index in range(total):
            bar = start + step * index
            clock.now = bar + step
            with transaction.atomic():
                if reselect_every is not None and (last_selection is None or bar - last_selection >= reselect_every):
                    _select(config, bar, result)
                    last_selection = bar
                    active = None
                if active is None or any(_unsaved_state(p) for p in active):
                    active = signal_pairs(config)
                signals_update(config=config, end=bar, prices=market, pairs=active)
                report = bot_tick(account=account, exchange=exchange, feed=feed, now=clock.now, config=config,
                                  owner=owner, require_enabled=False, sleep=_no_sleep,
                                  reconcile_every=REPLAY_RECONCILE_EVERY)  # fmt: skip
                result.equity.append((clock.now, exchange.balance().equity))
            result.tick_statuses[report.status] = result.tick_statuses.get(report.status, 0) + 1
            if report.status != "ok":
                logger.warning("replay tick at %s: %s %s", _iso(clock.now), report.status, report.error)
            result.bars += 1
            if progress is not None:
                progress(index + 1, total)
    finally:
        lease_release(account, owner)
        result.seconds = time.monotonic() - started
    return result


def _select(config: SelectionConfig, bar: datetime, result: ReplayResult) -> None:
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


# ------------------------------------------------------------------------------------------------ JSON and summary


LEG_ACTIONS = {"open": "open", "complete": "open", "close": "close", "unwind": "close"}


def replay_trades(*, account: ExchangeAccount) -> list[dict]:
    """Every trade of the account, in the order they were planned, as the replay JSON lists them.

    ``pnl`` is the trade's realised PnL (net of fees and funding; null until the trade is closed or unwound),
    ``fees`` and ``funding`` its columns; ``legs`` every fill of every order, oldest first, with ``action`` "open"
    (open and complete orders) or "close" (close and unwind orders). Decimals are strings, times ISO 8601 UTC.
    """
    trades = list(
        PairTrade.objects.filter(account=account).select_related("pair__y_instrument", "pair__x_instrument")
        .order_by("pk")
    )  # fmt: skip
    legs: dict[int, list[dict]] = {t.pk: [] for t in trades}
    fills = (
        Fill.objects.filter(order__trade__account=account)
        .order_by("filled_at", "order_id", "pk")
        .values_list("order__trade_id", "order__instrument__symbol", "order__action", "order__side", "qty", "price",
                     "fee")
    )  # fmt: skip
    for trade_id, symbol, action, side, qty, price, fee in fills:
        legs[trade_id].append({"symbol": symbol, "action": LEG_ACTIONS[action], "side": side, "qty": _plain(qty),
                               "price": _plain(price), "fee": _plain(fee)})  # fmt: skip
    return [
        {
            "y": t.pair.y_instrument.symbol,
            "x": t.pair.x_instrument.symbol,
            "side": t.side,
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


def replay_summary(*, trades: list[dict], start_equity: Decimal, equity: list[tuple[datetime, Decimal]]) -> dict:
    """The replay's figures.

    - ``total_trades``, ``win_rate``, ``profit_factor``: over the trades with a PnL, which are the finished ones:
      closed and unwound (an unwound trade is a real result of trading the pair, so it counts); trades still open
      at the end, trades that failed to open (nothing was held) and trades closed by reconciliation have none and
      are left out. A win is a PnL > 0; the profit factor is null with no losing trade (or no trade): JSON has no
      infinity.
    - ``total_return`` = end equity / start equity - 1; ``start_equity`` is the paper wallet before the first bar,
      ``end_equity`` the equity (wallet + unrealised PnL of what is still open) after the last.
    - ``max_drawdown``: the largest fall from a running peak of the per-bar equity curve, negative (-0.0436 is
      4.36 %).
    - ``sharpe``: daily equity returns (the equity after the last bar of each UTC day, the bar's open time deciding
      the day, starting from the start equity), mean over standard deviation, times sqrt(365); null with fewer than
      two days or no dispersion.
    Money is a string (a Decimal), ratios are numbers.
    """
    pnls = [float(Decimal(t["pnl"])) for t in trades if t["pnl"] is not None]
    metrics = trade_metrics(pnls)
    end_equity = equity[-1][1] if equity else start_equity
    curve = [float(start_equity)] + [float(e) for _, e in equity]
    profit_factor = metrics.profit_factor if metrics.profit_factor is not None else None
    if profit_factor is not None and not math.isfinite(profit_factor):
        profit_factor = None
    return {
        "total_trades": metrics.trades,
        "win_rate": metrics.win_rate,
        "profit_factor": profit_factor,
        "total_return": float(end_equity / start_equity - 1) if start_equity else None,
        "max_drawdown": 0.0 - max_drawdown(curve),
        "sharpe": sharpe_ratio(equity_returns_daily(start_equity, equity), DAYS_PER_YEAR),
        "start_equity": _plain(start_equity),
        "end_equity": _plain(end_equity),
    }


def equity_returns_daily(start_equity: Decimal, equity: list[tuple[datetime, Decimal]]) -> np.ndarray:
    """Simple returns between the equities after the last bar of each UTC day, the first from the start equity.
    A bar's day is that of its open time, which is the day of its close (the clock) minus a microsecond."""
    closing: dict = {}
    for clock, value in equity:
        closing[(clock - timedelta(microseconds=1)).date()] = float(value)
    curve = np.array([float(start_equity), *closing.values()])
    if curve.size < 2:
        return np.empty(0)
    return curve[1:] / curve[:-1] - 1.0
