"""Per-pair statistics and level grading against the database, on synthetic candles written with candles_upsert.

The universe: one random-walk leg X, two legs cointegrated with it (log Y = a + b log X + OU noise, half-life
~8.3 bars) and one independent random walk R. The Pair rows carry the "latest test" values the screen would
store: an OLS fit on the formation window (the ``LOOKBACK`` bars ending ``VALIDATION`` bars before the newest
bar), spread mean/std and half-life of its residuals; the ``VALIDATION`` bars after it are the validation window.
The reference numbers are recomputed here from the generated prices, never read from what the service stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from statsmodels.tsa.stattools import adfuller

from execution.models import Order, PairTrade
from ladder.services import pair_statistics_update
from pairs.models import Level, LevelChange, Pair, PairStatistics, StrategyConfig
from pairs.quant.backtest import Costs, backtest
from pairs.quant.spread import half_life
from pairs.quant.spread_rule import RuleParams, fixed_zscore, max_holding_bars, rolling_zscore
from pairs.services.evidence import RECENT_ADF_BARS
from pairs.services.market_data import candles_upsert
from tests.factories import ExchangeAccountFactory, FillFactory, InstrumentFactory, OrderFactory, PairTradeFactory

pytestmark = pytest.mark.django_db

LOOKBACK, VALIDATION, Z_WINDOW = 400, 400, 100
N_BARS = LOOKBACK + VALIDATION + 50  # 50 bars more than the service reads
FIRST_BAR = datetime(2021, 1, 1, tzinfo=UTC)
LAST_BAR = FIRST_BAR + timedelta(hours=N_BARS - 1)
FORMATION_END = LAST_BAR - timedelta(hours=VALIDATION)
WINDOWS = (PairStatistics.Window.IN_SAMPLE, PairStatistics.Window.VALIDATION)
COMPARED = ("trades", "win_rate", "profit_factor", "total_return", "mean_return", "max_drawdown", "sharpe",
            "sortino", "expectancy", "avg_holding_bars")


# --- synthetic market -------------------------------------------------------------------------------------------


def ou(rng: np.random.Generator, n: int, phi: float, sigma: float) -> np.ndarray:
    values = np.zeros(n)
    shocks = rng.normal(0.0, sigma, n)
    for t in range(1, n):
        values[t] = phi * values[t - 1] + shocks[t]
    return values


def synthetic_closes(seed: int = 20210101) -> pd.DataFrame:
    """Closes of X, Y1, Y2 (cointegrated with X) and R (not), rounded to 6 decimals so the database holds them
    exactly (its columns keep 12)."""
    rng = np.random.default_rng(seed)
    log_x = np.log(40.0) + np.cumsum(rng.normal(0.0, 0.01, N_BARS))
    log_y1 = 0.3 + 0.8 * log_x + ou(rng, N_BARS, phi=0.92, sigma=0.004)
    log_y2 = -0.5 + 1.2 * log_x + ou(rng, N_BARS, phi=0.92, sigma=0.005)
    log_r = np.log(15.0) + np.cumsum(rng.normal(0.0, 0.01, N_BARS))
    times = pd.date_range(FIRST_BAR, periods=N_BARS, freq="h")
    closes = pd.DataFrame({"XUSDT": log_x, "Y1USDT": log_y1, "Y2USDT": log_y2, "RUSDT": log_r}, index=times)
    return np.exp(closes).round(6)


def bars_frame(closes: pd.Series) -> pd.DataFrame:
    """OHLCV bars around the closes: open = previous close, high/low just outside both."""
    close = closes.to_numpy()
    open_ = np.concatenate([[close[0]], close[:-1]])
    return pd.DataFrame({
        "timestamp": closes.index.as_unit("ms").asi8,
        "open": open_,
        "high": np.round(np.maximum(open_, close) * 1.001, 6),
        "low": np.round(np.minimum(open_, close) * 0.999, 6),
        "close": close,
        "volume": np.full(len(close), 1000.0),
    })


def formation(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.iloc[-(LOOKBACK + VALIDATION):-VALIDATION]


def validation(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.iloc[-VALIDATION:]


def latest_test_values(closes: pd.DataFrame, y: str, x: str) -> dict:
    """What the screen stores on a pair: OLS of log y on log x over the formation window and its residuals."""
    log_y = np.log(formation(closes)[y].to_numpy())
    log_x = np.log(formation(closes)[x].to_numpy())
    hedge_ratio, intercept = np.polyfit(log_x, log_y, 1)
    spread = log_y - intercept - hedge_ratio * log_x
    return {"hedge_ratio": float(hedge_ratio), "intercept": float(intercept), "spread_mean": float(spread.mean()),
            "spread_std": float(spread.std(ddof=1)), "half_life_bars": float(half_life(spread))}


@dataclass
class Market:
    closes: pd.DataFrame
    instruments: dict
    config: StrategyConfig
    levels: dict[int, Level]

    def pair(self, y: str, x: str, *, level: int | None = 0, **overrides) -> Pair:
        values = latest_test_values(self.closes, y, x) | {"pvalue": 0.001, "qvalue": 0.01,
                                                          "status": Pair.Status.ACTIVE} | overrides
        return Pair.objects.create(
            y_instrument=self.instruments[y], x_instrument=self.instruments[x],
            level=None if level is None else self.levels[level], **values,
        )

    def write(self, closes: pd.DataFrame | None = None) -> None:
        for symbol, series in (self.closes if closes is None else closes).items():
            candles_upsert(instrument=self.instruments[symbol], timeframe="1h", candles=bars_frame(series))


def small_config() -> StrategyConfig:
    config = StrategyConfig.current()
    config.exchange = "bybit"
    config.lookback_bars, config.validation_bars, config.zscore_window_bars = LOOKBACK, VALIDATION, Z_WINDOW
    # Entries at |z| >= 1.5 give the short synthetic windows enough trades (about ten per window) for the ladder.
    config.entry_z = 1.5
    config.save()
    return config


def make_market() -> Market:
    closes = synthetic_closes()
    instruments = {s: InstrumentFactory(exchange="bybit", symbol=s, base=s[:-4]) for s in closes.columns}
    market = Market(closes, instruments, small_config(), {level.number: level for level in Level.objects.all()})
    market.write()
    return market


@pytest.fixture
def market() -> Market:
    return make_market()


def rule_and_costs(config: StrategyConfig) -> tuple[RuleParams, Costs]:
    return (
        RuleParams(entry_z=config.entry_z, exit_z=config.exit_z, stop_z=config.stop_z,
                   max_holding_half_lives=config.max_holding_half_lives, cooldown_bars=config.cooldown_bars),
        Costs(taker_fee=config.taker_fee, slippage=config.slippage, funding_rate=config.default_funding_rate,
              slippage_model=config.slippage_model, slippage_factor=config.slippage_factor),
    )


def reference_backtest(market: Market, pair: Pair, part):
    """A backtest recomputed from the generated prices on ``part`` of them: ``formation`` with the pair's stored
    (formation) coefficients frozen, ``validation`` as the bots trade, with the rolling fit of the Z_WINDOW bars
    before each bar (``rolling_zscore``, the live signals' function, on the bars before the part and the part)."""
    window = part(market.closes)
    y, x = window[pair.y_instrument.symbol].to_numpy(), window[pair.x_instrument.symbol].to_numpy()
    if part is validation:
        with_warmup = market.closes.iloc[-(Z_WINDOW + VALIDATION):]
        rolling = rolling_zscore(np.log(with_warmup[pair.y_instrument.symbol].to_numpy()),
                                 np.log(with_warmup[pair.x_instrument.symbol].to_numpy()), Z_WINDOW)
        z, hedge = rolling.zscore[Z_WINDOW:], rolling.hedge_ratio[Z_WINDOW:]
    else:
        z = fixed_zscore(np.log(y), np.log(x), pair.hedge_ratio, pair.intercept, pair.spread_mean, pair.spread_std)
        hedge = pair.hedge_ratio
    params, costs = rule_and_costs(market.config)
    # the execution model: fills at the next bar's open, slippage fixed + range of the bar closed at the fill
    legs = [part(bars_frame(market.closes[leg.symbol])) for leg in (pair.y_instrument, pair.x_instrument)]
    opens = [leg["open"].to_numpy() for leg in legs]
    slippage = [costs.slippage_fractions(leg["open"].to_numpy(), leg["high"].to_numpy(), leg["low"].to_numpy())
                for leg in legs]
    result = backtest(y, x, z, hedge, params, costs, window.index.as_unit("ms").asi8,
                      max_holding_bars=max_holding_bars(pair.half_life_bars, params), opens_y=opens[0],
                      opens_x=opens[1], slippage_y=slippage[0], slippage_x=slippage[1])
    return result.statistics[0]


def assert_stored_equals(stored: PairStatistics, expected) -> None:
    assert stored.trades == expected.trades
    for name in ("win_rate", "profit_factor", "total_return", "max_drawdown", "mean_return", "expectancy"):
        value = getattr(expected, name)
        if value is None or not np.isfinite(value):
            assert getattr(stored, name) is None, name
        else:
            assert getattr(stored, name) == pytest.approx(value, abs=1e-12, rel=1e-12), name


def stats_of(pair: Pair, window: str) -> PairStatistics:
    return PairStatistics.objects.get(pair=pair, window=window)


# --- backtest windows -------------------------------------------------------------------------------------------


def test_market_round_trips_through_the_database(market):
    from pairs.selectors import price_window

    window = price_window(instruments=list(market.instruments.values()), timeframe="1h", bars=N_BARS)
    assert window.times[-1].to_pydatetime() == LAST_BAR
    assert window.symbols == sorted(market.closes.columns)
    # The database keeps the 6-decimal closes; a read as double may land one ulp off (SQLite's own text-to-real
    # conversion), which is far below anything the statistics could notice.
    np.testing.assert_allclose(window.closes, market.closes[window.symbols].to_numpy(), rtol=1e-15, atol=0)


def test_windows_are_stored_for_both_pairs_and_do_not_overlap(market):
    reverting = market.pair("Y1USDT", "XUSDT")
    random_walk = market.pair("RUSDT", "XUSDT")
    outcome = pair_statistics_update(config=market.config)

    assert outcome.window_end == LAST_BAR
    assert {g.pair.pk for g in outcome.graded} == {reverting.pk, random_walk.pk}
    for pair in (reverting, random_walk):
        assert set(PairStatistics.objects.filter(pair=pair).values_list("window", flat=True)) == set(WINDOWS)
    in_sample = stats_of(reverting, PairStatistics.Window.IN_SAMPLE)
    validated = stats_of(reverting, PairStatistics.Window.VALIDATION)
    assert in_sample.trades > 0 and validated.trades > 0

    # In sample: the formation window, the LOOKBACK bars ending VALIDATION bars before the newest bar.
    assert in_sample.window_end == FORMATION_END
    assert in_sample.window_start == FORMATION_END - timedelta(hours=LOOKBACK - 1)
    # Validation: every bar after it, up to the newest (forward in time, never a backcast).
    assert validated.window_start == FORMATION_END + timedelta(hours=1)
    assert validated.window_end == LAST_BAR
    # ADF of the last RECENT_ADF_BARS bars of the formation spread with the latest test's coefficients, one lag.
    for pair in (reverting, random_walk):
        log_y = np.log(formation(market.closes)[pair.y_instrument.symbol].to_numpy()[-RECENT_ADF_BARS:])
        log_x = np.log(formation(market.closes)["XUSDT"].to_numpy()[-RECENT_ADF_BARS:])
        adf = adfuller(log_y - pair.intercept - pair.hedge_ratio * log_x, maxlag=1, autolag=None, regression="c",
                       result_object=True)
        stored = stats_of(pair, PairStatistics.Window.IN_SAMPLE)
        assert stored.recent_adf_stat == pytest.approx(adf.statistic, abs=1e-9, rel=0)
        assert stored.recent_adf_pvalue == pytest.approx(adf.pvalue, abs=1e-9, rel=0)
    # The spread of the reverting pair is stationary lately; the random walk's is not.
    assert in_sample.recent_adf_pvalue < 0.05
    assert stats_of(random_walk, PairStatistics.Window.IN_SAMPLE).recent_adf_pvalue > 0.2


def test_in_sample_and_validation_statistics_equal_a_direct_backtest(market):
    pairs = [market.pair("Y1USDT", "XUSDT"), market.pair("Y2USDT", "XUSDT"), market.pair("RUSDT", "XUSDT")]
    pair_statistics_update(config=market.config)
    for pair in pairs:
        assert_stored_equals(stats_of(pair, PairStatistics.Window.IN_SAMPLE),
                             reference_backtest(market, pair, formation))
        assert_stored_equals(stats_of(pair, PairStatistics.Window.VALIDATION),
                             reference_backtest(market, pair, validation))
    # The reverting pairs trade profitably in sample (an unbounded profit factor, without a loss, is stored as None)
    # and trade on the validation bars as the bots would.
    y1, y2 = (stats_of(p, PairStatistics.Window.IN_SAMPLE) for p in pairs[:2])
    assert y1.trades >= 5 and y1.win_rate >= 0.8 and y1.total_return > 0
    assert y2.trades >= 5 and (y2.profit_factor is None or y2.profit_factor > 1.2) and y2.total_return > 0
    assert all(stats_of(p, PairStatistics.Window.VALIDATION).trades >= 5 for p in pairs[:2])


def test_validation_ignores_the_formation_bars_before_its_rolling_fit(market):
    pair = market.pair("Y1USDT", "XUSDT")
    pair_statistics_update(config=market.config)
    before = {w: stats_of(pair, w) for w in WINDOWS}

    # Rewrite the closes of both legs inside the formation window, except its last Z_WINDOW bars: the rolling fit
    # of the first validation bars reads those (as the live signals do), nothing older.
    changed = market.closes.copy()
    rng = np.random.default_rng(5)
    rewritten_end = FORMATION_END - timedelta(hours=Z_WINDOW)
    inside = (changed.index >= before[PairStatistics.Window.IN_SAMPLE].window_start) & (changed.index <= rewritten_end)
    assert inside.sum() == LOOKBACK - Z_WINDOW
    for symbol in ("Y1USDT", "XUSDT"):
        noise = np.exp(rng.normal(0, 0.02, inside.sum()))
        changed.loc[inside, symbol] = (changed.loc[inside, symbol] * noise).round(6)
    market.write(changed)
    pair_statistics_update(config=market.config)
    after = {w: stats_of(pair, w) for w in WINDOWS}

    val_before, val_after = before[PairStatistics.Window.VALIDATION], after[PairStatistics.Window.VALIDATION]
    assert (val_after.window_start, val_after.window_end) == (val_before.window_start, val_before.window_end)
    for name in COMPARED:
        assert getattr(val_after, name) == getattr(val_before, name), name
    # ...while the in-sample statistics did see the change.
    in_before, in_after = before[PairStatistics.Window.IN_SAMPLE], after[PairStatistics.Window.IN_SAMPLE]
    assert (in_before.total_return, in_before.recent_adf_stat) != (in_after.total_return, in_after.recent_adf_stat)


def test_validation_trades_the_rolling_fit_as_the_bots_do(market):
    # Validation z-scores come from the live signals' rolling fit, not the formation coefficients: a change of the
    # stored hedge ratio (which the bots don't trade) leaves them as they were, equal to a direct backtest.
    pair = market.pair("Y1USDT", "XUSDT")
    pair_statistics_update(config=market.config)
    before = stats_of(pair, PairStatistics.Window.VALIDATION)
    Pair.objects.filter(pk=pair.pk).update(hedge_ratio=pair.hedge_ratio * 0.9)
    pair.refresh_from_db()
    pair_statistics_update(config=market.config)
    after = stats_of(pair, PairStatistics.Window.VALIDATION)
    assert [getattr(after, name) for name in COMPARED] == [getattr(before, name) for name in COMPARED]
    assert_stored_equals(after, reference_backtest(market, pair, validation))


def test_validation_starts_after_the_pairs_own_formation_run(market):
    # A pair whose latest test is a run that ended its formation window earlier is validated on every bar after
    # that window, not on the last validation_bars only.
    from pairs.models import CointegrationRun

    earlier = FORMATION_END - timedelta(hours=40)
    run = CointegrationRun.objects.create(exchange="bybit", timeframe="1h", lookback_bars=LOOKBACK,
                                          window_start=earlier - timedelta(hours=LOOKBACK - 1), window_end=earlier,
                                          status=CointegrationRun.Status.SUCCEEDED)
    pair = market.pair("Y1USDT", "XUSDT", last_run=run)
    pair_statistics_update(config=market.config)
    validated, in_sample = (stats_of(pair, w) for w in (PairStatistics.Window.VALIDATION,
                                                         PairStatistics.Window.IN_SAMPLE))
    assert (validated.window_start, validated.window_end) == (earlier + timedelta(hours=1), LAST_BAR)
    assert (in_sample.window_start, in_sample.window_end) == (run.window_start, earlier)


def test_running_twice_keeps_one_row_per_pair_and_window(market):
    pairs = [market.pair("Y1USDT", "XUSDT"), market.pair("RUSDT", "XUSDT")]
    pair_statistics_update(config=market.config)
    first = {(s.pair_id, s.window): (s.pk, s.trades, s.total_return) for s in PairStatistics.objects.all()}
    pair_statistics_update(config=market.config)
    second = {(s.pair_id, s.window): (s.pk, s.trades, s.total_return) for s in PairStatistics.objects.all()}
    assert PairStatistics.objects.count() == len(pairs) * len(WINDOWS)
    assert set(first) == set(second) == {(p.pk, w) for p in pairs for w in WINDOWS}
    assert [v[1:] for v in first.values()] == [second[k][1:] for k in first]


def test_a_window_the_pair_no_longer_has_is_removed(market):
    from pairs.models import Candle

    pair = market.pair("Y1USDT", "XUSDT")
    pair_statistics_update(config=market.config)
    in_sample_start = stats_of(pair, PairStatistics.Window.IN_SAMPLE).window_start
    # X loses its bars after the formation window: no validation any more, the in-sample window stays.
    assert in_sample_start < FORMATION_END
    Candle.objects.filter(instrument=market.instruments["XUSDT"], open_time__gt=FORMATION_END).delete()
    outcome = pair_statistics_update(config=market.config)
    assert set(PairStatistics.objects.filter(pair=pair).values_list("window", flat=True)) == {
        PairStatistics.Window.IN_SAMPLE}
    assert outcome.as_json()["pairs"][0]["validation"] is None


def test_pairs_without_data_or_retired_are_left_out(market):
    pair = market.pair("Y1USDT", "XUSDT")
    retired = market.pair("Y2USDT", "XUSDT", status=Pair.Status.RETIRED)
    no_candles = market.pair("Y1USDT", "RUSDT")
    no_candles.x_instrument = InstrumentFactory(exchange="bybit", symbol="EMPTYUSDT", base="EMPTY")
    no_candles.save()
    outcome = pair_statistics_update(config=market.config)
    assert {g.pair.pk for g in outcome.graded} == {pair.pk, no_candles.pk}
    assert not PairStatistics.objects.filter(pair=retired).exists()
    assert not PairStatistics.objects.filter(pair=no_candles).exists()


# --- live statistics ----------------------------------------------------------------------------------------------


def closed_trade(pair: Pair, account, *, pnl: str, opened: datetime, hours: int, fills: list[tuple[str, str, str]],
                 state=PairTrade.State.CLOSED) -> PairTrade:
    """A finished trade with OPEN orders on both legs and their fills (leg, qty, price); a CLOSE order whose fills
    must not count towards the entry notional."""
    trade = PairTradeFactory(account=account, pair=pair, state=state, realised_pnl=Decimal(pnl), opened_at=opened,
                             closed_at=opened + timedelta(hours=hours))
    orders = {}
    for leg, qty, price in fills:
        if leg not in orders:
            instrument = pair.y_instrument if leg == Order.Leg.Y else pair.x_instrument
            orders[leg] = OrderFactory(trade=trade, leg=leg, instrument=instrument, action=Order.Action.OPEN,
                                       qty=Decimal("1000"))
        FillFactory(order=orders[leg], qty=Decimal(qty), price=Decimal(price))
    close = OrderFactory(trade=trade, leg=Order.Leg.Y, instrument=pair.y_instrument, action=Order.Action.CLOSE,
                         qty=Decimal("1000"))
    FillFactory(order=close, qty=Decimal("999"), price=Decimal("999"))
    return trade


def test_live_statistics_from_closed_trades(market):
    pair = market.pair("Y1USDT", "XUSDT")
    account = ExchangeAccountFactory(level=market.levels[1])
    start = datetime(2021, 3, 1, tzinfo=UTC)
    # (pnl, hours held, fills); notionals 1000+800 = 1800, 500+400.5 (two fills on y) = 900.5, 2000, 1000.
    closed_trade(pair, account, pnl="18", opened=start, hours=5,
                 fills=[("y", "10", "100"), ("x", "20", "40")])
    closed_trade(pair, account, pnl="-9.005", opened=start + timedelta(days=1), hours=3,
                 fills=[("y", "2", "100"), ("y", "3", "100"), ("x", "9", "44.5")])
    closed_trade(pair, account, pnl="30", opened=start + timedelta(days=2), hours=10,
                 fills=[("y", "10", "120"), ("x", "20", "40")], state=PairTrade.State.UNWOUND)
    closed_trade(pair, account, pnl="-5", opened=start + timedelta(days=3), hours=2,
                 fills=[("y", "5", "100"), ("x", "10", "50")])
    # Not counted: still open, and closed without a realised PnL.
    PairTradeFactory(account=account, pair=pair, state=PairTrade.State.OPEN, realised_pnl=Decimal("100"))
    PairTradeFactory(account=account, pair=pair, state=PairTrade.State.CLOSED, realised_pnl=None)

    outcome = pair_statistics_update(config=market.config)

    returns = np.array([18 / 1800, -9.005 / 900.5, 30 / 2000, -5 / 1000])  # 0.01, -0.01, 0.015, -0.005
    live = stats_of(pair, PairStatistics.Window.LIVE)
    assert live.trades == 4
    assert live.win_rate == pytest.approx(0.5, abs=1e-12)
    assert live.profit_factor == pytest.approx((0.01 + 0.015) / (0.01 + 0.005), abs=1e-12)
    assert live.total_return == pytest.approx(returns.sum(), abs=1e-12)
    assert live.total_return == pytest.approx(0.01, abs=1e-12)
    assert live.mean_return == pytest.approx(0.0025, abs=1e-12)
    assert live.max_drawdown == pytest.approx(0.01 / 1.01, abs=1e-12)  # 1.01 -> 1.00
    assert live.avg_holding_bars == pytest.approx(5.0, abs=1e-12)
    assert live.sharpe is None
    data = outcome.as_json()["pairs"][0]
    assert data["live"]["trades"] == 4 and data["live"]["win_rate"] == pytest.approx(0.5)


def test_live_statistics_of_only_winners_have_no_finite_profit_factor(market):
    pair = market.pair("Y1USDT", "XUSDT")
    account = ExchangeAccountFactory(level=market.levels[1])
    closed_trade(pair, account, pnl="10", opened=datetime(2021, 3, 1, tzinfo=UTC), hours=4,
                 fills=[("y", "10", "100"), ("x", "10", "100")])
    pair_statistics_update(config=market.config)
    live = stats_of(pair, PairStatistics.Window.LIVE)
    assert (live.trades, live.win_rate, live.profit_factor) == (1, 1.0, None)
    assert live.total_return == pytest.approx(10 / 2000, abs=1e-12)


# --- grading ------------------------------------------------------------------------------------------------------


def graded(outcome, pair: Pair):
    return next(g for g in outcome.graded if g.pair.pk == pair.pk)


def test_validation_evidence_promotes_to_l1_once(market):
    pair = market.pair("Y2USDT", "XUSDT", level=0)
    outcome = pair_statistics_update(config=market.config)

    oos = stats_of(pair, PairStatistics.Window.VALIDATION)
    l1 = market.levels[1]
    # The evidence meets the seeded L1 thresholds as they are.
    assert oos.trades >= l1.min_trades and oos.win_rate >= l1.min_win_rate
    assert oos.profit_factor is None or oos.profit_factor >= l1.min_profit_factor
    assert oos.max_drawdown <= l1.max_drawdown

    pair.refresh_from_db()
    assert pair.level.number == 1 and pair.level_changed_at is not None
    change = LevelChange.objects.get(pair=pair)
    assert (change.from_level.number, change.to_level.number) == (0, 1)
    assert change.automatic is True and change.changed_by is None
    assert change.reason.startswith("promoted")
    g = graded(outcome, pair)
    assert (g.previous_level, g.level) == (0, 1) and g.reason.startswith("promoted")
    assert outcome.as_json()["promoted"] == 1

    # Same evidence again: L2 needs live trades, L1's own thresholds still hold, so it stays without a new audit row.
    outcome = pair_statistics_update(config=market.config)
    pair.refresh_from_db()
    assert pair.level.number == 1
    assert LevelChange.objects.filter(pair=pair).count() == 1
    assert graded(outcome, pair).reason == "unchanged"
    assert outcome.as_json()["promoted"] == outcome.as_json()["demoted"] == 0


def test_random_walk_pair_is_not_promoted(market):
    pair = market.pair("RUSDT", "XUSDT", level=0)
    outcome = pair_statistics_update(config=market.config)
    pair.refresh_from_db()
    assert pair.level.number == 0
    assert not LevelChange.objects.filter(pair=pair).exists()
    assert graded(outcome, pair).reason == "unchanged"


def test_hysteresis_keeps_a_pair_whose_evidence_is_between_the_bars(market):
    pair = market.pair("Y1USDT", "XUSDT", level=1)
    pair_statistics_update(config=market.config)
    oos = stats_of(pair, PairStatistics.Window.VALIDATION)
    # Raise L1's win-rate bar just above the evidence: a pair at L0 could not be promoted, but the demotion bar
    # (20% lower) is still met, so the pair at L1 stays.
    Level.objects.filter(number=1).update(min_win_rate=oos.win_rate + 0.01)
    outcome = pair_statistics_update(config=market.config)
    pair.refresh_from_db()
    assert pair.level.number == 1
    assert graded(outcome, pair).reason == "unchanged"
    assert not LevelChange.objects.filter(pair=pair).exists()
    # Beyond the hysteresis margin it is demoted one rung.
    Level.objects.filter(number=1).update(min_win_rate=oos.win_rate / 0.8 + 0.01)
    outcome = pair_statistics_update(config=market.config)
    pair.refresh_from_db()
    assert pair.level.number == 0
    assert graded(outcome, pair).reason.startswith("demoted: below L1 thresholds (win rate")


def test_locked_pair_is_not_moved(market):
    pair = market.pair("Y2USDT", "XUSDT", level=0, level_locked=True)
    outcome = pair_statistics_update(config=market.config)
    pair.refresh_from_db()
    assert pair.level.number == 0 and pair.level_locked
    assert not LevelChange.objects.exists()
    g = graded(outcome, pair)
    assert (g.previous_level, g.level) == (0, 0)
    assert g.reason.startswith("locked at L0") and "promoted" in g.reason
    # Its statistics are still stored.
    assert PairStatistics.objects.filter(pair=pair).count() == 2


def test_broken_cointegration_drops_to_l0(market):
    pair = market.pair("Y1USDT", "XUSDT", level=1, consecutive_failures=market.config.max_consecutive_failures)
    below = market.pair("Y2USDT", "XUSDT", level=1, consecutive_failures=market.config.max_consecutive_failures - 1)
    outcome = pair_statistics_update(config=market.config)
    pair.refresh_from_db()
    below.refresh_from_db()
    assert pair.level.number == 0
    change = LevelChange.objects.get(pair=pair)
    assert (change.from_level.number, change.to_level.number) == (1, 0)
    assert change.reason.startswith("cointegration broken") and change.automatic
    assert graded(outcome, pair).reason.startswith("cointegration broken")
    # One failure short: no drop, and no promotion either while it is failing.
    assert below.level.number == 1
    assert not LevelChange.objects.filter(pair=below).exists()


def test_l2_needs_live_evidence(market):
    pair = market.pair("Y1USDT", "XUSDT", level=1)
    outcome = pair_statistics_update(config=market.config)
    pair.refresh_from_db()
    assert pair.level.number == 1
    assert graded(outcome, pair).reason == "unchanged"
    oos = stats_of(pair, PairStatistics.Window.VALIDATION)
    assert oos.trades >= market.levels[2].min_trades  # the backtest alone would clear L2's bar

    # Ten winning paper trades and one small loss: the live evidence meets L2.
    account = ExchangeAccountFactory(level=market.levels[1])
    start = datetime(2021, 3, 1, tzinfo=UTC)
    for k in range(10):
        closed_trade(pair, account, pnl="20", opened=start + timedelta(days=k), hours=6,
                     fills=[("y", "10", "100"), ("x", "10", "80")])
    closed_trade(pair, account, pnl="-1.8", opened=start + timedelta(days=10), hours=6,
                 fills=[("y", "10", "100"), ("x", "10", "80")])
    outcome = pair_statistics_update(config=market.config)
    pair.refresh_from_db()
    assert pair.level.number == 2
    change = LevelChange.objects.get(pair=pair)
    assert (change.from_level.number, change.to_level.number) == (1, 2)
    assert change.reason == "promoted: live/paper evidence meets L2 thresholds"
    live = stats_of(pair, PairStatistics.Window.LIVE)
    assert live.trades == 11 and live.win_rate == pytest.approx(10 / 11)
    assert live.profit_factor == pytest.approx(200 / 1.8)


def test_too_few_live_trades_do_not_promote_to_l2(market):
    pair = market.pair("Y1USDT", "XUSDT", level=1)
    account = ExchangeAccountFactory(level=market.levels[1])
    for k in range(9):
        closed_trade(pair, account, pnl="20", opened=datetime(2021, 3, 1, tzinfo=UTC) + timedelta(days=k), hours=6,
                     fills=[("y", "10", "100"), ("x", "10", "80")])
    outcome = pair_statistics_update(config=market.config)
    pair.refresh_from_db()
    assert pair.level.number == 1
    assert graded(outcome, pair).reason == "unchanged"


# --- JSON ---------------------------------------------------------------------------------------------------------


def test_as_json_shape(market):
    import json

    market.pair("Y2USDT", "XUSDT", level=0)
    market.pair("RUSDT", "XUSDT", level=0)
    data = pair_statistics_update(config=market.config).as_json()
    json.dumps(data)  # no infinities, no datetimes left
    assert data["window_end"] == LAST_BAR.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert data["n_pairs"] == 2 and data["promoted"] == 1 and data["demoted"] == 0
    by_legs = {(p["y"], p["x"]): p for p in data["pairs"]}
    assert set(by_legs) == {("Y2USDT", "XUSDT"), ("RUSDT", "XUSDT")}
    for entry in data["pairs"]:
        assert {"y", "x", "level", "previous_level", "reason", "in_sample", "validation"} <= set(entry)
        for window in ("in_sample", "validation"):
            assert set(entry[window]) == {"trades", "win_rate", "profit_factor", "total_return", "max_drawdown",
                                          "sharpe"}
    promoted = by_legs[("Y2USDT", "XUSDT")]
    assert (promoted["previous_level"], promoted["level"]) == (0, 1)
    assert promoted["reason"].startswith("promoted")
    stored = stats_of(Pair.objects.get(y_instrument__symbol="Y2USDT"), PairStatistics.Window.VALIDATION)
    assert promoted["validation"]["trades"] == stored.trades
    assert promoted["validation"]["total_return"] == pytest.approx(stored.total_return, abs=1e-12)
    assert promoted["live"] is None


def test_a_grading_of_the_past_counts_only_the_trades_closed_by_its_end(market):
    pair = market.pair("Y1USDT", "XUSDT")
    account = ExchangeAccountFactory(level=market.levels[1])
    end = FIRST_BAR + timedelta(hours=N_BARS - 1)
    closed_trade(pair, account, pnl="10", opened=end - timedelta(hours=10), hours=4,
                 fills=[("y", "10", "100"), ("x", "10", "100")])
    closed_trade(pair, account, pnl="-50", opened=end - timedelta(hours=3), hours=5,  # closes after the end
                 fills=[("y", "10", "100"), ("x", "10", "100")])
    pair_statistics_update(config=market.config, end=end)
    live = stats_of(pair, PairStatistics.Window.LIVE)
    assert (live.trades, live.win_rate) == (1, 1.0)
    pair_statistics_update(config=market.config)  # today's grading: every finished trade
    assert stats_of(pair, PairStatistics.Window.LIVE).trades == 2


def test_a_level_moved_while_the_grading_ran_is_not_overruled(market, monkeypatch):
    import ladder.services as services
    from pairs.services.levels import pair_set_level

    # Its evidence promotes it to level 1 (test_validation_evidence_promotes_to_l1_once); Y1's did not, and the
    # grading had no move to overrule.
    pair = market.pair("Y2USDT", "XUSDT", level=0)
    windows = services.backtest_windows

    def backtests_then_a_person_moves_the_pair(*args, **kwargs):
        result = windows(*args, **kwargs)
        pair_set_level(pair=pair, level=market.levels[2], reason="moved by hand during the grading")
        return result

    monkeypatch.setattr(services, "backtest_windows", backtests_then_a_person_moves_the_pair)
    outcome = pair_statistics_update(config=market.config)
    pair.refresh_from_db()
    assert pair.level.number == 2
    assert [(c.from_level.number, c.to_level.number) for c in LevelChange.objects.filter(pair=pair)] == [(0, 2)]
    # The report (update_stats' JSON and audit, the task's result) says where the pair is, and counts no promotion
    # the grading didn't make: it said 'level 1, promoted' while the pair stood at level 2 by hand.
    g = graded(outcome, pair)
    assert (g.previous_level, g.level) == (0, 2)
    assert g.reason.startswith("left where a person put it meanwhile (promoted")
    assert outcome.as_json()["promoted"] == outcome.as_json()["demoted"] == 0


def test_a_paper_pair_whose_validation_window_has_no_trade_keeps_its_level(market):
    # No validation bar reaches the entry z: no trade, so no win rate or profit factor. They were read as 0 and
    # the pair was demoted from paper ("win rate 0.00 < 0.40"), though trade counts never demote.
    market.config.entry_z, market.config.stop_z = 50.0, 60.0
    market.config.save()
    pair = market.pair("Y1USDT", "XUSDT", level=1)
    outcome = pair_statistics_update(config=market.config)
    pair.refresh_from_db()
    assert stats_of(pair, PairStatistics.Window.VALIDATION).trades == 0
    assert pair.level.number == 1
    assert graded(outcome, pair).reason == "unchanged"
    assert not LevelChange.objects.filter(pair=pair).exists()
