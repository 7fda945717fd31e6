"""A fake Bybit v5 REST server (category=linear, unified account, one-way mode) for tests.

Pure stdlib: a ``ThreadingHTTPServer`` on 127.0.0.1 in a background thread and an in-memory simulation of
instruments, candles, tickers, funding, a USDT wallet, orders, executions and netted positions. Unmodified ccxt
(``ccxt.bybit`` with ``urls["api"]`` pointed at :attr:`FakeBybit.base_url`) can load markets, read market data and
trade against it. Signatures are not checked. Money and quantities are ``Decimal`` throughout.

    with FakeBybit() as fake:
        fake.add_instrument("BTCUSDT", base="BTC", tick_size="0.1", qty_step="0.001", min_qty="0.001",
                            min_notional="5", price="50000")
        ex = make_ccxt_client(fake.base_url)
        ex.create_order("BTC/USDT:USDT", "market", "buy", 0.01, params={"clientOrderId": "a1"})
        assert fake.position("BTCUSDT").size == Decimal("0.01")

Simulation rules (kept deliberately simple, see each method):
- market orders fill at once at the instrument's current price (``set_price``), plus optional slippage, as taker;
- limit orders that cross the current price on arrival fill at once as taker (at most at their limit); the others
  rest and fill as maker, at their limit price, when ``set_price`` crosses them;
- positions are netted per symbol (one-way mode, positionIdx 0): weighted average entry price, realised PnL on
  reduction, a flip re-opens at the fill price; fees and realised PnL move the settle coin's wallet balance;
- reduce-only orders that would open or increase a position are rejected (110017); a reduce-only market order
  larger than the position is cut to the position size (Bybit does the same);
- faults (error codes, HTTP errors, timeouts and dropped connections, each either before the request is applied
  or after it was applied and its answer lost; partial fills) are injected one-shot or counted, keyed by path and
  optionally by symbol / orderLinkId, or at random with a seed (:meth:`FakeBybit.random_faults`);
- a person's orders in the exchange's UI (:meth:`FakeBybit.close_position_by_hand`,
  :meth:`FakeBybit.open_position_by_hand`) trade like any order, under an orderLinkId that is not the bot's;
- the execution list (trades, funding, delivery) spans at most 7 days a request, as on Bybit: startTime/endTime
  further apart is a params error (10001), one of them alone means 7 days from / up to it, neither the last 7 days.
"""

from __future__ import annotations

import calendar
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.fakes.http_server import TrackingHTTPServer, reply_write

__all__ = [
    "ALL_RANDOM_FAULT_KINDS",
    "DEFAULT_MAKER_FEE_RATE",
    "DEFAULT_RANDOM_FAULT_PATHS",
    "DEFAULT_TAKER_FEE_RATE",
    "BybitError",
    "FakeBybit",
    "FakeExecution",
    "FakeOrder",
    "FakePosition",
    "InjectedFault",
    "Instrument",
    "RecordedRequest",
    "fake_bybit",
    "fmt",
    "make_ccxt_client",
    "normalize_interval",
    "to_decimal",
]

DEFAULT_TAKER_FEE_RATE = Decimal("0.00055")
DEFAULT_MAKER_FEE_RATE = Decimal("0.0002")
MAINTENANCE_MARGIN_RATE = Decimal("0.005")
RECENT_ORDERS_VISIBLE_TO_REALTIME = 500

Num = Decimal | str | int | float

KLINE_INTERVALS = ("1", "3", "5", "15", "30", "60", "120", "240", "360", "720", "D", "W", "M")
CCXT_TIMEFRAMES = {
    "1m": "1", "3m": "3", "5m": "5", "15m": "15", "30m": "30", "1h": "60", "2h": "120", "4h": "240",
    "6h": "360", "12h": "720", "1d": "D", "1w": "W", "1M": "M",
}  # fmt: skip
OPEN_STATUSES = ("New", "PartiallyFilled")
CLOSED_STATUSES = ("Filled", "Cancelled", "PartiallyFilledCanceled", "Rejected", "Deactivated")
DAY_MS = 86_400_000
EXECUTION_WINDOW_MS = 7 * DAY_MS  # /v5/execution/list: endTime - startTime <= 7 days; the default window is 7 days

# Random faults (FakeBybit.random_faults). "before" kinds apply nothing; "after_accept" kinds apply the request and
# then lose or replace its answer, as a real exchange or its gateway sometimes does.
ALL_RANDOM_FAULT_KINDS = (
    "ret_before",  # retCode 10002 or 10016 (drawn), nothing applied
    "error_after_accept",  # applied, then retCode 10016; on a GET (nothing to apply) it is a ret_before
    "http_before",  # HTML page 502, 503 or 504 (drawn), nothing applied
    "http_after_accept",  # applied, then an HTML 502 page
    "timeout_after_accept",  # applied, the answer held for timeout_delay_s
    "disconnect_before",  # connection closed without an answer, nothing applied
    "disconnect_after_accept",  # applied, then the connection closed without an answer
    "rate_limit",  # retCode 10006, nothing applied
    "latency",  # applied and answered normally, after a delay drawn from latency_s
)
DEFAULT_RANDOM_FAULT_PATHS = (
    "/v5/order/create",
    "/v5/order/cancel",
    "/v5/order/realtime",
    "/v5/order/history",
    "/v5/execution/list",
    "/v5/position/list",
    "/v5/account/wallet-balance",
)
INTERNAL_ERROR_CODE = 10016
INTERNAL_ERROR_MSG = "Internal System Error."
# retCodes of a "ret_before" random fault. Bybit answers 10002 without acting on the request; 10016 does not prove
# that on the real exchange (see error_after_accept_next), but here it is the variant where nothing was applied.
RANDOM_RET_BEFORE_ERRORS = (
    (10002, "invalid request, please check your server timestamp or recv_window param"),
    (INTERNAL_ERROR_CODE, INTERNAL_ERROR_MSG),
)
RANDOM_HTTP_BEFORE_STATUSES = (502, 503, 504)
RANDOM_HTTP_AFTER_ACCEPT_STATUS = 502


# --------------------------------------------------------------------------------------------------------------------
# small helpers


def to_decimal(value: Num) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool):
        raise TypeError("a bool is not a number")
    return Decimal(str(value))


def fmt(value: Decimal | None) -> str:
    """Bybit-style number string: plain notation, no exponent, no trailing zeros; None -> ''."""
    if value is None:
        return ""
    if value == 0:
        return "0"
    text = format(value.normalize(), "f")
    return text


def _round_to_step(value: Decimal, step: Decimal, rounding: str) -> Decimal:
    return (value / step).to_integral_value(rounding=rounding) * step


def _is_multiple(value: Decimal, step: Decimal) -> bool:
    return step == 0 or value % step == 0


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    return str(value).strip().lower() in ("true", "1")


def normalize_interval(interval: str | int) -> str:
    """Bybit kline interval from '60', 60, '1h', 'D', '1d' ..."""
    text = str(interval)
    text = CCXT_TIMEFRAMES.get(text, text)
    if text not in KLINE_INTERVALS:
        raise ValueError(f"unsupported kline interval {interval!r}; use one of {KLINE_INTERVALS}")
    return text


def interval_end_ms(interval: str, open_ms: int) -> int:
    """Open time of the bar after the one that opens at open_ms."""
    if interval == "D":
        return open_ms + DAY_MS
    if interval == "W":
        return open_ms + 7 * DAY_MS
    if interval == "M":
        start = datetime.fromtimestamp(open_ms / 1000, tz=UTC)
        year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
        return calendar.timegm((year, month, 1, 0, 0, 0)) * 1000
    return open_ms + int(interval) * 60_000


def _parse_candle_rows(rows: list[tuple] | list[list]) -> dict[int, tuple[str, ...]]:
    bars: dict[int, tuple[str, ...]] = {}
    for row in rows:
        if len(row) not in (6, 7):
            raise ValueError(f"a candle row is (open_time_ms, o, h, l, c, volume[, turnover]), got {row!r}")
        values = [to_decimal(v) for v in row[1:]]
        if len(values) == 5:
            values.append(values[4] * values[3])
        bars[int(row[0])] = tuple(fmt(v) for v in values)
    return bars


class BybitError(Exception):
    """Raised inside a route handler: answered as HTTP 200 with this retCode/retMsg."""

    def __init__(self, code: int, msg: str):
        super().__init__(f"{code} {msg}")
        self.code = code
        self.msg = msg


class RecordedRequest(NamedTuple):
    method: str
    path: str
    params: dict[str, Any]  # query parameters (str values) of a GET, the JSON body of a POST


class InjectedFault(NamedTuple):
    """One fault injected by the random mode (:meth:`FakeBybit.random_fault_log`)."""

    method: str
    path: str
    kind: str  # one of ALL_RANDOM_FAULT_KINDS (an error_after_accept on a GET is logged as ret_before)
    detail: str  # the retCode, the HTTP status or the delay in seconds ("" for a dropped connection)
    order_link_id: str  # the request's orderLinkId, "" if none


# --------------------------------------------------------------------------------------------------------------------
# state


@dataclass
class Instrument:
    symbol: str
    base: str
    quote: str
    settle: str
    tick_size: Decimal
    qty_step: Decimal
    min_qty: Decimal
    max_qty: Decimal
    max_mkt_qty: Decimal
    min_notional: Decimal
    min_price: Decimal
    max_price: Decimal
    min_leverage: Decimal
    max_leverage: Decimal
    leverage_step: Decimal
    default_leverage: Decimal
    funding_interval_minutes: int
    upper_funding_rate: Decimal
    lower_funding_rate: Decimal
    status: str
    launch_time_ms: int
    delivery_time_ms: int = 0
    contract_type: str = "LinearPerpetual"
    hidden: bool = False  # not listed unless asked for by symbol or status

    @property
    def price_scale(self) -> int:
        exponent = self.tick_size.normalize().as_tuple().exponent
        return max(0, -int(exponent))

    def wire(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "contractType": self.contract_type,
            "status": self.status,
            "baseCoin": self.base,
            "quoteCoin": self.quote,
            "launchTime": str(self.launch_time_ms),
            "deliveryTime": str(self.delivery_time_ms),
            "deliveryFeeRate": "",
            "priceScale": str(self.price_scale),
            "leverageFilter": {
                "minLeverage": fmt(self.min_leverage),
                "maxLeverage": fmt(self.max_leverage),
                "leverageStep": fmt(self.leverage_step),
            },
            "priceFilter": {
                "minPrice": fmt(self.min_price),
                "maxPrice": fmt(self.max_price),
                "tickSize": fmt(self.tick_size),
            },
            "lotSizeFilter": {
                "maxOrderQty": fmt(self.max_qty),
                "maxMktOrderQty": fmt(self.max_mkt_qty),
                "minOrderQty": fmt(self.min_qty),
                "qtyStep": fmt(self.qty_step),
                "postOnlyMaxOrderQty": fmt(self.max_qty),
                "minNotionalValue": fmt(self.min_notional),
            },
            "unifiedMarginTrade": True,
            "fundingInterval": self.funding_interval_minutes,
            "settleCoin": self.settle,
            "copyTrading": "both",
            "upperFundingRate": fmt(self.upper_funding_rate),
            "lowerFundingRate": fmt(self.lower_funding_rate),
            "isPreListing": self.status == "PreLaunch",
            "preListingInfo": None,
            "riskParameters": {"priceLimitRatioX": "0.01", "priceLimitRatioY": "0.02"},
            "displayName": "",
        }


@dataclass
class _Ticker:
    last: Decimal | None = None
    mark: Decimal | None = None
    index: Decimal | None = None
    prev_24h: Decimal | None = None
    prev_1h: Decimal | None = None
    high_24h: Decimal | None = None
    low_24h: Decimal | None = None
    turnover_24h: Decimal = Decimal(0)
    volume_24h: Decimal | None = None
    funding_rate: Decimal = Decimal("0.0001")
    next_funding_time_ms: int | None = None
    bid: Decimal | None = None
    ask: Decimal | None = None
    bid_size: Decimal = Decimal(1)
    ask_size: Decimal = Decimal(1)
    open_interest: Decimal = Decimal(0)


@dataclass
class FakeOrder:
    order_id: str
    order_link_id: str
    symbol: str
    side: str  # Buy / Sell
    order_type: str  # Market / Limit
    qty: Decimal
    price: Decimal | None  # limit price; for a market order the protection price Bybit reports
    time_in_force: str  # GTC / IOC / FOK / PostOnly
    reduce_only: bool
    position_idx: int
    status: str
    created_ms: int
    updated_ms: int
    seq: int
    last_price_on_created: Decimal | None = None
    cum_exec_qty: Decimal = Decimal(0)
    cum_exec_value: Decimal = Decimal(0)
    cum_exec_fee: Decimal = Decimal(0)
    cancel_type: str = "UNKNOWN"
    reject_reason: str = "EC_NoError"
    settle: str = "USDT"

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def leaves_qty(self) -> Decimal:
        return self.qty - self.cum_exec_qty if self.is_open else Decimal(0)

    @property
    def avg_price(self) -> Decimal | None:
        return self.cum_exec_value / self.cum_exec_qty if self.cum_exec_qty else None


@dataclass
class FakePosition:
    symbol: str
    size: Decimal = Decimal(0)  # signed: > 0 long, < 0 short
    avg_price: Decimal = Decimal(0)
    leverage: Decimal = Decimal(10)
    cur_realised_pnl: Decimal = Decimal(0)  # since the position was opened, fees included (as Bybit)
    cum_realised_pnl: Decimal = Decimal(0)
    created_ms: int = 0
    updated_ms: int = 0
    seq: int = 0

    @property
    def side(self) -> str:
        return "Buy" if self.size > 0 else "Sell" if self.size < 0 else ""

    @property
    def value(self) -> Decimal:
        return abs(self.size) * self.avg_price

    def unrealised_pnl(self, mark: Decimal | None) -> Decimal:
        if not self.size or mark is None:
            return Decimal(0)
        return self.size * (mark - self.avg_price)


@dataclass
class FakeExecution:
    exec_id: str
    order_id: str
    order_link_id: str
    symbol: str
    side: str
    exec_price: Decimal
    exec_qty: Decimal
    exec_value: Decimal
    exec_fee: Decimal
    fee_rate: Decimal
    exec_time_ms: int
    is_maker: bool
    exec_type: str  # Trade / Funding / Delivery
    order_type: str
    order_qty: Decimal
    order_price: Decimal | None
    leaves_qty: Decimal
    closed_size: Decimal
    exec_pnl: Decimal
    mark_price: Decimal | None
    seq: int


@dataclass
class _Fault:
    kind: str  # ret / http / timeout / disconnect / partial / latency (random mode only)
    path: str | None  # None: any path
    match: dict[str, str]
    times: int
    ret_code: int = 0
    ret_msg: str = ""
    http_status: int = 200
    body: str | None = None
    delay_s: float = 0.0
    after_accept: bool = False
    fraction: Decimal = Decimal(1)
    then: str = "rest"
    echo_auth: bool = False  # ret_msg is a template of the request's auth headers (auth_error_next)

    def matches(self, path: str, params: Mapping[str, Any]) -> bool:
        if self.path is not None and self.path != path:
            return False
        return all(str(params.get(key)) == value for key, value in self.match.items())

    @property
    def label(self) -> str:
        """The kind as :meth:`FakeBybit.pending_faults` shows it: ret / http / disconnect get "_after_accept"."""
        if self.after_accept and self.kind in ("ret", "http", "disconnect"):
            return f"{self.kind}_after_accept"
        return self.kind


@dataclass
class _RandomFaults:
    """The settings and the seeded generator of :meth:`FakeBybit.random_faults`."""

    rng: random.Random
    probability: float
    kinds: tuple[str, ...]
    paths: frozenset[str]
    latency_s: tuple[float, float]


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    delay_s: float = 0.0
    disconnect: bool = False


# --------------------------------------------------------------------------------------------------------------------
# HTTP plumbing


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    disable_nagle_algorithm = True  # headers and body go out in two writes: avoid a 40 ms delayed-ACK stall
    server: TrackingHTTPServer

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _handle(self, method: str) -> None:
        fake = self.server.fake
        split = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(split.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body: Any = {}
        bad_json = False
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                bad_json = True
        params = dict(query)
        if method != "GET" and isinstance(body, dict):
            params.update(body)
        reply = fake._dispatch(method, split.path, params, bad_json=bad_json, headers=dict(self.headers.items()))
        if reply.delay_s and not reply.disconnect:
            fake._stopping.wait(reply.delay_s)
        reply_write(self, reply)


# --------------------------------------------------------------------------------------------------------------------
# the fake


class FakeBybit:
    """In-memory Bybit v5 (linear, unified account, one-way mode) served over HTTP on 127.0.0.1.

    Thread-safe: the test thread configures and inspects it while the server thread answers ccxt.
    """

    def __init__(
        self,
        *,
        balance: Num = "10000",
        coin: str = "USDT",
        taker_fee_rate: Num = DEFAULT_TAKER_FEE_RATE,
        maker_fee_rate: Num = DEFAULT_MAKER_FEE_RATE,
        slippage_bps: Num = 0,
        timeout_delay_s: float = 2.0,
        instrument_page_size: int = 1000,
        duplicate_order_link_id_code: int = 170141,
        history_includes_open: bool = False,
        clock: Callable[[], int] | None = None,
        port: int = 0,
    ):
        self.taker_fee_rate = to_decimal(taker_fee_rate)
        self.maker_fee_rate = to_decimal(maker_fee_rate)
        self.slippage_bps = to_decimal(slippage_bps)
        self.timeout_delay_s = timeout_delay_s
        self.instrument_page_size = instrument_page_size
        self.duplicate_order_link_id_code = duplicate_order_link_id_code
        self.history_includes_open = history_includes_open
        self._clock = clock or (lambda: int(time.time() * 1000))
        self._port = port

        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: TrackingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

        self._instruments: dict[str, Instrument] = {}
        self._candles: dict[tuple[str, str], dict[int, tuple[str, ...]]] = {}
        self._tickers: dict[str, _Ticker] = {}
        self._funding: dict[str, dict[int, Decimal]] = {}
        self._wallet: dict[str, Decimal] = {coin: to_decimal(balance)}
        self._orders: dict[str, FakeOrder] = {}
        self._link_ids: dict[str, str] = {}
        self._positions: dict[str, FakePosition] = {}
        self._executions: list[FakeExecution] = []
        self._symbol_slippage: dict[str, Decimal] = {}
        self._faults: list[_Fault] = []
        self._random: _RandomFaults | None = None
        self._random_counts: dict[str, int] = dict.fromkeys(ALL_RANDOM_FAULT_KINDS, 0)
        self._random_log: list[InjectedFault] = []
        self._requests: list[RecordedRequest] = []
        self._errors: list[str] = []
        self._seq = 0

        self._routes: dict[tuple[str, str], Callable[[dict[str, Any]], Any]] = {
            ("GET", "/v5/market/time"): self._h_time,
            ("GET", "/v5/market/instruments-info"): self._h_instruments,
            ("GET", "/v5/market/kline"): self._h_kline,
            ("GET", "/v5/market/tickers"): self._h_tickers,
            ("GET", "/v5/market/funding/history"): self._h_funding_history,
            ("GET", "/v5/asset/coin/query-info"): self._h_coin_info,
            ("GET", "/v5/account/wallet-balance"): self._h_wallet_balance,
            ("GET", "/v5/account/fee-rate"): self._h_fee_rate,
            ("GET", "/v5/account/info"): self._h_account_info,
            ("GET", "/v5/user/query-api"): self._h_query_api,
            ("POST", "/v5/order/create"): self._h_order_create,
            ("POST", "/v5/order/amend"): self._h_order_amend,
            ("POST", "/v5/order/cancel"): self._h_order_cancel,
            ("POST", "/v5/order/cancel-all"): self._h_order_cancel_all,
            ("GET", "/v5/order/realtime"): self._h_order_realtime,
            ("GET", "/v5/order/history"): self._h_order_history,
            ("GET", "/v5/execution/list"): self._h_execution_list,
            ("GET", "/v5/position/list"): self._h_position_list,
            ("POST", "/v5/position/set-leverage"): self._h_set_leverage,
            ("POST", "/v5/position/switch-mode"): self._h_switch_mode,
        }

    # ---------------------------------------------------------------------------------------------------- lifecycle

    def start(self) -> FakeBybit:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = TrackingHTTPServer(("127.0.0.1", self._port), _Handler, self)
        port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"fake-bybit-{port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()  # wakes handlers sleeping in a timeout fault
        server.shutdown()
        server.drop_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeBybit:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def now_ms(self) -> int:
        return int(self._clock())

    # ---------------------------------------------------------------------------------------------------- set-up

    def add_instrument(
        self,
        symbol: str,
        *,
        base: str,
        quote: str = "USDT",
        settle: str | None = None,
        tick_size: Num,
        qty_step: Num,
        min_qty: Num,
        min_notional: Num = "5",
        max_qty: Num = "1000000",
        max_mkt_qty: Num | None = None,
        min_price: Num | None = None,
        max_price: Num | None = None,
        min_leverage: Num = "1",
        max_leverage: Num = "100",
        leverage_step: Num = "0.01",
        leverage: Num = "10",
        funding_interval_minutes: int = 480,
        upper_funding_rate: Num = "0.005",
        lower_funding_rate: Num = "-0.005",
        status: str = "Trading",
        launch_time_ms: int = 1_585_526_400_000,
        delivery_time_ms: int = 0,
        contract_type: str = "LinearPerpetual",
        price: Num | None = None,
        turnover_24h: Num | None = None,
    ) -> Instrument:
        """Register a linear instrument. ``price`` also sets last and mark price (see :meth:`set_price`)."""
        tick = to_decimal(tick_size)
        inst = Instrument(
            symbol=symbol,
            base=base,
            quote=quote,
            settle=settle or quote,
            tick_size=tick,
            qty_step=to_decimal(qty_step),
            min_qty=to_decimal(min_qty),
            max_qty=to_decimal(max_qty),
            max_mkt_qty=to_decimal(max_mkt_qty if max_mkt_qty is not None else max_qty),
            min_notional=to_decimal(min_notional),
            min_price=to_decimal(min_price) if min_price is not None else tick,
            max_price=to_decimal(max_price)
            if max_price is not None
            else _round_to_step(Decimal(1999999), tick, ROUND_FLOOR),
            min_leverage=to_decimal(min_leverage),
            max_leverage=to_decimal(max_leverage),
            leverage_step=to_decimal(leverage_step),
            default_leverage=to_decimal(leverage),
            funding_interval_minutes=funding_interval_minutes,
            upper_funding_rate=to_decimal(upper_funding_rate),
            lower_funding_rate=to_decimal(lower_funding_rate),
            status=status,
            launch_time_ms=launch_time_ms,
            delivery_time_ms=delivery_time_ms,
            contract_type=contract_type,
        )
        with self._lock:
            self._instruments[symbol] = inst
            self._wallet.setdefault(inst.settle, Decimal(0))
            if price is not None or turnover_24h is not None:
                self.set_ticker(symbol, price, turnover_24h)
        return inst

    def set_instrument_status(self, symbol: str, status: str) -> None:
        with self._lock:
            self._instrument(symbol).status = status

    def delist(
        self,
        symbol: str,
        *,
        status: str = "Closed",
        delivery_time_ms: int | None = None,
        hidden: bool = False,
        settle_positions: bool = True,
    ) -> None:
        """Delist an instrument. ccxt marks every status but "Trading" as ``active=False``.

        - ``status="Delivering"``: the delisting is announced/in progress; ``deliveryTime`` is set (default now),
          only reduce-only orders are accepted (110023).
        - ``status="Closed"`` (default): trading is over; open orders are cancelled and, if ``settle_positions``,
          open positions are closed at the current price (an execution with execType "Delivery", no fee).
        - ``hidden=True``: the instrument no longer appears in an unfiltered instruments-info list (it can still be
          asked for by symbol or status), the way a long-gone contract disappears from the exchange.
        """
        with self._lock:
            inst = self._instrument(symbol)
            inst.status = status
            inst.hidden = hidden
            if delivery_time_ms is not None or status == "Delivering":
                inst.delivery_time_ms = delivery_time_ms if delivery_time_ms is not None else self.now_ms()
            if status == "Closed":
                for order in self._open_orders(symbol):
                    self._cancel(order, "CancelByAdmin")
                pos = self._positions.get(symbol)
                price = self._current_price(symbol)
                if settle_positions and pos is not None and pos.size and price is not None:
                    side = "Sell" if pos.size > 0 else "Buy"
                    self._settle_at(inst, pos, side, abs(pos.size), price, "Delivery")

    def set_candles(self, symbol: str, interval: str | int, rows: list[tuple] | list[list]) -> None:
        """Replace the candles of (symbol, interval). A row is (open_time_ms, o, h, l, c, volume[, turnover]).

        ``interval`` is Bybit's ("60", 60, "D") or ccxt's ("1h", "1d"). Without turnover, volume * close is used.
        """
        iv = normalize_interval(interval)
        bars = _parse_candle_rows(rows)
        with self._lock:
            self._instrument(symbol)
            self._candles[(symbol, iv)] = bars

    def add_candles(self, symbol: str, interval: str | int, rows: list[tuple] | list[list]) -> None:
        """Add bars (or overwrite those with the same open time), keeping the others."""
        iv = normalize_interval(interval)
        bars = _parse_candle_rows(rows)
        with self._lock:
            self._instrument(symbol)
            self._candles.setdefault((symbol, iv), {}).update(bars)

    def set_ticker(
        self,
        symbol: str,
        last_price: Num | None = None,
        turnover_24h: Num | None = None,
        *,
        volume_24h: Num | None = None,
        mark_price: Num | None = None,
        index_price: Num | None = None,
        prev_price_24h: Num | None = None,
        prev_price_1h: Num | None = None,
        high_price_24h: Num | None = None,
        low_price_24h: Num | None = None,
        funding_rate: Num | None = None,
        next_funding_time_ms: int | None = None,
        bid: Num | None = None,
        ask: Num | None = None,
        open_interest: Num | None = None,
    ) -> None:
        """Set ticker fields; arguments left None keep their value. A new last price works as :meth:`set_price`."""
        with self._lock:
            self._instrument(symbol)
            ticker = self._tickers.setdefault(symbol, _Ticker())
            if turnover_24h is not None:
                ticker.turnover_24h = to_decimal(turnover_24h)
            if volume_24h is not None:
                ticker.volume_24h = to_decimal(volume_24h)
            if index_price is not None:
                ticker.index = to_decimal(index_price)
            if prev_price_24h is not None:
                ticker.prev_24h = to_decimal(prev_price_24h)
            if prev_price_1h is not None:
                ticker.prev_1h = to_decimal(prev_price_1h)
            if high_price_24h is not None:
                ticker.high_24h = to_decimal(high_price_24h)
            if low_price_24h is not None:
                ticker.low_24h = to_decimal(low_price_24h)
            if funding_rate is not None:
                ticker.funding_rate = to_decimal(funding_rate)
            if next_funding_time_ms is not None:
                ticker.next_funding_time_ms = int(next_funding_time_ms)
            if bid is not None:
                ticker.bid = to_decimal(bid)
            if ask is not None:
                ticker.ask = to_decimal(ask)
            if open_interest is not None:
                ticker.open_interest = to_decimal(open_interest)
            if last_price is not None:
                self.set_price(symbol, last_price, mark_price=mark_price)
            elif mark_price is not None:
                ticker.mark = to_decimal(mark_price)

    def set_price(self, symbol: str, price: Num, *, mark_price: Num | None = None) -> list[FakeExecution]:
        """Move the last (and mark) price; resting limit orders it crosses fill, as maker, at their limit price.

        Returns the executions this caused.
        """
        with self._lock:
            self._instrument(symbol)
            ticker = self._tickers.setdefault(symbol, _Ticker())
            ticker.last = to_decimal(price)
            ticker.mark = to_decimal(mark_price) if mark_price is not None else ticker.last
            before = len(self._executions)
            for order in self._open_orders(symbol):
                if order.order_type != "Limit" or order.price is None:
                    continue
                crosses = ticker.last <= order.price if order.side == "Buy" else ticker.last >= order.price
                if crosses:
                    self._fill_order(order, order.leaves_qty, order.price, is_maker=True)
            return [replace(e) for e in self._executions[before:]]

    def set_slippage(self, bps: Num, symbol: str | None = None) -> None:
        """Adverse slippage for taker fills in basis points (all symbols, or one)."""
        with self._lock:
            if symbol is None:
                self.slippage_bps = to_decimal(bps)
            else:
                self._symbol_slippage[symbol] = to_decimal(bps)

    def set_balance(self, coin: str = "USDT", amount: Num = "10000") -> None:
        with self._lock:
            self._wallet[coin] = to_decimal(amount)

    def set_leverage(self, symbol: str, leverage: Num) -> None:
        with self._lock:
            self._position(symbol).leverage = to_decimal(leverage)

    def set_funding_history(self, symbol: str, rows: list[tuple[int, Num]]) -> None:
        """Replace the funding history of a symbol: rows of (funding_time_ms, rate)."""
        with self._lock:
            self._instrument(symbol)
            self._funding[symbol] = {int(ts): to_decimal(rate) for ts, rate in rows}

    def settle_funding(self, symbol: str, rate: Num | None = None, *, time_ms: int | None = None) -> Decimal:
        """Settle one funding round at the mark price: longs pay a positive rate, shorts receive it.

        Adds (time, rate) to the funding history, moves the wallet, records an execution with execType "Funding"
        (ccxt's fetch_my_trades asks for execType=Trade only, so it does not show there). Returns the amount the
        account paid (negative when it received).
        """
        with self._lock:
            inst = self._instrument(symbol)
            ticker = self._tickers.setdefault(symbol, _Ticker())
            funding_rate = to_decimal(rate) if rate is not None else ticker.funding_rate
            ts = time_ms if time_ms is not None else self.now_ms()
            self._funding.setdefault(symbol, {})[ts] = funding_rate
            pos = self._positions.get(symbol)
            mark = self._mark_price(symbol)
            if pos is None or not pos.size or mark is None:
                return Decimal(0)
            value = abs(pos.size) * mark
            paid = pos.size * mark * funding_rate
            self._wallet[inst.settle] = self._wallet.get(inst.settle, Decimal(0)) - paid
            pos.cur_realised_pnl -= paid
            pos.cum_realised_pnl -= paid
            self._executions.append(
                FakeExecution(
                    exec_id=str(uuid.uuid4()), order_id="", order_link_id="", symbol=symbol,
                    side="Sell" if pos.size > 0 else "Buy", exec_price=mark, exec_qty=abs(pos.size),
                    exec_value=value, exec_fee=paid, fee_rate=funding_rate, exec_time_ms=ts, is_maker=False,
                    exec_type="Funding", order_type="UNKNOWN", order_qty=Decimal(0), order_price=None,
                    leaves_qty=Decimal(0), closed_size=Decimal(0), exec_pnl=Decimal(0), mark_price=mark,
                    seq=self._next_seq(),
                )
            )  # fmt: skip
            return paid

    def fill_order(
        self,
        order_id: str | None = None,
        *,
        order_link_id: str | None = None,
        qty: Num | None = None,
        price: Num | None = None,
        is_maker: bool | None = None,
    ) -> FakeExecution:
        """Fill (part of) an open order by hand, e.g. the resting rest of a partially filled market order.

        Defaults: the whole remaining quantity, at the limit price (limit) or the current price (market).
        """
        with self._lock:
            order = self._find_order(order_id, order_link_id)
            if order is None or not order.is_open:
                raise KeyError(f"no open order {order_id or order_link_id!r}")
            fill_qty = to_decimal(qty) if qty is not None else order.leaves_qty
            if price is not None:
                fill_price = to_decimal(price)
            elif order.order_type == "Limit" and order.price is not None:
                fill_price = order.price
            else:
                current = self._current_price(order.symbol)
                if current is None:
                    raise ValueError(f"no price set for {order.symbol}")
                fill_price = current
            maker = is_maker if is_maker is not None else order.order_type == "Limit"
            before = len(self._executions)
            self._fill_order(order, fill_qty, fill_price, is_maker=maker)
            if len(self._executions) == before:
                raise ValueError("nothing filled (reduce-only order without a position to reduce?)")
            return replace(self._executions[-1])

    def liquidate(self, symbol: str, *, qty: Decimal | str | None = None, kind: str = "BustTrade") -> None:
        """The exchange closes ``qty`` of the position (default all of it) itself, at the current price with no fee:
        a liquidation (``kind="BustTrade"``) or auto-deleveraging (``"AdlTrade"``); an execution with no order link
        id and that execType, as Bybit lists them."""
        with self._lock:
            pos = self._position(symbol)
            amount = abs(pos.size) if qty is None else Decimal(str(qty))
            if not pos.size or amount <= 0:
                return
            self._settle_at(self._instrument(symbol), pos, "Sell" if pos.size > 0 else "Buy", amount,
                            self._current_price(symbol), kind)

    def close_position_by_hand(self, symbol: str, *, order_link_id: str | None = None) -> FakeExecution | None:
        """A person flattens the position in the exchange's UI; returns the execution, None if already flat.

        A reduce-only market order for the whole position, under ``order_link_id`` (default ``manual-<8 hex>``,
        never one the bot made), fills at once like any market order: at the current price (plus the configured
        slippage) with the taker fee. It shows in order history and /v5/execution/list. Raises
        :class:`BybitError` if the exchange would refuse it (e.g. the instrument is not trading).
        """
        with self._lock:
            pos = self._position(symbol)
            if not pos.size:
                return None
            side = "Sell" if pos.size > 0 else "Buy"
            return self._order_by_hand(symbol, side, abs(pos.size), reduce_only=True, order_link_id=order_link_id)

    def open_position_by_hand(
        self, symbol: str, side: str, qty: Num, *, order_link_id: str | None = None
    ) -> FakeExecution:
        """A person places a market order in the exchange's UI (``side`` "Buy"/"Sell", any case); returns its fill.

        Not reduce-only: it opens, adds to, reduces or flips the position like any market order, under
        ``order_link_id`` (default ``manual-<8 hex>``). The exchange's rules apply (qty step, minimum notional,
        margin): a refusal raises :class:`BybitError`.
        """
        wire_side = {"buy": "Buy", "sell": "Sell"}.get(str(side).lower())
        if wire_side is None:
            raise ValueError(f"side must be 'Buy' or 'Sell', got {side!r}")
        with self._lock:
            execution = self._order_by_hand(symbol, wire_side, to_decimal(qty), reduce_only=False,
                                            order_link_id=order_link_id)  # fmt: skip
            assert execution is not None
            return execution

    def _order_by_hand(
        self, symbol: str, side: str, qty: Decimal, *, reduce_only: bool, order_link_id: str | None
    ) -> FakeExecution | None:
        """Place a market order as a person would (not through the API); its last fill, None if nothing filled."""
        link_id = order_link_id if order_link_id is not None else f"manual-{uuid.uuid4().hex[:8]}"
        self._instrument(symbol)
        params = {
            "category": "linear", "symbol": symbol, "side": side, "orderType": "Market", "qty": fmt(qty),
            "orderLinkId": link_id, "reduceOnly": reduce_only, "positionIdx": 0,
        }  # fmt: skip
        order_id = self._create_order(params, by_hand=True)["orderId"]
        fills = [e for e in self._executions if e.order_id == order_id]
        return replace(fills[-1]) if fills else None

    # ---------------------------------------------------------------------------------------------------- faults

    def _add_fault(self, fault: _Fault) -> None:
        if fault.times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._faults.append(fault)

    @staticmethod
    def _match(symbol: str | None, order_link_id: str | None) -> dict[str, str]:
        match = {}
        if symbol is not None:
            match["symbol"] = symbol
        if order_link_id is not None:
            match["orderLinkId"] = order_link_id
        return match

    def fail_next(
        self,
        path: str | None,
        ret_code: int,
        ret_msg: str,
        *,
        times: int = 1,
        symbol: str | None = None,
        order_link_id: str | None = None,
        http_status: int = 200,
        params: Mapping[str, str] | None = None,
    ) -> None:
        """The next ``times`` matching requests get {"retCode": ret_code, "retMsg": ret_msg} and change nothing.

        ``path=None`` matches every path; ``params`` narrows the match to requests with those parameters (e.g.
        ``{"execType": "Funding"}``: the funding read of the execution list, not an order's executions).
        """
        match = {**self._match(symbol, order_link_id), **(params or {})}
        self._add_fault(_Fault("ret", path, match, times, ret_code, ret_msg, http_status=http_status))

    def reject_next_order(
        self, symbol: str, ret_code: int, msg: str, *, times: int = 1, order_link_id: str | None = None
    ) -> None:
        """The next order(s) created on ``symbol`` are rejected with this retCode; nothing is created."""
        self.fail_next("/v5/order/create", ret_code, msg, times=times, symbol=symbol, order_link_id=order_link_id)

    def auth_error_next(self, path: str | None, ret_code: int = 10004, *, times: int = 1) -> None:
        """The next request(s) are refused for their signature with Bybit's own text, which echoes what the request
        sent: 10004 "error sign! origin_string[<timestamp><api key><recv window>...]", or 10001 "empty value:
        apiTimestamp[..] apiKey[..] apiSignature[..]: openapi sign params error!" (with the request's signature)."""
        templates = {
            10004: "error sign! origin_string[{timestamp}{api_key}{recv_window}category=linear]",
            10001: "empty value: apiTimestamp[{timestamp}] apiKey[{api_key}] apiSignature[{sign}]: openapi sign "
                   "params error!",
        }  # fmt: skip
        if ret_code not in templates:
            raise ValueError(f"ret_code must be one of {sorted(templates)}")
        self._add_fault(_Fault("ret", path, {}, times, ret_code, templates[ret_code], echo_auth=True))

    def rate_limit_next(self, path: str | None, *, times: int = 1, symbol: str | None = None) -> None:
        """retCode 10006 "Too many visits!" (HTTP 200, as Bybit answers a per-key limit); nothing is applied."""
        self.fail_next(path, 10006, "Too many visits!", times=times, symbol=symbol)

    def http_error_next(
        self,
        path: str | None,
        status: int,
        *,
        times: int = 1,
        body: str | None = None,
        symbol: str | None = None,
        order_link_id: str | None = None,
    ) -> None:
        """Answer with HTTP ``status`` and a non-JSON body (like a gateway would); nothing is applied."""
        self._add_fault(_Fault("http", path, self._match(symbol, order_link_id), times, http_status=status, body=body))

    def error_after_accept_next(
        self,
        path: str | None,
        ret_code: int = INTERNAL_ERROR_CODE,
        ret_msg: str = INTERNAL_ERROR_MSG,
        *,
        times: int = 1,
        symbol: str | None = None,
        order_link_id: str | None = None,
        http_status: int = 200,
    ) -> None:
        """Apply the next ``times`` matching requests normally, then answer {"retCode": ret_code, ...} instead.

        An order is created and filled as usual, but the client gets an error: with the default 10016 "Internal
        System Error." ccxt raises a plain ``ExchangeError`` (a retMsg containing "Request timeout" would make it a
        ``RequestTimeout``). The request is handled exactly as without the fault, so a request the fake rejects
        (e.g. a duplicate orderLinkId) still applies nothing; only its answer is replaced.
        """
        self._add_fault(
            _Fault("ret", path, self._match(symbol, order_link_id), times, ret_code, ret_msg, http_status=http_status,
                   after_accept=True)
        )  # fmt: skip

    def http_error_after_accept_next(
        self,
        path: str | None,
        status: int = 502,
        *,
        times: int = 1,
        body: str | None = None,
        symbol: str | None = None,
        order_link_id: str | None = None,
    ) -> None:
        """Apply the next ``times`` matching requests normally, then answer HTTP ``status`` with an HTML page.

        Like a gateway that lost the upstream answer: the order exists although the client saw e.g. a 502 (ccxt:
        ``ExchangeNotAvailable``) or a 504 (ccxt: ``RequestTimeout``). ``body`` replaces the default HTML page.
        """
        self._add_fault(
            _Fault("http", path, self._match(symbol, order_link_id), times, http_status=status, body=body,
                   after_accept=True)
        )  # fmt: skip

    def timeout_after_accept_next(
        self,
        path: str | None,
        *,
        delay_s: float | None = None,
        times: int = 1,
        symbol: str | None = None,
        order_link_id: str | None = None,
    ) -> None:
        """Apply the request normally, then hold the answer for ``delay_s`` (default ``timeout_delay_s``).

        Use a delay longer than the client's timeout: the client sees a timeout although the order exists.
        """
        delay = self.timeout_delay_s if delay_s is None else delay_s
        self._add_fault(
            _Fault("timeout", path, self._match(symbol, order_link_id), times, delay_s=delay, after_accept=True)
        )

    def disconnect_next(
        self,
        path: str | None,
        *,
        after_accept: bool = False,
        times: int = 1,
        symbol: str | None = None,
        order_link_id: str | None = None,
    ) -> None:
        """Close the connection without answering (before or, with ``after_accept``, after applying it)."""
        self._add_fault(
            _Fault("disconnect", path, self._match(symbol, order_link_id), times, after_accept=after_accept)
        )

    def partial_fill_next(self, symbol: str, fraction: Num, *, times: int = 1, then: str = "rest") -> None:
        """The next market order(s) on ``symbol`` fill only ``fraction`` of their qty (rounded down to qtyStep).

        ``then="rest"``: the remainder stays open (PartiallyFilled) until :meth:`fill_order` or a cancel;
        ``then="cancel"``: the remainder is cancelled at once (PartiallyFilledCanceled, as an IOC would be).
        """
        if then not in ("rest", "cancel"):
            raise ValueError("then must be 'rest' or 'cancel'")
        frac = to_decimal(fraction)
        if not 0 <= frac <= 1:
            raise ValueError("fraction must be within [0, 1]")
        self._add_fault(_Fault("partial", "/v5/order/create", {"symbol": symbol}, times, fraction=frac, then=then))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending_faults(self) -> list[tuple[str, str | None, dict[str, str], int]]:
        """(kind, path, match, times left) of the faults that have not fired yet.

        kind: "ret", "http", "disconnect" (before the request is applied), "ret_after_accept",
        "http_after_accept", "disconnect_after_accept", "timeout" (always after), "partial". Random faults are not
        listed (see :meth:`random_fault_counts`).
        """
        with self._lock:
            return [(f.label, f.path, dict(f.match), f.times) for f in self._faults]

    def random_faults(
        self,
        seed: int,
        *,
        probability: float,
        kinds: tuple[str, ...] = ALL_RANDOM_FAULT_KINDS,
        paths: tuple[str, ...] | None = None,
        latency_s: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        """From now on, inject a random fault into each request to ``paths`` with the given probability.

        ``paths`` defaults to :data:`DEFAULT_RANDOM_FAULT_PATHS` (order create / cancel / realtime / history,
        execution list, position list, wallet balance); other paths are never touched. For each request to one of
        them, a ``random.Random(seed)`` first decides whether to inject (``probability``), then picks one of
        ``kinds`` (see :data:`ALL_RANDOM_FAULT_KINDS`), then the kind's details:

        - "ret_before": retCode 10002 (ccxt ``InvalidNonce``) or 10016 (ccxt ``ExchangeError``), nothing applied;
        - "error_after_accept": applied, then retCode 10016 (``ExchangeError``); only a POST changes state, so on
          a GET it becomes a "ret_before" (and is counted as one);
        - "http_before": an HTML 502 / 503 (``ExchangeNotAvailable``) or 504 (``RequestTimeout``) page, nothing
          applied; "http_after_accept": applied, then an HTML 502 page;
        - "timeout_after_accept": applied, the answer held for :attr:`timeout_delay_s` (set it above the client's
          timeout: ``RequestTimeout``);
        - "disconnect_before" / "disconnect_after_accept": the connection is closed without an answer, before or
          after applying the request (``NetworkError``);
        - "rate_limit": retCode 10006 "Too many visits!" (``RateLimitExceeded``), nothing applied;
        - "latency": applied and answered normally after a delay drawn uniformly from ``latency_s``.

        Deterministic: the same seed and the same sequence of requests to ``paths`` give the same faults (the
        generator is advanced only by those requests, and by the same amount whatever their outcome). Requests sent
        concurrently from several threads reach the fake in whatever order the threads interleave, so only a
        single-threaded client gets a reproducible sequence. Faults scheduled with the one-shot methods
        (:meth:`fail_next` ...) take precedence: a random fault that meets one on the same request is dropped and
        not counted. Delays happen in the request's handler thread, outside the fake's lock. Calling this again
        replaces the settings and restarts the counts and the log; :meth:`stop_random_faults` ends the mode.
        """
        unknown = [k for k in kinds if k not in ALL_RANDOM_FAULT_KINDS]
        if not kinds or unknown:
            raise ValueError(f"kinds must be a non-empty subset of {ALL_RANDOM_FAULT_KINDS}, got {kinds!r}")
        if not 0 <= probability <= 1:
            raise ValueError(f"probability must be within [0, 1], got {probability!r}")
        low, high = latency_s
        if not 0 <= low <= high:
            raise ValueError(f"latency_s must be (low, high) with 0 <= low <= high, got {latency_s!r}")
        chosen = DEFAULT_RANDOM_FAULT_PATHS if paths is None else tuple(paths)
        known = {path for _, path in self._routes}
        if not chosen or any(path not in known for path in chosen):
            raise ValueError(f"paths must be non-empty and among the fake's routes {sorted(known)}, got {chosen!r}")
        with self._lock:
            self._random = _RandomFaults(random.Random(seed), probability, tuple(kinds), frozenset(chosen), (low, high))
            self._random_counts = dict.fromkeys(ALL_RANDOM_FAULT_KINDS, 0)
            self._random_log = []

    def stop_random_faults(self) -> None:
        """End the random mode; later requests are answered normally. The counts and the log are kept."""
        with self._lock:
            self._random = None

    def random_fault_counts(self) -> dict[str, int]:
        """How many faults of each kind (every kind of :data:`ALL_RANDOM_FAULT_KINDS`, 0 included) were injected."""
        with self._lock:
            return dict(self._random_counts)

    def random_fault_log(self) -> list[InjectedFault]:
        """The faults the random mode injected, in order."""
        with self._lock:
            return list(self._random_log)

    def _draw_random_fault(self, method: str, path: str) -> tuple[str, _Fault] | None:
        """Ask the random mode about one request: None, or (kind, the fault to inject). Call under the lock."""
        mode = self._random
        if mode is None or path not in mode.paths:
            return None
        rng = mode.rng
        if rng.random() >= mode.probability:
            return None
        kind = rng.choice(mode.kinds)
        if kind == "error_after_accept" and method != "POST":
            kind = "ret_before"  # a read changes nothing: an error "after" it is one before it
        if kind == "ret_before":
            code, msg = rng.choice(RANDOM_RET_BEFORE_ERRORS)
            return kind, _Fault("ret", None, {}, 1, code, msg)
        if kind == "error_after_accept":
            return kind, _Fault("ret", None, {}, 1, INTERNAL_ERROR_CODE, INTERNAL_ERROR_MSG, after_accept=True)
        if kind == "http_before":
            return kind, _Fault("http", None, {}, 1, http_status=rng.choice(RANDOM_HTTP_BEFORE_STATUSES))
        if kind == "http_after_accept":
            return kind, _Fault("http", None, {}, 1, http_status=RANDOM_HTTP_AFTER_ACCEPT_STATUS, after_accept=True)
        if kind == "timeout_after_accept":
            return kind, _Fault("timeout", None, {}, 1, delay_s=self.timeout_delay_s, after_accept=True)
        if kind == "disconnect_before":
            return kind, _Fault("disconnect", None, {}, 1)
        if kind == "disconnect_after_accept":
            return kind, _Fault("disconnect", None, {}, 1, after_accept=True)
        if kind == "rate_limit":
            return kind, _Fault("ret", None, {}, 1, 10006, "Too many visits!")
        low, high = mode.latency_s
        return kind, _Fault("latency", None, {}, 1, delay_s=rng.uniform(low, high), after_accept=True)

    def _record_random_fault(self, method: str, path: str, params: Mapping[str, Any], kind: str, fault: _Fault) -> None:
        """Count and log a random fault that is being injected. Call under the lock."""
        if fault.kind in ("ret", "http"):
            detail = str(fault.ret_code if fault.kind == "ret" else fault.http_status)
        elif fault.kind in ("timeout", "latency"):
            detail = f"{fault.delay_s:.3f}s"
        else:
            detail = ""
        self._random_counts[kind] += 1
        self._random_log.append(InjectedFault(method, path, kind, detail, str(params.get("orderLinkId") or "")))

    def _take_fault(self, kinds: tuple[str, ...], path: str, params: Mapping[str, Any], **attrs: Any) -> _Fault | None:
        for fault in self._faults:
            if fault.kind not in kinds or not fault.matches(path, params):
                continue
            if any(getattr(fault, key) != value for key, value in attrs.items()):
                continue
            fault.times -= 1
            if fault.times <= 0:
                self._faults.remove(fault)
            return fault
        return None

    # ---------------------------------------------------------------------------------------------------- inspection

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request that reached the server, in order: (method, path, params-or-body)."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str, method: str | None = None, **match: Any) -> list[RecordedRequest]:
        """Requests to ``path`` whose params include ``match`` (compared as strings)."""
        return [
            r
            for r in self.requests
            if r.path == path
            and (method is None or r.method == method)
            and all(str(r.params.get(k)) == str(v) for k, v in match.items())
        ]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    @property
    def errors(self) -> list[str]:
        """Tracebacks of exceptions raised inside the fake's handlers (answered as HTTP 500): should stay empty."""
        with self._lock:
            return list(self._errors)

    def instrument(self, symbol: str) -> Instrument:
        with self._lock:
            return replace(self._instrument(symbol))

    def orders(self, symbol: str | None = None, status: str | None = None) -> list[FakeOrder]:
        """Copies of all orders (every status), oldest first."""
        with self._lock:
            return [
                replace(o)
                for o in sorted(self._orders.values(), key=lambda o: o.seq)
                if (symbol is None or o.symbol == symbol) and (status is None or o.status == status)
            ]

    def order(self, order_id: str | None = None, *, order_link_id: str | None = None) -> FakeOrder | None:
        with self._lock:
            found = self._find_order(order_id, order_link_id)
            return replace(found) if found is not None else None

    def positions(self, include_flat: bool = False) -> dict[str, FakePosition]:
        """Copies of the positions by symbol (only open ones unless ``include_flat``)."""
        with self._lock:
            return {s: replace(p) for s, p in self._positions.items() if include_flat or p.size}

    def position(self, symbol: str) -> FakePosition:
        with self._lock:
            return replace(self._position(symbol))

    def executions(
        self, symbol: str | None = None, *, order_id: str | None = None, order_link_id: str | None = None
    ) -> list[FakeExecution]:
        """Copies of all executions (trades, funding, delivery), oldest first."""
        with self._lock:
            return [
                replace(e)
                for e in self._executions
                if (symbol is None or e.symbol == symbol)
                and (order_id is None or e.order_id == order_id)
                and (order_link_id is None or e.order_link_id == order_link_id)
            ]

    def balance(self, coin: str = "USDT") -> Decimal:
        """Wallet balance of ``coin`` (deposits - fees + realised PnL - funding paid; unrealised PnL excluded)."""
        with self._lock:
            return self._wallet.get(coin, Decimal(0))

    def balances(self) -> dict[str, Decimal]:
        with self._lock:
            return dict(self._wallet)

    def equity(self, coin: str = "USDT") -> Decimal:
        with self._lock:
            return self._wallet.get(coin, Decimal(0)) + self._unrealised(coin)

    def available_balance(self, coin: str = "USDT") -> Decimal:
        with self._lock:
            return self._available(coin)

    # ---------------------------------------------------------------------------------------------------- dispatch

    def _dispatch(self, method: str, path: str, params: dict[str, Any], *, bad_json: bool = False,
                  headers: Mapping[str, str] | None = None) -> _Reply:
        """Answer one request: faults before it, the route, faults after it. Never sleeps: delays go in the reply."""
        with self._lock:
            self._requests.append(RecordedRequest(method, path, dict(params)))
            drawn = self._draw_random_fault(method, path)
            fault = self._take_fault(("ret", "http", "disconnect"), path, params, after_accept=False)
            if fault is None and drawn is not None and not drawn[1].after_accept:
                self._record_random_fault(method, path, params, *drawn)
                fault = drawn[1]
            if fault is not None:
                return self._fault_reply(fault, None, headers)
            if bad_json:
                return self._json_reply(self._envelope(10001, "request body is not valid JSON", {}))
            route = self._routes.get((method, path))
            if route is None:
                known = sorted(p for m, p in self._routes if m == method)
                msg = f"fake bybit: no route for {method} {path} (known {method} paths: {', '.join(known)})"
                return self._json_reply(self._envelope(10017, msg, {}), 404)
            try:
                result = route(params)
                envelope = self._envelope(0, "OK", result)
            except BybitError as exc:
                envelope = self._envelope(exc.code, exc.msg, {})
            except Exception as exc:  # noqa: BLE001 - a bug in the fake must reach the test as a 500, not hang it
                import traceback

                self._errors.append(traceback.format_exc())
                return self._json_reply(self._envelope(10016, f"fake bybit internal error: {exc!r}", {}), 500)
            reply = self._json_reply(envelope)
            after = self._take_fault(("ret", "http", "timeout", "disconnect"), path, params, after_accept=True)
            if after is None and drawn is not None and drawn[1].after_accept:
                self._record_random_fault(method, path, params, *drawn)
                after = drawn[1]
            return self._fault_reply(after, reply, headers) if after is not None else reply

    def _fault_reply(self, fault: _Fault, reply: _Reply | None, headers: Mapping[str, str] | None = None) -> _Reply:
        """The answer a fault gives; ``reply`` is the real answer of an applied request (None before applying)."""
        if fault.kind == "ret":
            msg = fault.ret_msg
            if fault.echo_auth:
                auth = {k.lower(): v for k, v in (headers or {}).items()}
                msg = msg.format(timestamp=auth.get("x-bapi-timestamp", ""), api_key=auth.get("x-bapi-api-key", ""),
                                 sign=auth.get("x-bapi-sign", ""), recv_window=auth.get("x-bapi-recv-window", ""))
            return self._json_reply(self._envelope(fault.ret_code, msg, {}), fault.http_status)
        if fault.kind == "http":
            text = fault.body if fault.body is not None else _http_error_page(fault.http_status)
            return _Reply(fault.http_status, text.encode(), content_type="text/html")
        if fault.kind == "disconnect":
            return _Reply(0, b"", disconnect=True)
        assert reply is not None and fault.kind in ("timeout", "latency")
        reply.delay_s = fault.delay_s  # slept by the handler thread, outside the lock
        return reply

    def _envelope(self, code: int, msg: str, result: Any) -> dict[str, Any]:
        return {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": self.now_ms()}

    @staticmethod
    def _json_reply(payload: dict[str, Any], status: int = 200) -> _Reply:
        return _Reply(status, json.dumps(payload, separators=(",", ":")).encode())

    # ---------------------------------------------------------------------------------------------------- internals

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _instrument(self, symbol: str) -> Instrument:
        try:
            return self._instruments[symbol]
        except KeyError:
            raise KeyError(f"unknown instrument {symbol!r}; add_instrument() it first") from None

    def _require_symbol(self, params: Mapping[str, Any], required: bool = True) -> Instrument | None:
        symbol = params.get("symbol")
        if not symbol:
            if required:
                raise BybitError(10001, "params error: symbol invalid")
            return None
        inst = self._instruments.get(str(symbol))
        if inst is None:
            raise BybitError(10001, "Not supported symbols")
        return inst

    @staticmethod
    def _require_linear(params: Mapping[str, Any]) -> None:
        category = params.get("category")
        if category != "linear":
            raise BybitError(10001, f"fake bybit simulates category=linear only, got category={category!r}")

    def _position(self, symbol: str) -> FakePosition:
        pos = self._positions.get(symbol)
        if pos is None:
            inst = self._instrument(symbol)
            pos = FakePosition(symbol=symbol, leverage=inst.default_leverage)
            self._positions[symbol] = pos
        return pos

    def _current_price(self, symbol: str) -> Decimal | None:
        ticker = self._tickers.get(symbol)
        return ticker.last if ticker is not None else None

    def _mark_price(self, symbol: str) -> Decimal | None:
        ticker = self._tickers.get(symbol)
        if ticker is None:
            return None
        return ticker.mark if ticker.mark is not None else ticker.last

    def _open_orders(self, symbol: str | None = None) -> list[FakeOrder]:
        return sorted(
            (o for o in self._orders.values() if o.is_open and (symbol is None or o.symbol == symbol)),
            key=lambda o: o.seq,
        )

    def _find_order(self, order_id: str | None, order_link_id: str | None) -> FakeOrder | None:
        if order_id:
            order = self._orders.get(order_id)
            if order is not None and (not order_link_id or order.order_link_id == order_link_id):
                return order
            return None
        if order_link_id:
            found = self._link_ids.get(order_link_id)
            return self._orders.get(found) if found else None
        return None

    def _unrealised(self, coin: str) -> Decimal:
        total = Decimal(0)
        for pos in self._positions.values():
            if self._instruments[pos.symbol].settle == coin:
                total += pos.unrealised_pnl(self._mark_price(pos.symbol))
        return total

    def _position_im(self, coin: str) -> Decimal:
        return sum(
            (p.value / p.leverage for p in self._positions.values() if self._instruments[p.symbol].settle == coin),
            Decimal(0),
        )

    def _position_mm(self, coin: str) -> Decimal:
        return sum(
            (p.value * MAINTENANCE_MARGIN_RATE for p in self._positions.values()
             if self._instruments[p.symbol].settle == coin),
            Decimal(0),
        )  # fmt: skip

    def _order_im(self, coin: str) -> Decimal:
        total = Decimal(0)
        for order in self._open_orders():
            if order.settle != coin or order.reduce_only:
                continue
            price = order.price if order.order_type == "Limit" else self._current_price(order.symbol)
            if price is None:
                continue
            total += order.leaves_qty * price / self._position(order.symbol).leverage
        return total

    def _available(self, coin: str) -> Decimal:
        return (
            self._wallet.get(coin, Decimal(0)) + self._unrealised(coin) - self._position_im(coin) - self._order_im(coin)
        )

    def _taker_price(self, inst: Instrument, side: str, base: Decimal) -> Decimal:
        bps = self._symbol_slippage.get(inst.symbol, self.slippage_bps)
        if not bps:
            return base
        if side == "Buy":
            return _round_to_step(base * (1 + bps / 10_000), inst.tick_size, ROUND_CEILING)
        return _round_to_step(base * (1 - bps / 10_000), inst.tick_size, ROUND_FLOOR)

    def _apply_to_position(self, inst: Instrument, side: str, qty: Decimal, price: Decimal) -> tuple[Decimal, Decimal]:
        """Net a fill into the position. Returns (realised pnl before fees, closed size)."""
        pos = self._position(inst.symbol)
        now = self.now_ms()
        signed = qty if side == "Buy" else -qty
        pnl = Decimal(0)
        closed = Decimal(0)
        if pos.size == 0 or (pos.size > 0) == (signed > 0):
            new_size = pos.size + signed
            if pos.size == 0:
                pos.created_ms = now
                pos.cur_realised_pnl = Decimal(0)
            pos.avg_price = (abs(pos.size) * pos.avg_price + qty * price) / abs(new_size)
            pos.size = new_size
        else:
            closed = min(qty, abs(pos.size))
            direction = 1 if pos.size > 0 else -1
            pnl = closed * (price - pos.avg_price) * direction
            new_size = pos.size + signed
            if new_size == 0:
                pos.avg_price = Decimal(0)
            elif (new_size > 0) != (pos.size > 0):  # flipped: the rest opens a new position at the fill price
                pos.avg_price = price
                pos.created_ms = now
                pos.cur_realised_pnl = Decimal(0)
            pos.size = new_size
        pos.updated_ms = now
        pos.seq = self._next_seq()
        return pnl, closed

    def _settle_at(
        self, inst: Instrument, pos: FakePosition, side: str, qty: Decimal, price: Decimal, kind: str
    ) -> None:
        pnl, closed = self._apply_to_position(inst, side, qty, price)
        self._wallet[inst.settle] = self._wallet.get(inst.settle, Decimal(0)) + pnl
        pos.cur_realised_pnl += pnl
        pos.cum_realised_pnl += pnl
        self._executions.append(
            FakeExecution(
                exec_id=str(uuid.uuid4()), order_id="", order_link_id="", symbol=inst.symbol, side=side,
                exec_price=price, exec_qty=qty, exec_value=qty * price, exec_fee=Decimal(0), fee_rate=Decimal(0),
                exec_time_ms=self.now_ms(), is_maker=False, exec_type=kind, order_type="UNKNOWN",
                order_qty=Decimal(0), order_price=None, leaves_qty=Decimal(0), closed_size=closed, exec_pnl=pnl,
                mark_price=self._mark_price(inst.symbol), seq=self._next_seq(),
            )
        )  # fmt: skip

    def _fill_order(self, order: FakeOrder, qty: Decimal, price: Decimal, *, is_maker: bool) -> None:
        """Execute ``qty`` of an open order at ``price``: position, wallet, order, execution."""
        inst = self._instruments[order.symbol]
        pos = self._position(order.symbol)
        qty = min(qty, order.leaves_qty)
        if order.reduce_only:
            reducible = (
                abs(pos.size)
                if (pos.size > 0 and order.side == "Sell") or (pos.size < 0 and order.side == "Buy")
                else Decimal(0)
            )
            qty = min(qty, reducible)
        if qty > 0:
            fee_rate = self.maker_fee_rate if is_maker else self.taker_fee_rate
            value = qty * price
            fee = value * fee_rate
            pnl, closed = self._apply_to_position(inst, order.side, qty, price)
            self._wallet[inst.settle] = self._wallet.get(inst.settle, Decimal(0)) + pnl - fee
            pos.cur_realised_pnl += pnl - fee
            pos.cum_realised_pnl += pnl - fee
            order.cum_exec_qty += qty
            order.cum_exec_value += value
            order.cum_exec_fee += fee
            order.updated_ms = self.now_ms()
            order.status = "Filled" if order.cum_exec_qty >= order.qty else "PartiallyFilled"
            self._executions.append(
                FakeExecution(
                    exec_id=str(uuid.uuid4()), order_id=order.order_id, order_link_id=order.order_link_id,
                    symbol=order.symbol, side=order.side, exec_price=price, exec_qty=qty, exec_value=value,
                    exec_fee=fee, fee_rate=fee_rate, exec_time_ms=order.updated_ms, is_maker=is_maker,
                    exec_type="Trade", order_type=order.order_type, order_qty=order.qty, order_price=order.price,
                    leaves_qty=order.leaves_qty, closed_size=closed, exec_pnl=pnl,
                    mark_price=self._mark_price(order.symbol), seq=self._next_seq(),
                )
            )  # fmt: skip
        if order.reduce_only and order.is_open and not self._position(order.symbol).size:
            self._cancel(order, "CancelByReduceOnly")

    def _cancel(self, order: FakeOrder, cancel_type: str = "CancelByUser") -> None:
        order.status = "PartiallyFilledCanceled" if order.cum_exec_qty else "Cancelled"
        order.cancel_type = cancel_type
        order.updated_ms = self.now_ms()

    # ---------------------------------------------------------------------------------------------------- wire shapes

    def _order_wire(self, o: FakeOrder) -> dict[str, Any]:
        avg = o.avg_price
        leaves = o.leaves_qty
        wire: dict[str, Any] = {
            "orderId": o.order_id,
            "orderLinkId": o.order_link_id,
            "blockTradeId": "",
            "symbol": o.symbol,
            "price": fmt(o.price) if o.price is not None else "0",
            "qty": fmt(o.qty),
            "side": o.side,
            "isLeverage": "",
            "positionIdx": o.position_idx,
            "orderStatus": o.status,
            "createType": "CreateByUser",
            "cancelType": o.cancel_type,
            "rejectReason": o.reject_reason,
            "avgPrice": fmt(avg) if avg is not None else "",
            "leavesQty": fmt(leaves),
            "leavesValue": fmt(leaves * o.price) if o.price is not None else "0",
            "cumExecQty": fmt(o.cum_exec_qty),
            "cumExecValue": fmt(o.cum_exec_value),
            "cumExecFee": fmt(o.cum_exec_fee),
            "timeInForce": o.time_in_force,
            "orderType": o.order_type,
            "stopOrderType": "",
            "orderIv": "",
            "marketUnit": "",
            "triggerPrice": "",
            "takeProfit": "",
            "stopLoss": "",
            "tpslMode": "",
            "ocoTriggerBy": "",
            "tpLimitPrice": "",
            "slLimitPrice": "",
            "tpTriggerBy": "",
            "slTriggerBy": "",
            "triggerDirection": 0,
            "triggerBy": "",
            "lastPriceOnCreated": fmt(o.last_price_on_created),
            "basePrice": "",
            "reduceOnly": o.reduce_only,
            "closeOnTrigger": False,
            "placeType": "",
            "smpType": "None",
            "smpGroup": 0,
            "smpOrderId": "",
            "slippageTolerance": "0",
            "slippageToleranceType": "UNKNOWN",
            "extraFees": "",
            "createdTime": str(o.created_ms),
            "updatedTime": str(o.updated_ms),
        }
        if o.cum_exec_fee:
            wire["cumFeeDetail"] = {o.settle: fmt(o.cum_exec_fee)}
        return wire

    def _position_wire(self, pos: FakePosition) -> dict[str, Any]:
        mark = self._mark_price(pos.symbol)
        value = pos.value
        return {
            "positionIdx": 0,
            "riskId": 1,
            "riskLimitValue": "2000000",
            "symbol": pos.symbol,
            "side": pos.side,
            "size": fmt(abs(pos.size)),
            "avgPrice": fmt(pos.avg_price),
            "positionValue": fmt(value),
            "tradeMode": 0,
            "positionStatus": "Normal",
            "autoAddMargin": 0,
            "adlRankIndicator": 2 if pos.size else 0,
            "leverage": fmt(pos.leverage),
            "positionBalance": "0",
            "markPrice": fmt(mark) if mark is not None else "0",
            "liqPrice": "",
            "bustPrice": "",
            "positionMM": fmt(value * MAINTENANCE_MARGIN_RATE),
            "positionIM": fmt(value / pos.leverage),
            "tpslMode": "Full",
            "takeProfit": "",
            "stopLoss": "",
            "trailingStop": "0",
            "sessionAvgPrice": "",
            "unrealisedPnl": fmt(pos.unrealised_pnl(mark)),
            "curRealisedPnl": fmt(pos.cur_realised_pnl),
            "cumRealisedPnl": fmt(pos.cum_realised_pnl),
            "seq": pos.seq,
            "isReduceOnly": False,
            "mmrSysUpdatedTime": "",
            "leverageSysUpdatedTime": "",
            "createdTime": str(pos.created_ms),
            "updatedTime": str(pos.updated_ms),
        }

    def _execution_wire(self, e: FakeExecution) -> dict[str, Any]:
        return {
            "symbol": e.symbol,
            "orderType": e.order_type,
            "underlyingPrice": "",
            "orderLinkId": e.order_link_id,
            "orderId": e.order_id,
            "stopOrderType": "UNKNOWN",
            "execTime": str(e.exec_time_ms),
            "feeCurrency": "",
            "createType": "CreateByUser" if e.exec_type == "Trade" else "",
            "feeRate": fmt(e.fee_rate),
            "tradeIv": "",
            "blockTradeId": "",
            "markPrice": fmt(e.mark_price),
            "execPrice": fmt(e.exec_price),
            "markIv": "",
            "orderQty": fmt(e.order_qty),
            "orderPrice": fmt(e.order_price),
            "execValue": fmt(e.exec_value),
            "closedSize": fmt(e.closed_size),
            "execType": e.exec_type,
            "seq": e.seq,
            "side": e.side,
            "indexPrice": "",
            "leavesQty": fmt(e.leaves_qty),
            "isMaker": e.is_maker,
            "execFee": fmt(e.exec_fee),
            "execId": e.exec_id,
            "execQty": fmt(e.exec_qty),
            "execPnl": fmt(e.exec_pnl),
            "extraFees": "",
            "marketUnit": "",
        }

    def _ticker_wire(self, inst: Instrument, t: _Ticker) -> dict[str, Any]:
        last = t.last
        mark = t.mark if t.mark is not None else last
        prev = t.prev_24h if t.prev_24h is not None else last
        pct = (last - prev) / prev if last is not None and prev else Decimal(0)
        volume = t.volume_24h
        if volume is None:
            volume = t.turnover_24h / last if last else Decimal(0)
            with suppress(InvalidOperation):
                volume = volume.quantize(inst.qty_step)
        next_funding = t.next_funding_time_ms
        if next_funding is None:
            interval = inst.funding_interval_minutes * 60_000
            next_funding = (self.now_ms() // interval + 1) * interval
        return {
            "symbol": inst.symbol,
            "lastPrice": fmt(last) if last is not None else "0",
            "indexPrice": fmt(t.index if t.index is not None else mark),
            "markPrice": fmt(mark) if mark is not None else "0",
            "prevPrice24h": fmt(prev) if prev is not None else "0",
            "price24hPcnt": fmt(pct.quantize(Decimal("0.000001"))),
            "highPrice24h": fmt(t.high_24h if t.high_24h is not None else last),
            "lowPrice24h": fmt(t.low_24h if t.low_24h is not None else last),
            "prevPrice1h": fmt(t.prev_1h if t.prev_1h is not None else last),
            "openInterest": fmt(t.open_interest),
            "openInterestValue": fmt(t.open_interest * mark) if mark is not None else "0",
            "turnover24h": fmt(t.turnover_24h),
            "volume24h": fmt(volume),
            "fundingRate": fmt(t.funding_rate),
            "nextFundingTime": str(next_funding),
            "predictedDeliveryPrice": "",
            "basisRate": "",
            "deliveryFeeRate": "",
            "deliveryTime": str(inst.delivery_time_ms),
            "ask1Size": fmt(t.ask_size),
            "bid1Price": fmt(t.bid if t.bid is not None else last),
            "ask1Price": fmt(t.ask if t.ask is not None else last),
            "bid1Size": fmt(t.bid_size),
            "basis": "",
            "preOpenPrice": "",
            "preQty": "",
            "curPreListingPhase": "",
        }

    # ---------------------------------------------------------------------------------------------------- pagination

    @staticmethod
    def _limit(params: Mapping[str, Any], default: int, maximum: int) -> int:
        raw = params.get("limit")
        if raw in (None, ""):
            return default
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise BybitError(10001, f"params error: limit invalid ({raw!r})") from None
        return max(1, min(value, maximum))

    @staticmethod
    def _page(items: list[Any], params: Mapping[str, Any], limit: int) -> tuple[list[Any], str]:
        cursor = params.get("cursor") or ""
        offset = 0
        if cursor:
            try:
                offset = int(str(cursor).removeprefix("c"))
            except ValueError:
                raise BybitError(10001, f"params error: cursor invalid ({cursor!r})") from None
        page = items[offset : offset + limit]
        next_cursor = f"c{offset + limit}" if offset + limit < len(items) else ""
        return page, next_cursor

    @staticmethod
    def _time_param(params: Mapping[str, Any], key: str) -> int | None:
        raw = params.get(key)
        if raw in (None, ""):
            return None
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise BybitError(10001, f"params error: {key} invalid ({raw!r})") from None

    # ---------------------------------------------------------------------------------------------------- market routes

    def _h_time(self, params: dict[str, Any]) -> dict[str, Any]:
        now = self.now_ms()
        return {"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)}

    def _h_instruments(self, params: dict[str, Any]) -> dict[str, Any]:
        category = params.get("category")
        if category != "linear":
            return {"category": category or "", "list": [], "nextPageCursor": ""}
        items = list(self._instruments.values())
        symbol = params.get("symbol")
        status = params.get("status")
        if symbol:
            items = [i for i in items if i.symbol == symbol]
        if status:
            items = [i for i in items if i.status == status]
        elif not symbol:
            items = [i for i in items if not i.hidden and i.status != "PreLaunch"]
        if params.get("baseCoin"):
            items = [i for i in items if i.base == params["baseCoin"]]
        limit = min(self._limit(params, 500, 1000), self.instrument_page_size)
        page, next_cursor = self._page(items, params, limit)
        return {"category": "linear", "list": [i.wire() for i in page], "nextPageCursor": next_cursor}

    def _h_kline(self, params: dict[str, Any]) -> dict[str, Any]:
        self._require_linear(params)
        inst = self._require_symbol(params)
        assert inst is not None
        interval = str(params.get("interval", ""))
        if interval not in KLINE_INTERVALS:
            raise BybitError(10001, f"Invalid period! interval={interval!r}")
        start = self._time_param(params, "start")
        end = self._time_param(params, "end")
        limit = self._limit(params, 200, 1000)
        bars = sorted(self._candles.get((inst.symbol, interval), {}).items())
        selected = [
            (open_ms, values)
            for open_ms, values in bars
            if (start is None or interval_end_ms(interval, open_ms) > start) and (end is None or open_ms <= end)
        ]
        # with only `start`, Bybit answers the bars from `start` on; otherwise the latest ones up to `end`
        selected = selected[:limit] if start is not None and end is None else selected[-limit:]
        rows = [[str(open_ms), *values] for open_ms, values in reversed(selected)]
        return {"category": "linear", "symbol": inst.symbol, "list": rows}

    def _h_tickers(self, params: dict[str, Any]) -> dict[str, Any]:
        category = params.get("category")
        if category != "linear":
            return {"category": category or "", "list": []}
        inst = self._require_symbol(params, required=False)
        if inst is not None:
            ticker = self._tickers.get(inst.symbol)
            if ticker is None:
                ticker = _Ticker()
            return {"category": "linear", "list": [self._ticker_wire(inst, ticker)]}
        rows = [
            self._ticker_wire(self._instruments[symbol], ticker)
            for symbol, ticker in self._tickers.items()
            if not self._instruments[symbol].hidden and self._instruments[symbol].status != "Closed"
        ]
        return {"category": "linear", "list": rows}

    def _h_funding_history(self, params: dict[str, Any]) -> dict[str, Any]:
        self._require_linear(params)
        inst = self._require_symbol(params)
        assert inst is not None
        start = self._time_param(params, "startTime")
        end = self._time_param(params, "endTime")
        if start is not None and end is None:
            raise BybitError(10001, "params error: endTime is required when startTime is given")
        limit = self._limit(params, 200, 200)
        rows = sorted(self._funding.get(inst.symbol, {}).items(), reverse=True)
        rows = [(ts, r) for ts, r in rows if (start is None or ts >= start) and (end is None or ts <= end)][:limit]
        return {
            "category": "linear",
            "list": [
                {"symbol": inst.symbol, "fundingRate": fmt(rate), "fundingRateTimestamp": str(ts)} for ts, rate in rows
            ],
        }

    # ------------------------------------------------------------------------------------------------ account routes

    def _h_coin_info(self, params: dict[str, Any]) -> dict[str, Any]:
        coins: list[str] = []
        for inst in self._instruments.values():
            for coin in (inst.base, inst.quote, inst.settle):
                if coin not in coins:
                    coins.append(coin)
        for coin in self._wallet:
            if coin not in coins:
                coins.append(coin)
        if params.get("coin"):
            coins = [c for c in coins if c == params["coin"]]
        rows = [{"name": c, "coin": c, "remainAmount": "1000000", "chains": []} for c in coins]
        return {"rows": rows}

    def _h_wallet_balance(self, params: dict[str, Any]) -> dict[str, Any]:
        account_type = params.get("accountType")
        if account_type != "UNIFIED":
            raise BybitError(10001, f"accountType only support UNIFIED, got {account_type!r}")
        wanted = [c for c in str(params.get("coin") or "").split(",") if c]
        coins = []
        total_equity = total_wallet = total_upl = total_im = total_mm = Decimal(0)
        for coin, wallet in self._wallet.items():
            if wanted and coin not in wanted:
                continue
            upl = self._unrealised(coin)
            position_im = self._position_im(coin)
            order_im = self._order_im(coin)
            position_mm = self._position_mm(coin)
            usd = Decimal(1) if coin in ("USDT", "USDC", "USD") else (self._current_price(f"{coin}USDT") or Decimal(0))
            cum_realised = sum(
                (p.cum_realised_pnl for p in self._positions.values() if self._instruments[p.symbol].settle == coin),
                Decimal(0),
            )
            coins.append(
                {
                    "coin": coin,
                    "equity": fmt(wallet + upl),
                    "usdValue": fmt((wallet + upl) * usd),
                    "walletBalance": fmt(wallet),
                    "free": "",
                    "locked": "0",
                    "spotHedgingQty": "0",
                    "borrowAmount": "0",
                    "availableToWithdraw": "",
                    "availableToBorrow": "",
                    "accruedInterest": "0",
                    "totalOrderIM": fmt(order_im),
                    "totalPositionIM": fmt(position_im),
                    "totalPositionMM": fmt(position_mm),
                    "unrealisedPnl": fmt(upl),
                    "cumRealisedPnl": fmt(cum_realised),
                    "bonus": "0",
                    "marginCollateral": True,
                    "collateralSwitch": True,
                    "spotBorrow": "0",
                }
            )
            total_equity += (wallet + upl) * usd
            total_wallet += wallet * usd
            total_upl += upl * usd
            total_im += (position_im + order_im) * usd
            total_mm += position_mm * usd
        available = total_equity - total_im
        account = {
            "accountType": "UNIFIED",
            "accountIMRate": fmt((total_im / total_equity).quantize(Decimal("0.0001"))) if total_equity else "0",
            "accountMMRate": fmt((total_mm / total_equity).quantize(Decimal("0.0001"))) if total_equity else "0",
            "accountLTV": "0",
            "totalEquity": fmt(total_equity),
            "totalWalletBalance": fmt(total_wallet),
            "totalMarginBalance": fmt(total_equity),
            "totalAvailableBalance": fmt(available),
            "totalPerpUPL": fmt(total_upl),
            "totalInitialMargin": fmt(total_im),
            "totalMaintenanceMargin": fmt(total_mm),
            "coin": coins,
        }
        return {"list": [account]}

    def _h_fee_rate(self, params: dict[str, Any]) -> dict[str, Any]:
        symbols = [params["symbol"]] if params.get("symbol") else list(self._instruments)
        return {
            "list": [
                {
                    "symbol": s,
                    "baseCoin": "",
                    "takerFeeRate": fmt(self.taker_fee_rate),
                    "makerFeeRate": fmt(self.maker_fee_rate),
                }
                for s in symbols
            ]
        }

    def _h_account_info(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "marginMode": "REGULAR_MARGIN",
            "updatedTime": str(self.now_ms()),
            "unifiedMarginStatus": 6,
            "dcpStatus": "OFF",
            "timeWindow": 10,
            "smpGroup": 0,
            "isMasterTrader": False,
            "spotHedgingStatus": "OFF",
        }

    def _h_query_api(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "1",
            "note": "fake",
            "apiKey": "k",
            "readOnly": 0,
            "secret": "",
            "permissions": {"ContractTrade": ["Order", "Position"], "Wallet": ["AccountTransfer"]},
            "ips": ["*"],
            "type": 1,
            "deadlineDay": 90,
            "expiredAt": "",
            "createdAt": "",
            "unified": 0,
            "uta": 1,
            "userID": 1,
            "inviterID": 0,
            "vipLevel": "No VIP",
            "mktMakerLevel": "0",
            "affiliateID": 0,
            "rsaPublicKey": "",
            "isMaster": True,
        }

    # ------------------------------------------------------------------------------------------------ trading routes

    def _parse_decimal(self, params: Mapping[str, Any], key: str, *, required: bool = True) -> Decimal | None:
        raw = params.get(key)
        if raw in (None, ""):
            if required:
                raise BybitError(10001, f"params error: {key} is required")
            return None
        try:
            value = to_decimal(raw)
        except (InvalidOperation, TypeError, ValueError):
            raise BybitError(10001, f"params error: {key} invalid ({raw!r})") from None
        if not value.is_finite() or value <= 0:
            raise BybitError(10001, f"params error: {key} invalid ({raw!r})")
        return value

    def _check_qty(self, inst: Instrument, qty: Decimal, order_type: str) -> None:
        if qty < inst.min_qty:
            raise BybitError(170136, f"Order quantity lower than the minimum: {fmt(qty)} < {fmt(inst.min_qty)}")
        if not _is_multiple(qty, inst.qty_step):
            raise BybitError(170137, f"Order volume decimal too long: qty {fmt(qty)} is not a multiple of qtyStep "
                                     f"{fmt(inst.qty_step)}")  # fmt: skip
        maximum = inst.max_mkt_qty if order_type == "Market" else inst.max_qty
        if qty > maximum:
            raise BybitError(170135, f"Order quantity too large: {fmt(qty)} > {fmt(maximum)}")

    def _check_price(self, inst: Instrument, price: Decimal) -> None:
        if not _is_multiple(price, inst.tick_size):
            raise BybitError(170134, f"Order price decimal too long: {fmt(price)} is not a multiple of tickSize "
                                     f"{fmt(inst.tick_size)}")  # fmt: skip
        if price < inst.min_price:
            raise BybitError(170133, f"Order price lower than the minimum: {fmt(price)} < {fmt(inst.min_price)}")
        if price > inst.max_price:
            raise BybitError(170132, f"Order price too high: {fmt(price)} > {fmt(inst.max_price)}")

    def _h_order_create(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._create_order(params)

    def _create_order(self, params: Mapping[str, Any], *, by_hand: bool = False) -> dict[str, Any]:
        """Validate, create and (market / marketable limit) fill an order. Returns {orderId, orderLinkId}.

        ``by_hand``: an order a person places in the UI; it does not consume a :meth:`partial_fill_next` fault.
        """
        self._require_linear(params)
        inst = self._require_symbol(params)
        assert inst is not None
        side = params.get("side")
        if side not in ("Buy", "Sell"):
            raise BybitError(10001, f"params error: side invalid ({side!r})")
        order_type = params.get("orderType")
        if order_type not in ("Market", "Limit"):
            raise BybitError(10001, f"params error: orderType invalid ({order_type!r})")
        try:
            position_idx = int(params.get("positionIdx", 0) or 0)
        except (TypeError, ValueError):
            raise BybitError(10001, "params error: positionIdx invalid") from None
        if position_idx != 0:
            raise BybitError(10001, "position idx not match position mode")
        link_id = str(params.get("orderLinkId") or "")
        if len(link_id) > 36:
            raise BybitError(10001, "params error: orderLinkId is longer than 36 characters")
        if link_id and link_id in self._link_ids:
            raise BybitError(self.duplicate_order_link_id_code, "OrderLinkedID is duplicate")
        qty = self._parse_decimal(params, "qty")
        assert qty is not None
        reduce_only = _parse_bool(params.get("reduceOnly")) or _parse_bool(params.get("closeOnTrigger"))
        tif_raw = str(params.get("timeInForce") or ("IOC" if order_type == "Market" else "GTC"))
        tif = {"gtc": "GTC", "ioc": "IOC", "fok": "FOK", "postonly": "PostOnly"}.get(tif_raw.lower())
        if tif is None:
            raise BybitError(170115, f"Invalid timeInForce ({tif_raw!r})")
        if order_type == "Market":
            tif = "IOC"

        if inst.status == "Delivering" and not reduce_only:
            raise BybitError(110023, "This contract only supports position reduction operation")
        if inst.status not in ("Trading", "Delivering"):
            raise BybitError(10001, f"symbol {inst.symbol} is not trading (status {inst.status})")

        self._check_qty(inst, qty, order_type)
        current = self._current_price(inst.symbol)
        limit_price: Decimal | None = None
        if order_type == "Limit":
            limit_price = self._parse_decimal(params, "price")
            assert limit_price is not None
            self._check_price(inst, limit_price)
        elif current is None:
            raise BybitError(10001, f"fake bybit: no price set for {inst.symbol}; call set_price() first")
        ref_price = limit_price if limit_price is not None else current
        assert ref_price is not None

        pos = self._position(inst.symbol)
        if reduce_only:
            closing = (pos.size > 0 and side == "Sell") or (pos.size < 0 and side == "Buy")
            if pos.size == 0:
                raise BybitError(110017, "current position is zero, cannot fix reduce-only order qty")
            if not closing:
                raise BybitError(110017, "Reduce-only rule not satisfied: the order would increase the position")
            if order_type == "Market" and qty > abs(pos.size):
                qty = abs(pos.size)
        elif qty * ref_price < inst.min_notional:
            raise BybitError(
                170140,
                f"Order value lower than the minimum: {fmt(qty * ref_price)} < minNotionalValue "
                f"{fmt(inst.min_notional)} {inst.quote}",
            )

        if not reduce_only:
            same_way = pos.size == 0 or (pos.size > 0) == (side == "Buy")
            opening = qty if same_way else max(Decimal(0), qty - abs(pos.size))
            required = opening * ref_price / pos.leverage + qty * ref_price * self.taker_fee_rate
            available = self._available(inst.settle)
            if opening and required > available:
                raise BybitError(110007, f"ab not enough for new order: needs {fmt(required)}, "
                                         f"available {fmt(available)} {inst.settle}")  # fmt: skip

        now = self.now_ms()
        if order_type == "Market":
            protection = current * (Decimal("1.05") if side == "Buy" else Decimal("0.95"))
            shown_price: Decimal | None = _round_to_step(
                protection, inst.tick_size, ROUND_CEILING if side == "Buy" else ROUND_FLOOR
            )
        else:
            shown_price = limit_price
        order = FakeOrder(
            order_id=str(uuid.uuid4()),
            order_link_id=link_id,
            symbol=inst.symbol,
            side=side,
            order_type=order_type,
            qty=qty,
            price=shown_price,
            time_in_force=tif,
            reduce_only=reduce_only,
            position_idx=position_idx,
            status="New",
            created_ms=now,
            updated_ms=now,
            seq=self._next_seq(),
            last_price_on_created=current,
            settle=inst.settle,
        )
        self._orders[order.order_id] = order
        if link_id:
            self._link_ids[link_id] = order.order_id

        if order_type == "Market":
            assert current is not None
            fill_price = self._taker_price(inst, side, current)
            partial = None if by_hand else self._take_fault(("partial",), "/v5/order/create", params)
            if partial is None:
                self._fill_order(order, qty, fill_price, is_maker=False)
            else:
                part = _round_to_step(qty * partial.fraction, inst.qty_step, ROUND_FLOOR)
                if part > 0:
                    self._fill_order(order, part, fill_price, is_maker=False)
                if partial.then == "cancel" and order.is_open:
                    self._cancel(order, "CancelByUser")
            if order.is_open and order.reduce_only and not self._position(order.symbol).size:
                self._cancel(order, "CancelByReduceOnly")
        else:
            assert limit_price is not None
            crosses = current is not None and (
                (side == "Buy" and current <= limit_price) or (side == "Sell" and current >= limit_price)
            )
            if crosses and tif == "PostOnly":
                order.status = "Cancelled"
                order.cancel_type = "CancelByUser"
                order.reject_reason = "EC_PostOnlyWillTakeLiquidity"
            elif crosses:
                assert current is not None
                taker = self._taker_price(inst, side, current)
                taker = min(taker, limit_price) if side == "Buy" else max(taker, limit_price)
                self._fill_order(order, qty, taker, is_maker=False)
            elif tif in ("IOC", "FOK"):
                self._cancel(order, "CancelByUser")
        return {"orderId": order.order_id, "orderLinkId": order.order_link_id}

    def _order_from_params(self, params: Mapping[str, Any]) -> FakeOrder:
        order_id = params.get("orderId") or None
        link_id = params.get("orderLinkId") or None
        if not order_id and not link_id:
            raise BybitError(10001, "params error: orderId or orderLinkId is required")
        order = self._find_order(order_id, link_id)
        if order is None or order.symbol != params.get("symbol") or not order.is_open:
            raise BybitError(110001, "order not exists or too late to cancel")
        return order

    def _h_order_cancel(self, params: dict[str, Any]) -> dict[str, Any]:
        self._require_linear(params)
        self._require_symbol(params)
        order = self._order_from_params(params)
        self._cancel(order, "CancelByUser")
        return {"orderId": order.order_id, "orderLinkId": order.order_link_id}

    def _h_order_amend(self, params: dict[str, Any]) -> dict[str, Any]:
        self._require_linear(params)
        inst = self._require_symbol(params)
        assert inst is not None
        order = self._order_from_params(params)
        qty = self._parse_decimal(params, "qty", required=False)
        price = self._parse_decimal(params, "price", required=False)
        if qty is None and price is None:
            raise BybitError(10001, "params error: nothing to amend")
        if qty is not None:
            self._check_qty(inst, qty, order.order_type)
            if qty <= order.cum_exec_qty:
                raise BybitError(110064, "The number of contracts modified cannot be less than or equal to the "
                                         "filled quantity")  # fmt: skip
            order.qty = qty
        if price is not None:
            if order.order_type != "Limit":
                raise BybitError(10001, "params error: a market order has no price to amend")
            self._check_price(inst, price)
            order.price = price
        order.updated_ms = self.now_ms()
        current = self._current_price(inst.symbol)
        if order.order_type == "Limit" and current is not None and order.price is not None:
            crosses = current <= order.price if order.side == "Buy" else current >= order.price
            if crosses:
                self._fill_order(order, order.leaves_qty, order.price, is_maker=True)
        return {"orderId": order.order_id, "orderLinkId": order.order_link_id}

    def _h_order_cancel_all(self, params: dict[str, Any]) -> dict[str, Any]:
        self._require_linear(params)
        inst = self._require_symbol(params, required=False)
        settle = params.get("settleCoin")
        base = params.get("baseCoin")
        if inst is None and not settle and not base:
            raise BybitError(10001, "params error: symbol, baseCoin or settleCoin is required")
        cancelled = []
        for order in self._open_orders(inst.symbol if inst else None):
            i = self._instruments[order.symbol]
            if (settle and i.settle != settle) or (base and i.base != base):
                continue
            self._cancel(order, "CancelByUser")
            cancelled.append({"orderId": order.order_id, "orderLinkId": order.order_link_id})
        return {"list": cancelled, "success": "1"}

    def _filter_orders(self, params: Mapping[str, Any]) -> list[FakeOrder]:
        inst = self._require_symbol(params, required=False)
        settle = params.get("settleCoin")
        base = params.get("baseCoin")
        out = []
        for order in sorted(self._orders.values(), key=lambda o: o.seq, reverse=True):
            i = self._instruments[order.symbol]
            if inst is not None and order.symbol != inst.symbol:
                continue
            if (settle and i.settle != settle) or (base and i.base != base):
                continue
            if params.get("orderId") and order.order_id != params["orderId"]:
                continue
            if params.get("orderLinkId") and order.order_link_id != params["orderLinkId"]:
                continue
            out.append(order)
        return out

    def _h_order_realtime(self, params: dict[str, Any]) -> dict[str, Any]:
        """Open orders; asked for by orderId/orderLinkId it also finds the last 500 closed ones (openOnly=0)."""
        self._require_linear(params)
        by_id = bool(params.get("orderId") or params.get("orderLinkId"))
        open_only = str(params.get("openOnly") or "0")
        if not by_id and not params.get("symbol") and not params.get("settleCoin") and not params.get("baseCoin"):
            raise BybitError(10001, "params error: symbol, baseCoin or settleCoin is required")
        recent = {
            o.order_id for o in sorted(self._orders.values(), key=lambda o: o.seq)[-RECENT_ORDERS_VISIBLE_TO_REALTIME:]
        }
        orders = [
            o for o in self._filter_orders(params) if o.is_open or (by_id and open_only == "0" and o.order_id in recent)
        ]
        page, next_cursor = self._page(orders, params, self._limit(params, 20, 50))
        return {"category": "linear", "list": [self._order_wire(o) for o in page], "nextPageCursor": next_cursor}

    def _h_order_history(self, params: dict[str, Any]) -> dict[str, Any]:
        self._require_linear(params)
        status = params.get("orderStatus")
        start = self._time_param(params, "startTime")
        end = self._time_param(params, "endTime")
        orders = []
        for o in self._filter_orders(params):
            if status:
                if o.status != status:
                    continue
            elif o.is_open and not self.history_includes_open:
                continue
            if (start is not None and o.created_ms < start) or (end is not None and o.created_ms > end):
                continue
            orders.append(o)
        page, next_cursor = self._page(orders, params, self._limit(params, 20, 50))
        return {"category": "linear", "list": [self._order_wire(o) for o in page], "nextPageCursor": next_cursor}

    def _h_execution_list(self, params: dict[str, Any]) -> dict[str, Any]:
        self._require_linear(params)
        inst = self._require_symbol(params, required=False)
        start = self._time_param(params, "startTime")
        end = self._time_param(params, "endTime")
        # Bybit: both given -> at most 7 days apart; one given -> 7 days from / up to it; neither -> the last 7 days
        if start is not None and end is not None:
            if end < start:
                raise BybitError(10001, "params error: endTime must not be earlier than startTime")
            if end - start > EXECUTION_WINDOW_MS:
                raise BybitError(10001, "params error: the time range between startTime and endTime exceeds 7 days")
        elif start is not None:
            end = start + EXECUTION_WINDOW_MS
        elif end is not None:
            start = end - EXECUTION_WINDOW_MS
        else:
            end = self.now_ms()
            start = end - EXECUTION_WINDOW_MS
        exec_type = params.get("execType")
        rows = []
        for e in sorted(self._executions, key=lambda e: e.seq, reverse=True):
            if inst is not None and e.symbol != inst.symbol:
                continue
            if params.get("orderId") and e.order_id != params["orderId"]:
                continue
            if params.get("orderLinkId") and e.order_link_id != params["orderLinkId"]:
                continue
            if exec_type and e.exec_type != exec_type:
                continue
            if (start is not None and e.exec_time_ms < start) or (end is not None and e.exec_time_ms > end):
                continue
            rows.append(e)
        page, next_cursor = self._page(rows, params, self._limit(params, 50, 100))
        return {"category": "linear", "list": [self._execution_wire(e) for e in page], "nextPageCursor": next_cursor}

    def _h_position_list(self, params: dict[str, Any]) -> dict[str, Any]:
        self._require_linear(params)
        inst = self._require_symbol(params, required=False)
        settle = params.get("settleCoin")
        base = params.get("baseCoin")
        if inst is not None:
            positions = [self._position(inst.symbol)]
        elif settle or base:
            positions = [
                p
                for p in self._positions.values()
                if p.size
                and (not settle or self._instruments[p.symbol].settle == settle)
                and (not base or self._instruments[p.symbol].base == base)
            ]
        else:
            raise BybitError(10001, "params error: symbol, baseCoin or settleCoin is required")
        page, next_cursor = self._page(positions, params, self._limit(params, 20, 200))
        return {"category": "linear", "list": [self._position_wire(p) for p in page], "nextPageCursor": next_cursor}

    def _h_set_leverage(self, params: dict[str, Any]) -> dict[str, Any]:
        self._require_linear(params)
        inst = self._require_symbol(params)
        assert inst is not None
        buy = self._parse_decimal(params, "buyLeverage")
        sell = self._parse_decimal(params, "sellLeverage")
        assert buy is not None and sell is not None
        if buy != sell:
            raise BybitError(10001, "params error: buy leverage must equal sell leverage in one-way mode")
        if buy < inst.min_leverage or buy > inst.max_leverage:
            raise BybitError(10001, f"leverage invalid: {fmt(buy)} not within [{fmt(inst.min_leverage)}, "
                                    f"{fmt(inst.max_leverage)}]")  # fmt: skip
        pos = self._position(inst.symbol)
        if pos.leverage == buy:
            raise BybitError(110043, "leverage not modified")
        pos.leverage = buy
        return {}

    def _h_switch_mode(self, params: dict[str, Any]) -> dict[str, Any]:
        mode = str(params.get("mode"))
        if mode == "0":
            raise BybitError(110025, "Position mode is not modified")
        raise BybitError(10001, "fake bybit simulates one-way mode (mode=0) only")


def _http_error_page(status: int) -> str:
    reasons = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout", 500: "Internal Server Error"}
    reason = reasons.get(status, "Error")
    title = f"{status} {reason}"
    return f"<html><head><title>{title}</title></head><body><center><h1>{title}</h1></center></body></html>"


# --------------------------------------------------------------------------------------------------------------------
# ccxt client and pytest fixture


def make_ccxt_client(
    base_url: str,
    *,
    api_key: str | None = "k",
    secret: str | None = "s",  # noqa: S107 - a dummy: the fake checks no signature
    demo: bool = False,
    timeout_ms: int = 3000,
    fetch_currencies: bool = True,
) -> Any:
    """A ``ccxt.bybit`` pointed at ``base_url`` exactly as the shared notes describe (for testing the fake itself).

    Demo mode is switched on with ``enable_demo_trading(True)`` before the URLs are overridden.
    """
    import ccxt

    config: dict[str, Any] = {
        "enableRateLimit": False,
        "timeout": timeout_ms,
        "options": {
            "defaultType": "swap",
            "fetchMarkets": {"types": ["linear"]},
            "enableUnifiedAccount": True,
            "enableUnifiedMargin": False,
        },
    }
    if api_key is not None:
        config["apiKey"] = api_key
    if secret is not None:
        config["secret"] = secret
    exchange = ccxt.bybit(config)
    if demo:
        exchange.enable_demo_trading(True)
    exchange.urls["api"] = {name: base_url for name in ("spot", "futures", "v2", "public", "private")}
    if not fetch_currencies:
        exchange.has["fetchCurrencies"] = False
    return exchange


@pytest.fixture
def fake_bybit() -> Iterator[FakeBybit]:
    """A started :class:`FakeBybit` with default settings, stopped afterwards.

    To use it elsewhere, import it in a conftest.py: ``from tests.fakes.bybit import fake_bybit  # noqa: F401``.
    """
    with FakeBybit() as fake:
        yield fake
