"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright, no browser download)
against a live server process: log in, KPIs, drawn charts, a pair page with its chart, trades filtered by symbol,
and a trade closed with the button."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group

from execution.models import ExchangeAccount, Order, PairTrade
from tests.factories import (
    CandleFactory,
    ExchangeAccountFactory,
    InstrumentFactory,
    OrderFactory,
    PairFactory,
    PairTradeFactory,
    SignalFactory,
)
from tests.live_server import live_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.skipif(not shutil.which("chromium"), reason="Debian's chromium is not installed (make install)"),
]
playwright = pytest.importorskip("playwright.sync_api")

PASSWORD = "a-long-browser-password-42"
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
H = timedelta(hours=1)

# Is the canvas drawn: any pixel not fully transparent?
CANVAS_DRAWN = """id => { const c = document.getElementById(id); if (!c || !c.width) return false;
  const pixels = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  for (let i = 3; i < pixels.length; i += 4) { if (pixels[i] !== 0) return true; } return false; }"""


def _world(django_user_model):
    user = django_user_model.objects.create_user(username="browser-trader", password=PASSWORD)
    user.groups.add(Group.objects.get(name="trader"))
    account = ExchangeAccountFactory(name="paper-main", mode=ExchangeAccount.Mode.PAPER, capital=Decimal("10000"))
    btc, eth = InstrumentFactory(symbol="BTCUSDT", base="BTC"), InstrumentFactory(symbol="ETHUSDT", base="ETH")
    sol, avax = InstrumentFactory(symbol="SOLUSDT", base="SOL"), InstrumentFactory(symbol="AVAXUSDT", base="AVAX")
    btc_eth = PairFactory(y_instrument=btc, x_instrument=eth)
    sol_avax = PairFactory(y_instrument=sol, x_instrument=avax)
    for day, pnl, pair in ((5, "120", btc_eth), (4, "-40", sol_avax), (3, "75", btc_eth), (2, "-20", sol_avax)):
        reason = PairTrade.ExitReason.EXIT_SIGNAL if Decimal(pnl) > 0 else PairTrade.ExitReason.STOP
        PairTradeFactory(account=account, pair=pair, state=PairTrade.State.CLOSED,
                         opened_at=NOW - (day * 24 + 6) * H, closed_at=NOW - day * 24 * H,
                         realised_pnl=Decimal(pnl), exit_zscore=0.05, exit_reason=reason)
    open_trade = PairTradeFactory(account=account, pair=btc_eth, opened_at=NOW - 5 * H)
    OrderFactory(trade=open_trade, leg="y", side=Order.Side.BUY, filled_qty=Decimal("0.01"), avg_price=Decimal("60000"))
    OrderFactory(trade=open_trade, leg="x", instrument=eth, side=Order.Side.SELL, filled_qty=Decimal("0.2"),
                 avg_price=Decimal("3000"))
    CandleFactory(instrument=btc, open_time=NOW - H, close=Decimal("60500"))
    CandleFactory(instrument=eth, open_time=NOW - H, close=Decimal("3010"))
    for hour in range(48):
        SignalFactory(pair=btc_eth, bar_time=NOW - (48 - hour) * H, zscore=-2.5 + hour / 12, spread=0.001 * hour)
    return open_trade, btc_eth


def test_dashboard_in_a_real_browser(django_user_model):
    open_trade, pair = _world(django_user_model)
    second = PairTradeFactory(account=open_trade.account, pair=pair, opened_at=NOW - 2 * H)
    errors: list[str] = []
    with live_server({"DEBUG": "1"}) as base_url, playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            # The browser asks for /favicon.ico by itself; the site has none.
            page.on("response", lambda r: r.status >= 400 and not r.url.endswith("/favicon.ico")
                    and errors.append(f"{r.status} {r.url}"))
            page.on("console", lambda message: message.type == "error" and "Failed to load resource" not in message.text
                    and errors.append(message.text))
            page.on("pageerror", lambda error: errors.append(str(error)))

            page.goto(f"{base_url}/")
            page.fill("input[name=username]", "browser-trader")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit], input[type=submit]")
            page.wait_for_selector("#kpis")
            assert page.locator(".kpi", has_text="Closed trades").locator(".value").inner_text() == "4"
            assert page.locator(".kpi", has_text="Realised PnL").locator(".value").inner_text() == "135.00"
            page.wait_for_function("() => typeof Chart !== 'undefined' && Chart.getChart('equity-chart')")
            for canvas in ("equity-chart", "drawdown-chart", "daily-chart", "pair-chart", "reason-chart"):
                assert page.evaluate(CANVAS_DRAWN, canvas), canvas
            # What is drawn is the endpoint's curve: the equity and the drawdown under it, point for point.
            drawn = page.evaluate("() => ['equity-chart', 'drawdown-chart']"
                                  ".map(id => Chart.getChart(id).data.datasets[0].data)")
            curve = page.evaluate("async () => (await fetch('/api/v1/equity/?mode=paper', "
                                  "{headers: {Accept: 'application/json'}})).json()")
            assert [p["equity"] for p in curve] == [10000, 10120, 10080, 10155, 10135]
            assert drawn == [[round(p["equity"], 2) for p in curve], [round(-100 * p["drawdown"], 3) for p in curve]]
            assert "60500" in page.inner_text("#open-positions")

            page.click(f"#open-positions a[href='/pairs/{pair.pk}/']")
            page.wait_for_function("() => typeof Chart !== 'undefined' && Chart.getChart('zscore-chart')")
            assert page.evaluate(CANVAS_DRAWN, "zscore-chart")
            assert "BTCUSDT / ETHUSDT" in page.inner_text("h1")

            page.goto(f"{base_url}/trades/")
            page.fill("input[name=symbol]", "SOLUSDT")
            page.click("#trade-filters button[type=submit]")
            page.wait_for_url("**symbol=SOLUSDT**")
            rows = page.locator("tr.trade-row")
            assert rows.count() == 2
            assert all("SOLUSDT" in rows.nth(i).inner_text() for i in range(rows.count()))

            page.goto(f"{base_url}/")
            page.click(f"#open-positions a[href='/trades/{open_trade.pk}/close/']")
            page.click("#confirm-close-button")
            page.wait_for_selector("ul.messages")
            assert "will be closed" in page.inner_text("ul.messages")

            page.click(f"#open-positions a[href='/accounts/{open_trade.account_id}/flatten/']")
            page.click("#confirm-flatten-button")
            page.wait_for_selector("ul.messages")
            assert "2 open trade(s)" in page.inner_text("ul.messages")
        finally:
            browser.close()
    open_trade.refresh_from_db()
    assert open_trade.close_requested_at is not None
    assert open_trade.close_requested_by.username == "browser-trader"
    second.refresh_from_db()
    assert second.close_requested_by.username == "browser-trader"
    assert not errors, errors  # no script error, no Content-Security-Policy violation


def test_the_refresh_keeps_the_filters_and_says_when_its_figures_are_stale(django_user_model):
    """The 30 s refresh asks for the view on screen; once the session is gone it goes to the login (and back to the
    same view), and when the server stops answering the page says since when its figures are not refreshed
    (htmx swaps nothing on a failed request: the old figures stayed, unmarked)."""
    user = django_user_model.objects.create_user(username="browser-viewer", password=PASSWORD)
    user.groups.add(Group.objects.get(name="viewer"))
    account = ExchangeAccountFactory(name="paper-x", capital=Decimal("1000"))
    day = (NOW - 48 * H).date()
    PairTradeFactory(account=account, state=PairTrade.State.CLOSED, realised_pnl=Decimal("25"),
                     opened_at=datetime.combine(day, datetime.min.time(), UTC) + 20 * H,
                     closed_at=datetime.combine(day, datetime.min.time(), UTC) + 23.5 * H)
    view = f"/?scope=a{account.pk}&start={day}&end={day}"
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            context = browser.new_context()
            page = context.new_page()
            page.clock.install()
            with live_server({"DEBUG": "1"}) as base_url:
                page.goto(f"{base_url}{view}")
                page.fill("input[name=username]", "browser-viewer")
                page.fill("input[name=password]", PASSWORD)
                page.click("button[type=submit], input[type=submit]")
                page.wait_for_selector("#live-status")
                with page.expect_response("**/dashboard/live/**") as refresh:
                    page.clock.run_for(31_000)
                assert refresh.value.url == f"{base_url}/dashboard/live/{view[1:]}"
                page.wait_for_selector("#live-status:not(.stale)")
                assert page.locator(".kpi", has_text="Realised PnL").locator(".value").inner_text() == "25.00"

                context.clear_cookies()  # the session is gone: the refresh leads to the login, then back here
                page.clock.run_for(31_000)
                page.wait_for_url("**/accounts/login/**")
                page.fill("input[name=username]", "browser-viewer")
                page.fill("input[name=password]", PASSWORD)
                page.click("button[type=submit], input[type=submit]")
                page.wait_for_selector("#kpis")
                assert page.url == f"{base_url}{view}"
                shown = page.get_attribute("#live-status", "data-refreshed")
            page.clock.run_for(31_000)  # the server has stopped
            page.wait_for_selector("#live-status.stale")
            assert page.inner_text("#live-status").startswith(f"Not refreshed since {shown} UTC: the server does not")
            assert page.locator(".kpi", has_text="Realised PnL").locator(".value").inner_text() == "25.00"
        finally:
            browser.close()
