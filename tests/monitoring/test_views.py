"""The dashboard's pages: scopes, charts' data, the pair, trades and trade pages, closing a trade, system health."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group

from core.models import AuditEntry
from execution.models import ExchangeAccount, PairTrade
from tests.factories import (
    DailyPnlSnapshotFactory,
    ExchangeAccountFactory,
    FillFactory,
    LevelFactory,
    OrderFactory,
    PairTradeFactory,
    SignalFactory,
)

pytestmark = pytest.mark.django_db

T0 = datetime(2021, 3, 1, tzinfo=UTC)
H = timedelta(hours=1)


@pytest.fixture
def viewer_client(client, django_user_model):
    user = django_user_model.objects.create_user(username="viewer", password="a-long-test-password")
    user.groups.add(Group.objects.get(name="viewer"))
    client.force_login(user)
    return client


@pytest.fixture
def trader_client(client, django_user_model):
    user = django_user_model.objects.create_user(username="trader-1", password="a-long-test-password")
    user.groups.add(Group.objects.get(name="trader"))
    client.force_login(user)
    client.user = user
    return client


def _closed(account, hours, pnl, **extra):
    return PairTradeFactory(account=account, state=PairTrade.State.CLOSED, opened_at=T0,
                            closed_at=T0 + hours * H, realised_pnl=Decimal(pnl), **extra)


def test_default_view_is_one_mode_and_the_switcher_picks_an_account(viewer_client):
    paper = ExchangeAccountFactory(name="paper-a", capital=Decimal("1000"))
    real = ExchangeAccountFactory(name="real-a", mode=ExchangeAccount.Mode.REAL, capital=Decimal("5000"))
    _closed(paper, 1, "100", exit_reason=PairTrade.ExitReason.EXIT_SIGNAL)
    _closed(real, 1, "-50", exit_reason=PairTrade.ExitReason.STOP)

    default = viewer_client.get("/")
    assert default.status_code == 200
    # Real money first, never mixed with paper.
    assert default.context["summary"].label.startswith("combined real")
    assert default.context["summary"].total_return == pytest.approx(-50 / 5000)

    chosen = viewer_client.get("/", {"scope": f"a{paper.pk}", "start": "2021-03-01", "end": "2021-03-01"})
    summary = chosen.context["summary"]
    assert summary.label == "paper-a (paper)" and summary.total_return == pytest.approx(0.1)
    charts = json.loads(chosen.text.split('id="chart-data" type="application/json">')[1].split("</script>")[0])
    assert charts["equity"]["equity"] == [1000, 1100]
    assert charts["daily"] == {"labels": ["2021-03-01"], "pnl": [100.0]}
    assert charts["by_reason"]["labels"] == ["exit_signal"]
    # The page loads its scripts from our static files only.
    assert "vendor/chartjs/chart.umd.min.js" in chosen.text and "vendor/htmx/htmx.min.js" in chosen.text
    assert "<script>" not in chosen.text

    live = viewer_client.get("/dashboard/live/", {"scope": f"a{real.pk}"})
    assert live.status_code == 200 and "real-a (real)" in live.text


def test_the_tables_by_account_and_level_cover_the_period_asked_for(viewer_client):
    account = ExchangeAccountFactory(name="paper-a", capital=Decimal("1000"), level=LevelFactory(number=1))
    _closed(account, 1, "100")
    _closed(account, 49, "-30")  # two days later
    whole = viewer_client.get("/").context
    assert [s.total_trades for s in whole["accounts"]] == [2] and [s.total_trades for s in whole["level_kpis"]] == [2]
    day = viewer_client.get("/", {"scope": f"a{account.pk}", "start": "2021-03-01", "end": "2021-03-01"}).context
    assert day["summary"].total_trades == 1
    assert [s.total_trades for s in day["accounts"]] == [1] and [s.total_trades for s in day["level_kpis"]] == [1]


def _kpi(html: str, label: str) -> str:
    return html.split(f">{label}</div>")[1].split('class="value')[1].split(">", 1)[1].split("</div>")[0]


def test_the_headline_drawdown_of_an_open_loss_is_shown_before_any_trade_closed(viewer_client):
    """An open trade 5 % under water at a day's end is a drawdown of the equity curve (the chart, the table by
    account and the API show it) even while no trade has closed yet: the headline must not show a dash for it."""
    account = ExchangeAccountFactory(name="real-x", mode=ExchangeAccount.Mode.REAL, capital=Decimal("10000"))
    PairTradeFactory(account=account, state=PairTrade.State.OPEN, opened_at=T0 + 10 * H)
    DailyPnlSnapshotFactory(account=account, date=(T0 + 24 * H).date(), starting_equity=Decimal("10000"),
                            ending_equity=Decimal("9500"), peak_equity=Decimal("10000"),
                            unrealised_pnl=Decimal("-500"), realised_pnl=Decimal("0"))
    page = viewer_client.get("/", {"scope": f"a{account.pk}", "start": "2021-03-01", "end": "2021-03-03"})
    assert page.context["summary"].total_trades == 0
    assert page.context["summary"].max_drawdown == pytest.approx(0.05)
    assert _kpi(page.text, "Max drawdown") == "-5.00%"
    # Nothing happened to an account without trades or marks: still a dash, not "-0.00%".
    quiet = ExchangeAccountFactory(name="real-quiet", mode=ExchangeAccount.Mode.REAL)
    page = viewer_client.get("/", {"scope": f"a{quiet.pk}", "start": "2021-03-01", "end": "2021-03-03"})
    assert _kpi(page.text, "Max drawdown") == "\N{EN DASH}"


def test_the_headline_win_rate_is_the_one_the_table_by_account_shows(viewer_client):
    """5 wins in 8 trades are 62.5 %: the headline showed 62 % (a whole percent, rounded half to even) beside the
    table's 62.5, and one win in 250 trades read as a win rate of 0 %."""
    account = ExchangeAccountFactory(name="paper-w", capital=Decimal("1000"))
    for n, pnl in enumerate(["5", "5", "5", "5", "5", "-1", "-1", "-1"]):
        _closed(account, n + 1, pnl)
    html = viewer_client.get("/", {"scope": f"a{account.pk}"}).text
    assert _kpi(html, "Win rate") == "62.5%"
    assert "<td class=\"num\">62.5</td>" in html.split('id="accounts"')[1]


def test_recent_trades_and_daily_pnl_are_those_of_the_accounts_in_view(viewer_client):
    """The real view's tables of recent closed trades and daily PnL listed every account's rows: a paper account
    trading often (a replay's) filled them, pushing the real trades out, with no mode to tell them apart."""
    real = ExchangeAccountFactory(name="real-a", mode=ExchangeAccount.Mode.REAL)
    paper = ExchangeAccountFactory(name="paper-busy", mode=ExchangeAccount.Mode.PAPER)
    real_trade = _closed(real, 1, "7.5")
    for n in range(30):
        _closed(paper, 2 + n, "1")
    DailyPnlSnapshotFactory(account=real, date=T0.date())
    for n in range(31):
        DailyPnlSnapshotFactory(account=paper, date=(T0 + (n + 1) * 24 * H).date())
    page = viewer_client.get("/")  # the default view: the real accounts
    assert page.context["scope"].label.startswith("combined real")
    assert [t.pk for t in page.context["recent_closed"]] == [real_trade.pk]
    assert [d.account.name for d in page.context["daily_pnl"]] == ["real-a"]
    closed = page.text.split('id="closed-trades"')[1].split('id="daily-pnl"')[0]
    assert "paper-busy" not in closed and '<span class="badge real">real</span>' in closed
    chosen = viewer_client.get("/", {"scope": f"a{paper.pk}"}).context
    assert {t.account.name for t in chosen["recent_closed"]} == {"paper-busy"}
    assert len(chosen["recent_closed"]) == 25 and len(chosen["daily_pnl"]) == 30


def test_the_date_ranges_and_the_times_say_they_are_utc(viewer_client):
    """The pages take and show UTC days and times; a trader in New York read "closed 02:00" and chose "To 7 June"
    as his own day, nothing on the dashboard or the trades page said otherwise."""
    account = ExchangeAccountFactory(mode=ExchangeAccount.Mode.REAL)
    _closed(account, 2, "5")
    html = viewer_client.get("/").text
    form = html.split('id="scope-form"')[1].split("</form>")[0]
    assert "From (UTC)" in form and "To (UTC)" in form
    assert "<th>Closed (UTC)</th>" in html.split('id="closed-trades"')[1]
    trades = viewer_client.get("/trades/").text
    assert "Closed from (UTC)" in trades and "<th>Opened (UTC)</th><th>Closed (UTC)</th>" in trades


def test_pair_page_has_its_chart_statistics_and_trades(viewer_client):
    trade = _closed(ExchangeAccountFactory(), 2, "5")
    trade.exit_zscore = 0.1
    trade.save()
    for hour in range(3):
        SignalFactory(pair=trade.pair, bar_time=T0 + hour * H, zscore=-2.0 + hour, spread=0.01 * hour)
    page = viewer_client.get(f"/pairs/{trade.pair_id}/")
    assert page.status_code == 200
    chart = page.context["chart"]
    assert chart["z"] == [-2.0, -1.0, 0.0]
    assert chart["entries"] == [-2.1, None, None] and chart["exits"] == [None, None, 0.1]
    assert 'id="zscore-chart"' in page.text and f"/trades/{trade.pk}/" in page.text


def test_pair_page_tells_the_watch_level_from_no_level(viewer_client):
    """Level 0 (watch) is a level: the pair page showed a pair dropped to it as "L" and a dash, and its level
    history as "2 -> dash", as it shows a retired pair (no level)."""
    from pairs.models import LevelChange

    pair = PairTradeFactory(pair__level=LevelFactory(number=0)).pair
    LevelChange.objects.create(pair=pair, from_level=LevelFactory(number=2), to_level=pair.level,
                               reason="cointegration broke")
    LevelChange.objects.create(pair=pair, from_level=None, to_level=LevelFactory(number=2), reason="new")
    page = viewer_client.get(f"/pairs/{pair.pk}/").text
    assert '<span class="badge">L0</span>' in page.split("</h1>")[0]
    history = page.split('id="level-history"')[1].split("</table>")[0]
    assert "<td>2</td><td>0</td>" in history and "<td>\N{EN DASH}</td><td>2</td>" in history
    pair.level = None
    pair.save()
    assert '<span class="badge">no level</span>' in viewer_client.get(f"/pairs/{pair.pk}/").text.split("</h1>")[0]


def test_the_ladder_shows_the_validation_win_rate_as_a_percentage(viewer_client):
    """The dashboard's ladder showed a validation win rate of 57 % as "0.57", beside KPIs in percent: a 0.57 %
    win rate to whoever reads the page as it reads every other win rate on it."""
    from pairs.models import PairStatistics

    pair = PairTradeFactory(pair__level=LevelFactory(number=1)).pair
    PairStatistics.objects.create(pair=pair, window=PairStatistics.Window.VALIDATION, trades=7, win_rate=0.5714,
                                  profit_factor=1.3, total_return=0.0123, max_drawdown=0.0041)
    row = viewer_client.get("/").text.split('id="ladder"')[1].split("</table>")[0]
    assert '<td class="num">57.1%</td>' in row and "0.57<" not in row


def test_pair_statistics_show_percentages_to_the_hundredth_and_drawdown_as_a_fall(viewer_client):
    from pairs.models import PairStatistics

    pair = PairTradeFactory().pair
    PairStatistics.objects.create(pair=pair, window=PairStatistics.Window.VALIDATION, trades=7, win_rate=0.5714,
                                  profit_factor=1.3, total_return=0.0123, max_drawdown=0.0041)
    page = viewer_client.get(f"/pairs/{pair.pk}/").text
    row = page.split('id="statistics"')[1].split("</table>")[0]
    # A 0.41 % drawdown is not "0%", and it reads as a fall like everywhere else on the dashboard.
    assert "57.1%" in row and "1.23%" in row and "-0.41%" in row


def test_the_trades_page_date_range_includes_its_last_day_as_the_dashboard_does(viewer_client):
    late = _closed(ExchangeAccountFactory(), 23, "5")  # T0 + 23 h: the same UTC day
    _closed(ExchangeAccountFactory(), 24, "5")  # the next day
    day = T0.date().isoformat()
    page = viewer_client.get("/trades/", {"closed_after": day, "closed_until": day})
    assert [t.pk for t in page.context["page"].object_list] == [late.pk]
    assert 'name="closed_until" value="' + day + '"' in page.text
    # The page's CSV link asks the API the same thing.
    from rest_framework.test import APIClient

    api = APIClient()
    api.force_authenticate(page.wsgi_request.user)
    rows = api.get("/api/v1/trades/", {"closed_after": day, "closed_until": day}).json()["results"]
    assert [r["id"] for r in rows] == [late.pk]


def test_trades_filter_by_symbol_and_trade_page_with_orders_and_fills(viewer_client):
    wanted = PairTradeFactory()
    other = PairTradeFactory()
    page = viewer_client.get("/trades/", {"symbol": wanted.pair.y_instrument.symbol})
    assert [t.pk for t in page.context["page"].object_list] == [wanted.pk]
    assert other.pk not in [t.pk for t in page.context["page"].object_list]
    fill = FillFactory(order=OrderFactory(trade=wanted, filled_qty=Decimal("10"), avg_price=Decimal("100")))
    detail = viewer_client.get(f"/trades/{wanted.pk}/")
    assert detail.status_code == 200
    assert fill.exchange_fill_id in detail.text and fill.order.client_order_id in detail.text


def test_a_viewer_cannot_close_a_trade(viewer_client):
    trade = PairTradeFactory()
    assert viewer_client.get(f"/trades/{trade.pk}/close/").status_code == 403
    assert viewer_client.post(f"/trades/{trade.pk}/close/").status_code == 403
    trade.refresh_from_db()
    assert trade.close_requested_at is None
    from core.models import AuditEntry

    entry = AuditEntry.objects.get(action="refused")  # the refused change, not the look at its page
    assert entry.channel == "dashboard" and entry.summary.startswith(f"POST /trades/{trade.pk}/close/ refused: ")
    assert entry.summary.endswith("lacks the permission execution.close_trade")


def test_a_signed_in_user_without_a_role_is_told_what_is_missing(client, django_user_model):
    client.force_login(django_user_model.objects.create_user(username="nobody", password="a-long-test-password"))
    page = client.get("/")
    assert page.status_code == 403
    assert "Your account <strong>nobody</strong> may not open this page" in page.text and "Log out nobody" in page.text


def test_closing_a_trade_needs_the_dashboard_too(client, django_user_model):
    """The close permission alone (without the dashboard's view) opens neither the confirmation page nor the POST:
    the page shows the trade, which that user may not see."""
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user(username="closer-only", password="a-long-test-password")
    user.user_permissions.add(Permission.objects.get(codename="close_trade"))
    client.force_login(user)
    trade = PairTradeFactory(opened_at=T0)
    assert client.get(f"/trades/{trade.pk}/close/").status_code == 403
    assert client.post(f"/trades/{trade.pk}/close/").status_code == 403
    trade.refresh_from_db()
    assert trade.close_requested_at is None


def test_an_open_trade_of_a_disabled_account_is_marked_so_and_offers_no_close(trader_client):
    """A replay leaves its last trades open in its account, disabled at its end: no bot would carry out a close."""
    trade = PairTradeFactory(opened_at=T0, account=ExchangeAccountFactory(name="replay", enabled=False))
    page = trader_client.get("/", {"scope": f"a{trade.account_id}"}).text
    section = page[page.index('id="open-positions"'):page.index('id="halts"')]
    assert "disabled: not traded, not guarded" in section
    assert f'href="/trades/{trade.pk}/close/"' not in section and "Flatten replay" not in section


def test_a_trader_closes_a_trade_after_confirming(trader_client):
    trade = PairTradeFactory(opened_at=T0)
    dashboard = trader_client.get("/").text
    assert f'href="/trades/{trade.pk}/close/"' in dashboard
    confirm = trader_client.get(f"/trades/{trade.pk}/close/")
    assert confirm.status_code == 200 and "Yes, close trade" in confirm.text
    trade.refresh_from_db()
    assert trade.close_requested_at is None  # the confirmation page changes nothing

    done = trader_client.post(f"/trades/{trade.pk}/close/", follow=True)
    assert done.status_code == 200 and "will be closed" in done.text
    # The position says the close is asked for, instead of offering it again.
    assert f'href="/trades/{trade.pk}/close/"' not in done.text and "close asked" in done.text
    trade.refresh_from_db()
    assert trade.close_requested_at is not None and trade.close_requested_by == trader_client.user
    entry = AuditEntry.objects.get(action="close_trade")
    assert entry.channel == "dashboard" and entry.actor == trader_client.user


def test_a_trader_flattens_an_account_after_confirming(trader_client):
    account = ExchangeAccountFactory(name="to-flatten")
    trades = [PairTradeFactory(account=account, opened_at=T0), PairTradeFactory(account=account, opened_at=T0,
                                                                                 state=PairTrade.State.OPENING)]
    finished = PairTradeFactory(account=account, state=PairTrade.State.CLOSED, opened_at=T0, closed_at=T0 + H,
                                realised_pnl=Decimal("1"))
    other = PairTradeFactory(opened_at=T0)
    dashboard = trader_client.get("/", {"scope": f"a{account.pk}"}).text
    assert f'href="/accounts/{account.pk}/flatten/"' in dashboard
    confirm = trader_client.get(f"/accounts/{account.pk}/flatten/")
    assert confirm.status_code == 200 and "Yes, close 2 trades of to-flatten" in confirm.text
    assert not PairTrade.objects.filter(close_requested_at__isnull=False).exists()  # confirming changes nothing

    done = trader_client.post(f"/accounts/{account.pk}/flatten/", follow=True)
    assert done.status_code == 200 and "2 open trade(s) of to-flatten will be closed" in done.text
    for trade in trades:
        trade.refresh_from_db()
        assert trade.close_requested_at is not None and trade.close_requested_by == trader_client.user
    for untouched in (finished, other):
        untouched.refresh_from_db()
        assert untouched.close_requested_at is None
    entry = AuditEntry.objects.get(action="flatten_account")
    assert entry.channel == "dashboard" and entry.actor == trader_client.user
    assert entry.details == {"trades": [t.pk for t in trades]}
    assert AuditEntry.objects.filter(action="close_trade").count() == 2
    again = trader_client.post(f"/accounts/{ExchangeAccountFactory().pk}/flatten/", follow=True)
    assert "has no open trade" in again.text


def test_a_viewer_can_neither_see_nor_use_flatten(viewer_client):
    trade = PairTradeFactory(opened_at=T0)
    assert "/flatten/" not in viewer_client.get("/", {"scope": f"a{trade.account_id}"}).text
    assert viewer_client.get(f"/accounts/{trade.account_id}/flatten/").status_code == 403
    assert viewer_client.post(f"/accounts/{trade.account_id}/flatten/").status_code == 403
    trade.refresh_from_db()
    assert trade.close_requested_at is None and not AuditEntry.objects.filter(action="flatten_account").exists()


def test_system_page(viewer_client):
    page = viewer_client.get("/system/")
    assert page.status_code == 200
    assert 'id="periodic-tasks"' in page.text and 'id="heartbeats"' in page.text


def test_a_bad_scope_is_explained_in_words_not_python(viewer_client):
    page = viewer_client.get("/?scope=mxyz")
    assert page.status_code == 200
    assert "mode: " in page.text and "is not a valid choice." in page.text and "ErrorDetail" not in page.text


def test_an_account_no_loss_limit_covers_is_named_on_the_dashboard(viewer_client):
    from risk.models import RiskLimit

    account = ExchangeAccountFactory(name="bare", capital=Decimal("1000"))
    RiskLimit.objects.create(account=account, max_open_trades=3)  # a row, but no loss limit in it
    assert 'id="unguarded"' in viewer_client.get(f"/?scope=a{account.pk}").text
    RiskLimit.objects.create(account=None, daily_loss_limit_pct=0.03)  # the system-wide row covers it
    assert 'id="unguarded"' not in viewer_client.get(f"/?scope=a{account.pk}").text


def test_an_account_whose_loss_limits_only_notify_is_named_on_the_dashboard(viewer_client):
    """A daily loss limit whose action is notify tells people and stops nothing: the account is as unguarded as one
    without a limit (the dashboard said it was covered)."""
    from risk.models import RiskLimit

    account = ExchangeAccountFactory(name="told", capital=Decimal("1000"))
    limit = RiskLimit.objects.create(account=account, daily_loss_limit_pct=0.03, actions={"daily_loss": "notify"})
    page = viewer_client.get(f"/?scope=a{account.pk}").text
    assert 'id="unguarded"' in page and "told" in page
    limit.max_drawdown_pct = 0.1  # its default action halts
    limit.save()
    assert 'id="unguarded"' not in viewer_client.get(f"/?scope=a{account.pk}").text


def test_a_direct_post_to_close_a_disabled_accounts_trade_is_refused_and_audited(trader_client):
    trade = PairTradeFactory(opened_at=T0, account=ExchangeAccountFactory(name="replay", enabled=False))

    done = trader_client.post(f"/trades/{trade.pk}/close/", follow=True)

    assert done.status_code == 200 and "Not closed: account replay is disabled" in done.text
    trade.refresh_from_db()
    assert trade.close_requested_at is None
    assert AuditEntry.objects.get(action="refused").channel == "dashboard"


def test_trades_page_with_an_unknown_account_says_so_instead_of_failing(viewer_client):
    PairTradeFactory()
    page = viewer_client.get("/trades/", {"account": "no-such-account"})
    assert page.status_code == 400
    assert "no-such-account" in page.text and 'id="filter-refused"' in page.text
    assert list(page.context["page"].object_list) == []
