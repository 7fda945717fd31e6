"""Vectorised backtest of the spread rule over many pairs. Pure: numpy only, no Django, no ccxt.

The rule (``pairs.quant.spread_rule.step``) is advanced bar by bar over all pairs at once (``run_rule``); it does
not look at prices, so the trades are then read off the action matrix and priced in one vectorised pass, and the
statistics come from ``pairs.quant.performance`` (the definitions the replay and the dashboard share).

Conventions
- Bars and times: ``times[t]`` is the OPEN time of bar t (datetime64 or epoch milliseconds, UTC), as candles are
  stored; the bar closes at ``times[t] + bar_ms`` (``bar_ms`` inferred from the median spacing unless given).
  Every decision is taken on a bar's close (the rule reads bar t's z-score, known at bar t's close).
- Fills (``pairs.quant.fills``, the model the replay and paper trading share): a decision on bar t fills at the
  OPEN of bar ``t + 1 + execution_delay_bars`` (``opens_y``/``opens_x``; where no open is given, the previous
  bar's close). Its fill time is that bar's open time, i.e. the close time of the *reference bar*
  ``r = t + execution_delay_bars``; funding and mark-to-market count from there. No entry is taken on a bar whose
  entry would fill after the last bar's open (it could not be held); a close decided when no later open
  exists, and a position still open after the last bar, are filled at the last bar's close (the latter with
  reason ``end_of_data``). So every entry has exactly one close.
- Sizing: per trade the y leg gets notional 1 (one unit of quote currency, so PnL is a fraction of it) and the x
  leg notional ``|beta|``, beta being the hedge ratio of the entry's signal bar. Quantities are fixed at entry:
  ``qty_y = 1 / y_entry``, ``qty_x = |beta| / x_entry`` (entry prices are the fill bar's opens). Long spread =
  long y and short beta x: short x when beta > 0, long x when beta < 0 (both legs on the same side); short
  spread is the mirror. beta = 0 has no x leg.
- Gross PnL: the legs' price changes times their signed quantities, entry fill price to exit fill price.
- Fees and slippage: four fills per trade (entry and exit of each leg), each costing ``taker_fee`` and its
  slippage fraction times its notional (entry fills: 1 and |beta|; exit fills: qty times the exit price). The
  slippage fraction of a fill is ``slippage_y``/``slippage_x`` at its reference bar (``Costs.slippage_fractions``:
  ``costs.slippage`` fixed plus ``slippage_factor`` times the bar's relative range or volume share), or
  ``costs.slippage`` when no matrix is given.
- Funding: a settlement at time s (every ``funding_interval_minutes``, aligned to ``funding_offset_minutes`` after
  00:00 UTC; by default 00:00, 08:00, 16:00) is paid by a position filled in at time c_e and out at c_x iff
  ``c_e < s <= c_x``: a position opened exactly at a settlement does not pay it, one closed exactly at a
  settlement does. A settlement in (close of bar k-1, close of bar k] is settled at bar k's close price (exact
  for hourly bars, whose closes fall on the settlement times). Each leg pays ``rate * qty * price`` if long and
  receives it if short (a positive rate: longs pay shorts). The rate is the leg's per-bar rate array
  (``funding_rate_y``/``funding_rate_x``, the rate of the settlements attributed to that bar; NaN or no array
  means ``costs.funding_rate``).
- Net PnL = gross - fees - slippage + funding (funding signed: negative when paid). Trade return = net PnL /
  gross entry notional ``1 + |beta|``.
- Equity (per pair, per bar, mark-to-market): ``1 + sum of the returns of closed trades + the open trade's
  unrealised return`` (price change net of the entry fills' costs and the funding settled so far; the exit
  fills are charged on the exit bar). Returns add up: each trade has the same size (y notional 1), nothing is
  reinvested. Bar k's equity is marked at bar k's close; the position counts from its entry's reference bar on.
- Statistics per pair (``pair_statistics``), all from net trade returns: trades, win_rate, profit_factor,
  expectancy, mean_return as ``performance.trade_metrics``; total_return = the SUM of trade returns (fixed size,
  not compounded); max_drawdown of the trade-level equity ``[1, 1 + r1, 1 + r1 + r2, ...]``; sharpe and sortino
  of the DAILY returns of the mark-to-market equity (sampled at the last bar of each UTC day of the bars' open
  times, after a starting value of 1), annualised with sqrt(365) (crypto trades every day); avg_holding_bars =
  mean of ``bars_held`` (exit reference bar - entry reference bar). ``None`` where undefined (no trades, fewer
  than two days, no dispersion).
- Inputs: prices must be finite and positive everywhere (forward-fill gaps; slice off bars before a listing).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from pairs.quant.fills import SlippageModel, check_delay
from pairs.quant.performance import equity_returns, max_drawdown, sharpe_ratio, sortino_ratio, trade_metrics
from pairs.quant.spread_rule import ACTION_LABELS, Action, RuleParams, run_rule

MS_PER_MINUTE = 60_000
MS_PER_DAY = 86_400_000
DAYS_PER_YEAR = 365


@dataclass(frozen=True)
class Costs:
    """Trading costs per fill and funding (Bybit linear perpetuals, VIP0 taker, see docs/bybit-ccxt-notes.md)."""

    taker_fee: float = 0.00055
    slippage: float = 0.0002
    funding_rate: float = 0.0001
    funding_interval_minutes: int = 480
    funding_offset_minutes: int = 0
    # The variable part of the slippage (``pairs.quant.fills``): 0 keeps only the fixed ``slippage``.
    slippage_model: str = "range"
    slippage_factor: float = 0.0
    slippage_reference_notional: float = 500.0

    def __post_init__(self) -> None:
        if self.taker_fee < 0 or self.slippage < 0:
            raise ValueError("fees and slippage cannot be negative")
        self.slippage_rule()  # checks the slippage model's settings
        if not math.isfinite(self.funding_rate):
            raise ValueError("funding_rate must be finite")
        if int(self.funding_interval_minutes) != self.funding_interval_minutes or self.funding_interval_minutes <= 0:
            raise ValueError("funding_interval_minutes must be a positive integer")
        if int(self.funding_offset_minutes) != self.funding_offset_minutes:
            raise ValueError("funding_offset_minutes must be an integer")

    def slippage_rule(self) -> SlippageModel:
        """The slippage per fill: ``slippage`` fixed plus ``slippage_factor`` times the model's variable part."""
        return SlippageModel(fixed=self.slippage, model=self.slippage_model, factor=self.slippage_factor,
                             reference_notional=self.slippage_reference_notional)

    def slippage_fractions(self, opens, highs=None, lows=None, turnover=None) -> np.ndarray:
        """Per bar (and pair), the slippage fraction of a fill whose reference bar is that bar, for ``backtest``'s
        ``slippage_y``/``slippage_x``; ValueError when the model's variable part needs a column not given."""
        rule = self.slippage_rule()
        if rule.factor and rule.model == "range" and (highs is None or lows is None):
            raise ValueError("the range slippage model needs the bars' highs and lows")
        if rule.factor and rule.model == "volume" and turnover is None:
            raise ValueError("the volume slippage model needs the bars' turnover (quote volume)")
        return rule.fraction(opens, highs, lows, turnover)


@dataclass(frozen=True)
class Trades:
    """Closed trades as columns (one entry per trade), ordered by pair, then entry bar.

    ``side``: +1 long spread, -1 short spread; ``exit_reason``: an ``Action`` code (exit, stop, max_holding,
    end_of_data); ``qty_y``/``qty_x``: signed quantities (positive = long); money columns in quote currency for a
    y notional of 1; ``funding_y``/``funding_x``: received (+) or paid (-) per leg, ``funding`` their sum.
    """

    pair: np.ndarray
    entry_bar: np.ndarray
    exit_bar: np.ndarray
    side: np.ndarray
    exit_reason: np.ndarray
    hedge_ratio: np.ndarray
    qty_y: np.ndarray
    qty_x: np.ndarray
    entry_price_y: np.ndarray
    entry_price_x: np.ndarray
    exit_price_y: np.ndarray
    exit_price_x: np.ndarray
    gross_pnl: np.ndarray
    fees: np.ndarray
    slippage: np.ndarray
    funding_y: np.ndarray
    funding_x: np.ndarray
    funding: np.ndarray
    net_pnl: np.ndarray
    ret: np.ndarray
    bars_held: np.ndarray
    # When the fills happened (epoch ms: the fill bar's open time, or the last bar's close for a fill at the end of
    # the data) and the slippage fraction each leg's fill was charged (``pairs.quant.fills``).
    entry_fill_ms: np.ndarray
    exit_fill_ms: np.ndarray
    entry_slippage_y: np.ndarray
    entry_slippage_x: np.ndarray
    exit_slippage_y: np.ndarray
    exit_slippage_x: np.ndarray

    def __len__(self) -> int:
        return len(self.pair)

    def select(self, rows: slice | np.ndarray) -> Trades:
        return Trades(**{spec.name: getattr(self, spec.name)[rows] for spec in fields(self)})

    def records(self) -> list[dict]:
        """One dict per trade with plain Python values; side as "long"/"short", exit_reason as its label."""
        columns = {spec.name: getattr(self, spec.name).tolist() for spec in fields(self)}
        rows = [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]
        for row in rows:
            row["side"] = "long" if row["side"] > 0 else "short"
            row["exit_reason"] = ACTION_LABELS[row["exit_reason"]]
        return rows


@dataclass(frozen=True)
class BacktestStatistics:
    """One pair's statistics (the fields of ``pairs.models.PairStatistics``); see the module conventions."""

    trades: int
    win_rate: float | None
    profit_factor: float | None
    total_return: float
    mean_return: float | None
    max_drawdown: float
    sharpe: float | None
    sortino: float | None
    expectancy: float | None
    avg_holding_bars: float | None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BacktestResult:
    """``trades`` of all pairs (ordered by pair), ``actions`` and mark-to-market ``equity`` (T, M), and one
    ``BacktestStatistics`` per pair."""

    trades: Trades
    actions: np.ndarray
    equity: np.ndarray
    statistics: list[BacktestStatistics]

    def trades_of(self, pair: int) -> Trades:
        start, stop = np.searchsorted(self.trades.pair, [pair, pair + 1])
        return self.trades.select(slice(int(start), int(stop)))


def pair_statistics(
    returns: np.ndarray,
    bars_held: np.ndarray,
    daily_equity: np.ndarray,
    *,
    periods_per_year: float = DAYS_PER_YEAR,
) -> BacktestStatistics:
    """Statistics of one pair from its net trade returns (in order), holding bars and daily equity values.

    ``daily_equity`` starts with the starting equity 1 (see the module conventions).
    """
    returns = np.asarray(returns, dtype=np.float64)
    metrics = trade_metrics(returns)
    daily_returns = equity_returns(daily_equity)
    return BacktestStatistics(
        trades=metrics.trades,
        win_rate=metrics.win_rate,
        profit_factor=metrics.profit_factor,
        total_return=metrics.total,
        mean_return=metrics.mean,
        max_drawdown=max_drawdown(np.concatenate(([1.0], 1.0 + np.cumsum(returns)))),
        sharpe=sharpe_ratio(daily_returns, periods_per_year),
        sortino=sortino_ratio(daily_returns, periods_per_year),
        expectancy=metrics.expectancy,
        avg_holding_bars=float(np.mean(bars_held)) if len(bars_held) else None,
    )


def times_to_ms(times: np.ndarray) -> np.ndarray:
    """datetime64 (any unit) or epoch milliseconds as int64 epoch milliseconds."""
    values = np.asarray(times)
    if np.issubdtype(values.dtype, np.datetime64):
        return values.astype("datetime64[ms]").astype(np.int64)
    return values.astype(np.int64)


def settlements_per_bar(open_ms: np.ndarray, bar_ms: int, costs: Costs) -> np.ndarray:
    """Number of funding settlements attributed to each bar: those in (close of the previous bar, this close]."""
    close = open_ms + bar_ms
    previous_close = np.concatenate(([open_ms[0]], close[:-1]))
    interval = int(costs.funding_interval_minutes) * MS_PER_MINUTE
    offset = int(costs.funding_offset_minutes) * MS_PER_MINUTE
    return (close - offset) // interval - (previous_close - offset) // interval


def _as_matrix(values, n_bars: int, n_pairs: int, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    try:
        return np.broadcast_to(array, (n_bars, n_pairs))
    except ValueError:
        raise ValueError(f"{name} of shape {array.shape} does not fit ({n_bars}, {n_pairs})") from None


def _funding_cumulative(prices: np.ndarray, rates, settlements: np.ndarray, default_rate: float) -> np.ndarray:
    """Running sum over bars of settlements * rate * price (per unit held long), shape (T, M)."""
    n_bars, n_pairs = prices.shape
    if rates is None:
        per_unit = prices * (settlements * default_rate)[:, None]
    else:
        rate = _as_matrix(rates, n_bars, n_pairs, "funding rates")
        per_unit = prices * np.where(np.isnan(rate), default_rate, rate) * settlements[:, None]
    return np.cumsum(per_unit, axis=0)


def _as_pair_matrices(prices_y, prices_x, z, hedge_ratio_per_bar, funding_rate_y, funding_rate_x):
    """The inputs as (T, M) float matrices (a single pair's 1-D series become one column), checked."""
    prices_y = np.asarray(prices_y, dtype=np.float64)
    if prices_y.ndim == 1:
        prices_y = prices_y[:, None]
        prices_x = np.asarray(prices_x, dtype=np.float64)[:, None]
        z = np.asarray(z, dtype=np.float64)[:, None]
        hedge_ratio_per_bar = np.asarray(hedge_ratio_per_bar, dtype=np.float64)
        if hedge_ratio_per_bar.ndim == 1:
            hedge_ratio_per_bar = hedge_ratio_per_bar[:, None]
        funding_rate_y = None if funding_rate_y is None else np.asarray(funding_rate_y, dtype=np.float64)[:, None]
        funding_rate_x = None if funding_rate_x is None else np.asarray(funding_rate_x, dtype=np.float64)[:, None]
    if prices_y.ndim != 2:
        raise ValueError("prices must be 1-D or (T, M)")
    n_bars, n_pairs = prices_y.shape
    prices_x = _as_matrix(prices_x, n_bars, n_pairs, "prices_x")
    z = _as_matrix(z, n_bars, n_pairs, "z")
    hedge = _as_matrix(hedge_ratio_per_bar, n_bars, n_pairs, "hedge_ratio_per_bar")
    for name, prices in (("prices_y", prices_y), ("prices_x", prices_x)):
        if not (np.isfinite(prices).all() and (prices > 0).all()):
            raise ValueError(f"{name} must be finite and positive (forward-fill gaps first)")
    return prices_y, prices_x, z, hedge, funding_rate_y, funding_rate_x


def _bar_times(times: np.ndarray, n_bars: int, bar_ms: int | None) -> tuple[np.ndarray, int]:
    """(bar open times in ms, the bar length in ms), checked: one per bar, strictly increasing."""
    open_ms = times_to_ms(times)
    if open_ms.shape != (n_bars,):
        raise ValueError("times must have one entry per bar")
    if n_bars > 1 and not (np.diff(open_ms) > 0).all():
        raise ValueError("times must be strictly increasing")
    if bar_ms is None:
        if n_bars < 2:
            raise ValueError("give bar_ms for fewer than two bars")
        bar_ms = int(np.median(np.diff(open_ms)))
    return open_ms, bar_ms


def backtest(
    prices_y: np.ndarray,
    prices_x: np.ndarray,
    z: np.ndarray,
    hedge_ratio_per_bar: np.ndarray,
    params: RuleParams,
    costs: Costs,
    times: np.ndarray,
    funding_rate_y: np.ndarray | None = None,
    funding_rate_x: np.ndarray | None = None,
    *,
    max_holding_bars: float | np.ndarray = np.inf,
    bar_ms: int | None = None,
    opens_y: np.ndarray | None = None,
    opens_x: np.ndarray | None = None,
    slippage_y: np.ndarray | None = None,
    slippage_x: np.ndarray | None = None,
    execution_delay_bars: int = 0,
) -> BacktestResult:
    """Backtest the rule on M pairs over T bars; see the module docstring for every convention.

    ``prices_y``, ``prices_x``, ``z``: (T, M) closes and z-scores (1-D for a single pair).
    ``hedge_ratio_per_bar``: (T, M), or (M,) / scalar for fixed coefficients; only the entry bar's value is used.
    ``max_holding_bars``: per pair (M,) or one value, in bars (``spread_rule.max_holding_bars`` converts from
    half-lives); ``inf`` for no limit. ``times``: (T,) bar open times.
    ``opens_y``/``opens_x``: (T, M) opens, the fill prices (None, or NaN on a bar: the previous bar's close).
    ``slippage_y``/``slippage_x``: (T, M) slippage fraction of a fill whose reference bar is that bar
    (``Costs.slippage_fractions``); None: ``costs.slippage`` on every fill. ``execution_delay_bars``: fills at
    the open of bar t + 1 + delay for a decision on bar t.
    """
    prices_y, prices_x, z, hedge, funding_rate_y, funding_rate_x = _as_pair_matrices(
        prices_y, prices_x, z, hedge_ratio_per_bar, funding_rate_y, funding_rate_x
    )
    n_bars, n_pairs = prices_y.shape
    open_ms, bar_ms = _bar_times(times, n_bars, bar_ms)
    delay = check_delay(execution_delay_bars)
    fills = _fill_inputs(prices_y, prices_x, opens_y, opens_x, slippage_y, slippage_x, costs)

    # Entries only where the fill exists (the open of bar t + 1 + delay, at the latest the last bar's: the position
    # is then held through that bar); a close decided when no bar is left to fill it at is filled at the
    # last bar's close, like a position still open at the end (``end_of_data``).
    last_entry_row = n_bars - 2 - delay
    actions, final_state = run_rule(z, params, max_holding_bars=max_holding_bars, no_entries_after=last_entry_row)
    if n_bars:
        actions[-1, final_state.position != 0] = Action.END_OF_DATA

    # Pair-major order: the k-th entry of a pair is closed by its k-th close.
    entry_pair, entry_bar = np.nonzero((actions.T == Action.ENTER_LONG) | (actions.T == Action.ENTER_SHORT))
    close_pair, close_bar = np.nonzero(actions.T >= Action.EXIT)
    if not (np.array_equal(entry_pair, close_pair) and (close_bar > entry_bar).all()):
        raise AssertionError("every entry must have exactly one later close")  # a broken rule, not bad input

    side = np.where(actions[entry_bar, entry_pair] == Action.ENTER_LONG, 1, -1).astype(np.int8)
    beta = hedge[entry_bar, entry_pair]
    if not np.isfinite(beta).all():
        raise ValueError("hedge ratio is not finite on an entry bar (z finite where the fit is not?)")
    # Fills happen at the close time of the reference bar (= the next bar's open time): ``entry_ref``/``exit_ref``.
    entry_ref = entry_bar + delay
    at_last_close = close_bar + delay + 1 > n_bars - 1
    exit_ref = np.where(at_last_close, n_bars - 1, close_bar + delay)
    open_ref = np.minimum(exit_ref, n_bars - 2)  # in range where the exit fills at the last close (not read then)
    entry_y = fills.open_y(entry_ref, entry_pair)
    entry_x = fills.open_x(entry_ref, entry_pair)
    exit_y = np.where(at_last_close, prices_y[exit_ref, close_pair], fills.open_y(open_ref, close_pair))
    exit_x = np.where(at_last_close, prices_x[exit_ref, close_pair], fills.open_x(open_ref, close_pair))
    slip = (fills.slip_y(entry_ref, entry_pair), fills.slip_x(entry_ref, entry_pair),
            fills.slip_y(exit_ref, close_pair), fills.slip_x(exit_ref, close_pair))
    qty_y = side / entry_y
    qty_x = -side * beta / entry_x  # notional |beta|, on the side opposite y when beta > 0
    gross_notional = 1.0 + np.abs(beta)
    fees = costs.taker_fee * (gross_notional + np.abs(qty_y) * exit_y + np.abs(qty_x) * exit_x)
    entry_slippage = slip[0] + slip[1] * np.abs(beta)
    slippage = entry_slippage + slip[2] * np.abs(qty_y) * exit_y + slip[3] * np.abs(qty_x) * exit_x
    gross_pnl = qty_y * (exit_y - entry_y) + qty_x * (exit_x - entry_x)

    settlements = settlements_per_bar(open_ms, bar_ms, costs) if n_bars else np.zeros(0, dtype=np.int64)
    funding_y_cum = _funding_cumulative(prices_y, funding_rate_y, settlements, costs.funding_rate)
    funding_x_cum = _funding_cumulative(prices_x, funding_rate_x, settlements, costs.funding_rate)
    funding_y = -qty_y * (funding_y_cum[exit_ref, close_pair] - funding_y_cum[entry_ref, entry_pair])
    funding_x = -qty_x * (funding_x_cum[exit_ref, close_pair] - funding_x_cum[entry_ref, entry_pair])
    funding = funding_y + funding_x
    net_pnl = gross_pnl - fees - slippage + funding
    returns = net_pnl / gross_notional
    bars_held = exit_ref - entry_ref

    trades = Trades(
        pair=entry_pair, entry_bar=entry_bar, exit_bar=close_bar, side=side,
        exit_reason=actions[close_bar, close_pair], hedge_ratio=beta, qty_y=qty_y, qty_x=qty_x,
        entry_price_y=entry_y, entry_price_x=entry_x, exit_price_y=exit_y, exit_price_x=exit_x,
        gross_pnl=gross_pnl, fees=fees, slippage=slippage, funding_y=funding_y, funding_x=funding_x,
        funding=funding, net_pnl=net_pnl, ret=returns, bars_held=bars_held,
        entry_fill_ms=open_ms[entry_ref] + bar_ms, exit_fill_ms=open_ms[exit_ref] + bar_ms,
        entry_slippage_y=slip[0], entry_slippage_x=slip[1], exit_slippage_y=slip[2], exit_slippage_x=slip[3],
    )
    equity = _equity(trades, entry_ref, exit_ref, prices_y, prices_x, (funding_y_cum, funding_x_cum),
                     costs.taker_fee * gross_notional + entry_slippage)
    # Daily samples: the last bar of each UTC day (of the open times), after the starting equity 1.
    day = open_ms // MS_PER_DAY
    day_ends = np.flatnonzero(np.append(np.diff(day) != 0, True)) if n_bars else np.zeros(0, dtype=np.int64)
    daily = np.vstack((np.ones((1, n_pairs)), equity[day_ends]))
    bounds = np.searchsorted(entry_pair, np.arange(n_pairs + 1))
    statistics = [
        pair_statistics(returns[bounds[p] : bounds[p + 1]], bars_held[bounds[p] : bounds[p + 1]], daily[:, p])
        for p in range(n_pairs)
    ]
    return BacktestResult(trades=trades, actions=actions, equity=equity, statistics=statistics)


@dataclass(frozen=True)
class _Fills:
    """The fill prices and slippage fractions, read only where trades fill (no (T, M) temporaries when not given).

    ``open_*(ref, pair)``: the open of bar ``ref + 1``, or where none is given (None, NaN) the close of bar ``ref``;
    ``slip_*(ref, pair)``: the slippage fraction of a fill whose reference bar is ``ref``."""

    prices_y: np.ndarray
    prices_x: np.ndarray
    opens_y: np.ndarray | None
    opens_x: np.ndarray | None
    slippage_y: np.ndarray | None
    slippage_x: np.ndarray | None
    fixed: float

    def open_y(self, ref: np.ndarray, pair: np.ndarray) -> np.ndarray:
        return self._open(self.opens_y, self.prices_y, ref, pair)

    def open_x(self, ref: np.ndarray, pair: np.ndarray) -> np.ndarray:
        return self._open(self.opens_x, self.prices_x, ref, pair)

    def slip_y(self, ref: np.ndarray, pair: np.ndarray) -> np.ndarray:
        return np.full(len(ref), self.fixed) if self.slippage_y is None else self.slippage_y[ref, pair]

    def slip_x(self, ref: np.ndarray, pair: np.ndarray) -> np.ndarray:
        return np.full(len(ref), self.fixed) if self.slippage_x is None else self.slippage_x[ref, pair]

    @staticmethod
    def _open(opens, closes, ref, pair) -> np.ndarray:
        previous_close = closes[ref, pair]
        if opens is None:
            return previous_close
        values = opens[ref + 1, pair]
        return np.where(np.isfinite(values) & (values > 0), values, previous_close)


def _fill_inputs(prices_y, prices_x, opens_y, opens_x, slippage_y, slippage_x, costs: Costs) -> _Fills:
    """The fill prices and slippage fractions as (T, M) matrices where given, checked."""
    n_bars, n_pairs = prices_y.shape
    checked = []
    for name, values in (("opens_y", opens_y), ("opens_x", opens_x), ("slippage_y", slippage_y),
                         ("slippage_x", slippage_x)):
        if values is None:
            checked.append(None)
            continue
        values = np.asarray(values, dtype=np.float64)
        if values.ndim == 1 and n_pairs == 1 and len(values) == n_bars:
            values = values[:, None]
        values = _as_matrix(values, n_bars, n_pairs, name)
        if name.startswith("slippage") and not (np.isfinite(values).all() and (values >= 0).all()
                                                 and (values < 1).all()):
            raise ValueError(f"{name} must be fractions in [0, 1)")
        checked.append(values)
    return _Fills(prices_y, prices_x, *checked, fixed=float(costs.slippage))


def _equity(trades: Trades, entry_ref, exit_ref, prices_y, prices_x, funding_cum, entry_costs) -> np.ndarray:
    """Mark-to-market equity (T, M): realised returns step in on the exit's reference bar; an open trade adds its
    unrealised return (at each close from its entry's reference bar on, after the entry fills' costs)."""
    n_bars, n_pairs = prices_y.shape
    entry_pair, close_pair = trades.pair, trades.pair
    funding_y_cum, funding_x_cum = funding_cum
    qty_y, qty_x = trades.qty_y, trades.qty_x
    gross_notional = 1.0 + np.abs(trades.hedge_ratio)
    realised = np.zeros((n_bars, n_pairs))
    realised[exit_ref, close_pair] = trades.ret
    equity = 1.0 + np.cumsum(realised, axis=0)
    marker = np.zeros((n_bars, n_pairs), dtype=np.int32)
    trade_number = np.arange(1, len(trades) + 1, dtype=np.int32)
    marker[entry_ref, entry_pair] = trade_number
    marker[exit_ref, close_pair] = -trade_number
    open_trade = np.cumsum(marker, axis=0) - 1  # trade index on bars entry..exit-1, else -1
    rows, cols = np.nonzero(open_trade >= 0)
    k = open_trade[rows, cols]
    unrealised = (
        qty_y[k] * (prices_y[rows, cols] - trades.entry_price_y[k])
        + qty_x[k] * (prices_x[rows, cols] - trades.entry_price_x[k])
        - qty_y[k] * (funding_y_cum[rows, cols] - funding_y_cum[entry_ref[k], cols])
        - qty_x[k] * (funding_x_cum[rows, cols] - funding_x_cum[entry_ref[k], cols])
        - entry_costs[k]
    ) / gross_notional[k]
    equity[rows, cols] += unrealised
    return equity
