"""Vectorised backtest of the spread rule over many pairs. Pure: numpy only, no Django, no ccxt.

The rule (``pairs.quant.spread_rule.step``) is advanced bar by bar over all pairs at once (``run_rule``); it does
not look at prices, so the trades are then read off the action matrix and priced in one vectorised pass, and the
statistics come from ``pairs.quant.performance`` (the definitions the replay and the dashboard share).

Conventions
- Bars and times: ``times[t]`` is the OPEN time of bar t (datetime64 or epoch milliseconds, UTC), as candles are
  stored; the bar closes at ``times[t] + bar_ms`` (``bar_ms`` inferred from the median spacing unless given).
  Every decision and fill happens at a bar's close price, at its close time.
- Sizing: per trade the y leg gets notional 1 (one unit of quote currency, so PnL is a fraction of it) and the x
  leg notional ``|beta|``, beta being the hedge ratio of the entry bar. Quantities are fixed at entry:
  ``qty_y = 1 / y_entry``, ``qty_x = |beta| / x_entry``. Long spread = long y and short beta x: short x when
  beta > 0, long x when beta < 0 (both legs on the same side); short spread is the mirror. beta = 0 has no x leg.
- Gross PnL: the legs' price changes times their signed quantities, entry close to exit close.
- Fees and slippage: four fills per trade (entry and exit of each leg), each costing ``taker_fee`` and
  ``slippage`` times its notional (entry fills: 1 and |beta|; exit fills: qty times the exit price).
- Funding: a settlement at time s (every ``funding_interval_minutes``, aligned to ``funding_offset_minutes`` after
  00:00 UTC; by default 00:00, 08:00, 16:00) is paid by a position entered at close time c_e and exited at c_x iff
  ``c_e < s <= c_x``: a position opened exactly at a settlement does not pay it, one closed exactly at a
  settlement does. A settlement in (close of bar k-1, close of bar k] is settled at bar k's close price (exact
  for hourly bars, whose closes fall on the settlement times). Each leg pays ``rate * qty * price`` if long and
  receives it if short (a positive rate: longs pay shorts). The rate is the leg's per-bar rate array
  (``funding_rate_y``/``funding_rate_x``, the rate of the settlements attributed to that bar; NaN or no array
  means ``costs.funding_rate``).
- Net PnL = gross - fees - slippage + funding (funding signed: negative when paid). Trade return = net PnL /
  gross entry notional ``1 + |beta|``.
- End of data: no entry is taken on the last bar (it could not be held); a position still open after the rule
  has run on the last bar is closed at the last bar's close with reason ``end_of_data``, charged like any exit.
  So every entry has exactly one close.
- Equity (per pair, per bar, mark-to-market): ``1 + sum of the returns of closed trades + the open trade's
  unrealised return`` (price change net of the entry fills' costs and the funding settled so far; the exit
  fills are charged on the exit bar). Returns add up: each trade has the same size (y notional 1), nothing is
  reinvested.
- Statistics per pair (``pair_statistics``), all from net trade returns: trades, win_rate, profit_factor,
  expectancy, mean_return as ``performance.trade_metrics``; total_return = the SUM of trade returns (fixed size,
  not compounded); max_drawdown of the trade-level equity ``[1, 1 + r1, 1 + r1 + r2, ...]``; sharpe and sortino
  of the DAILY returns of the mark-to-market equity (sampled at the last bar of each UTC day of the bars' open
  times, after a starting value of 1), annualised with sqrt(365) (crypto trades every day); avg_holding_bars =
  mean of exit bar - entry bar. ``None`` where undefined (no trades, fewer than two days, no dispersion).
- Inputs: prices must be finite and positive everywhere (forward-fill gaps; slice off bars before a listing).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

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

    def __post_init__(self) -> None:
        if self.taker_fee < 0 or self.slippage < 0:
            raise ValueError("fees and slippage cannot be negative")
        if not math.isfinite(self.funding_rate):
            raise ValueError("funding_rate must be finite")
        if int(self.funding_interval_minutes) != self.funding_interval_minutes or self.funding_interval_minutes <= 0:
            raise ValueError("funding_interval_minutes must be a positive integer")
        if int(self.funding_offset_minutes) != self.funding_offset_minutes:
            raise ValueError("funding_offset_minutes must be an integer")


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
) -> BacktestResult:
    """Backtest the rule on M pairs over T bars; see the module docstring for every convention.

    ``prices_y``, ``prices_x``, ``z``: (T, M) closes and z-scores (1-D for a single pair).
    ``hedge_ratio_per_bar``: (T, M), or (M,) / scalar for fixed coefficients; only the entry bar's value is used.
    ``max_holding_bars``: per pair (M,) or one value, in bars (``spread_rule.max_holding_bars`` converts from
    half-lives); ``inf`` for no limit. ``times``: (T,) bar open times.
    """
    prices_y, prices_x, z, hedge, funding_rate_y, funding_rate_x = _as_pair_matrices(
        prices_y, prices_x, z, hedge_ratio_per_bar, funding_rate_y, funding_rate_x
    )
    n_bars, n_pairs = prices_y.shape
    open_ms, bar_ms = _bar_times(times, n_bars, bar_ms)

    actions, final_state = run_rule(z, params, max_holding_bars=max_holding_bars, entries_on_last_bar=False)
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
    entry_y = prices_y[entry_bar, entry_pair]
    entry_x = prices_x[entry_bar, entry_pair]
    exit_y = prices_y[close_bar, close_pair]
    exit_x = prices_x[close_bar, close_pair]
    qty_y = side / entry_y
    qty_x = -side * beta / entry_x  # notional |beta|, on the side opposite y when beta > 0
    gross_notional = 1.0 + np.abs(beta)
    fill_notional = gross_notional + np.abs(qty_y) * exit_y + np.abs(qty_x) * exit_x
    fees = costs.taker_fee * fill_notional
    slippage = costs.slippage * fill_notional
    gross_pnl = qty_y * (exit_y - entry_y) + qty_x * (exit_x - entry_x)

    settlements = settlements_per_bar(open_ms, bar_ms, costs) if n_bars else np.zeros(0, dtype=np.int64)
    funding_y_cum = _funding_cumulative(prices_y, funding_rate_y, settlements, costs.funding_rate)
    funding_x_cum = _funding_cumulative(prices_x, funding_rate_x, settlements, costs.funding_rate)
    funding_y = -qty_y * (funding_y_cum[close_bar, close_pair] - funding_y_cum[entry_bar, entry_pair])
    funding_x = -qty_x * (funding_x_cum[close_bar, close_pair] - funding_x_cum[entry_bar, entry_pair])
    funding = funding_y + funding_x
    net_pnl = gross_pnl - fees - slippage + funding
    returns = net_pnl / gross_notional
    bars_held = close_bar - entry_bar

    trades = Trades(
        pair=entry_pair, entry_bar=entry_bar, exit_bar=close_bar, side=side,
        exit_reason=actions[close_bar, close_pair], hedge_ratio=beta, qty_y=qty_y, qty_x=qty_x,
        entry_price_y=entry_y, entry_price_x=entry_x, exit_price_y=exit_y, exit_price_x=exit_x,
        gross_pnl=gross_pnl, fees=fees, slippage=slippage, funding_y=funding_y, funding_x=funding_x,
        funding=funding, net_pnl=net_pnl, ret=returns, bars_held=bars_held,
    )

    # Mark-to-market equity: realised returns step in on exit bars; open trades add their unrealised return.
    realised = np.zeros((n_bars, n_pairs))
    realised[close_bar, close_pair] = returns
    equity = 1.0 + np.cumsum(realised, axis=0)
    marker = np.zeros((n_bars, n_pairs), dtype=np.int32)
    trade_number = np.arange(1, len(trades) + 1, dtype=np.int32)
    marker[entry_bar, entry_pair] = trade_number
    marker[close_bar, close_pair] = -trade_number
    open_trade = np.cumsum(marker, axis=0) - 1  # trade index on bars entry..exit-1, else -1
    rows, cols = np.nonzero(open_trade >= 0)
    k = open_trade[rows, cols]
    entry_costs = (costs.taker_fee + costs.slippage) * gross_notional
    unrealised = (
        qty_y[k] * (prices_y[rows, cols] - entry_y[k])
        + qty_x[k] * (prices_x[rows, cols] - entry_x[k])
        - qty_y[k] * (funding_y_cum[rows, cols] - funding_y_cum[entry_bar[k], cols])
        - qty_x[k] * (funding_x_cum[rows, cols] - funding_x_cum[entry_bar[k], cols])
        - entry_costs[k]
    ) / gross_notional[k]
    equity[rows, cols] += unrealised

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
