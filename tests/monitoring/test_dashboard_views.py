"""The dashboard as a trader reads it: the view and period chosen (levels, bad views named), the tables under the
KPIs, the halts, the refresh once signed out, a new install, the pair page's reads."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group

from execution.models import ExchangeAccount, PairTrade
from tests.factories import (
    DailyPnlSnapshotFactory,
    ExchangeAccountFactory,
    HaltFactory,
    LevelFactory,
    PairTradeFactory,
    SignalFactory,
)
from tests.monitoring.test_views import T0, H, _closed, _kpi

pytestmark = pytest.mark.django_db


@pytest.fixture
def viewer_client(client, django_user_model):
    user = django_user_model.objects.create_user(username="viewer", password="a-long-test-password")
    user.groups.add(Group.objects.get(name="viewer"))
    client.force_login(user)
    return client


def test_a_refresh_after_the_session_is_gone_sends_the_browser_to_log_in_not_a_login_form_into_the_page(client):
    # htmx swaps whatever a 200 carries: the login page the redirect led to took the place of the figures.
    refresh = client.get("/dashboard/live/", {"scope": "a7", "start": "2021-03-01"}, HTTP_HX_REQUEST="true")
    assert refresh.status_code == 401
    assert refresh["HX-Redirect"] == "/accounts/login/?next=/%3Fscope%3Da7%26start%3D2021-03-01"
    assert "Password" not in refresh.text
    # Opened by hand, the part leads to the login and back to the whole dashboard.
    opened = client.get("/dashboard/live/", {"scope": "a7"})
    assert opened.status_code == 302 and opened["Location"] == "/accounts/login/?next=/%3Fscope%3Da7"


def test_recent_trades_and_daily_pnl_are_those_of_the_period_asked_for(viewer_client):
    """A period chosen narrowed the KPIs above to its trades but the tables of recent closed trades and daily PnL
    under them still listed the newest rows of any day: one closed trade in the headline, 25 in the table."""
    account = ExchangeAccountFactory(name="paper-p", capital=Decimal("1000"))
    before, late, after = _closed(account, -2, "5"), _closed(account, 23.5, "7"), _closed(account, 24.5, "-3")
    for day in range(-1, 2):
        DailyPnlSnapshotFactory(account=account, date=(T0 + day * 24 * H).date())
    page = viewer_client.get("/", {"scope": f"a{account.pk}", "start": "2021-03-01", "end": "2021-03-01"})
    assert page.context["summary"].total_trades == 1
    assert [t.pk for t in page.context["recent_closed"]] == [late.pk]  # closed at 23:30 UTC, in the day
    assert [d.date for d in page.context["daily_pnl"]] == [T0.date()]
    assert "Recent closed trades (of the accounts in view, in the period)" in page.text
    # Without a period, the newest of every day.
    everything = viewer_client.get("/", {"scope": f"a{account.pk}"}).context
    assert [t.pk for t in everything["recent_closed"]] == [after.pk, late.pk, before.pk]
    assert len(everything["daily_pnl"]) == 3


def test_a_new_install_says_it_has_no_account_and_a_zero_drawdown_has_no_minus(viewer_client):
    """A new install's dashboard was titled "combined no accounts: none" over a month "2026-12" with a dash; a drawdown
    of exactly 0 read "-0.00%" in the headline and the tables."""
    page = viewer_client.get("/")
    assert "No account in this view" in page.text and 'id="no-account"' in page.text
    assert "combined no accounts" not in page.text and page.context["monthly"] == []
    account = ExchangeAccountFactory(name="paper-up", capital=Decimal("1000"))
    _closed(account, 1, "10")
    page = viewer_client.get("/", {"scope": f"a{account.pk}"})
    assert _kpi(page.text, "Max drawdown") == "0.00%"
    row = page.text.split('id="accounts"')[1].split("</tr>")[1]
    assert '<td class="num">0.00%</td>' in row and "-0.00%" not in page.text
    assert 'id="no-account"' not in viewer_client.get("/", {"scope": "mreal"}).text


def test_the_pair_page_reads_its_trades_in_a_fixed_number_of_queries(viewer_client, django_assert_max_num_queries):
    """Each row of the pair's trades read its pair and both legs again: 3 queries a trade, 311 for a page of 100
    trades (1.2 s on SQLite)."""
    account = ExchangeAccountFactory(name="paper-q")
    first = _closed(account, 1, "1")
    for n in range(2, 40):
        _closed(account, n, "1", pair=first.pair)
    viewer_client.get(f"/pairs/{first.pair_id}/")  # the session and the permissions, read once
    with django_assert_max_num_queries(20):
        page = viewer_client.get(f"/pairs/{first.pair_id}/")
    assert page.status_code == 200 and len(page.context["trades"]) == 39


def test_the_pair_chart_marks_each_entry_and_exit_on_the_bar_at_or_before_it(viewer_client):
    account = ExchangeAccountFactory(name="paper-m")
    pair = _closed(account, -30, "1", entry_zscore=-9.0, exit_zscore=9.0).pair  # closed before the first bar drawn
    for hour in range(4):
        SignalFactory(pair=pair, bar_time=T0 + hour * H, zscore=0.0, spread=0.0)
    PairTradeFactory(account=account, pair=pair, state=PairTrade.State.CLOSED, realised_pnl=Decimal("1"),
                     opened_at=T0 - 5 * H, closed_at=T0 + 1.5 * H, entry_zscore=-2.2, exit_zscore=0.3)
    PairTradeFactory(account=account, pair=pair, opened_at=T0 + 3 * H, entry_zscore=2.4)  # open, on the last bar
    chart = viewer_client.get(f"/pairs/{pair.pk}/").context["chart"]
    assert chart["entries"] == [None, None, None, 2.4]  # an entry before the first bar has no bar
    assert chart["exits"] == [None, 0.3, None, None]  # 01:30 is marked on the 01:00 bar


def test_the_switcher_shows_one_level_of_one_mode_combined(viewer_client):
    """The table by level showed each level's KPIs but the switcher had no level: its charts, positions and trades
    could not be seen."""
    one, two = LevelFactory(number=1), LevelFactory(number=2)
    a = ExchangeAccountFactory(name="paper-l1a", capital=Decimal("1000"), level=one)
    b = ExchangeAccountFactory(name="paper-l1b", capital=Decimal("3000"), level=one)
    c = ExchangeAccountFactory(name="paper-l2", capital=Decimal("1000"), level=two)
    _closed(a, 1, "40")
    _closed(b, 2, "-20")
    other = _closed(c, 3, "500")
    page = viewer_client.get("/", {"scope": "l1-paper"})
    assert '<option value="l1-paper" selected>level 1 paper accounts (combined) · paper</option>' in page.text
    summary = page.context["summary"]
    assert {x.name for x in page.context["scope"].accounts} == {"paper-l1a", "paper-l1b"}
    assert summary.total_trades == 2 and summary.total_return == pytest.approx(20 / 4000)
    assert other.pk not in [t.pk for t in page.context["recent_closed"]]
    assert 'hx-get="/dashboard/live/?scope=l1-paper"' in page.text
    live = viewer_client.get("/dashboard/live/", {"scope": "l1-paper"})
    assert live.context["summary"].total_trades == 2
    wrong = viewer_client.get("/", {"scope": "l7-paper"})
    assert "no level 7" in wrong.context["scope_error"]


def test_a_view_the_switcher_does_not_have_is_named_not_replaced_by_the_default(viewer_client):
    ExchangeAccountFactory(name="paper-s")
    page = viewer_client.get("/", {"scope": "paper-s"})  # a name typed where the switcher puts a<id>
    assert page.status_code == 200
    assert page.context["scope_error"] == ("scope: 'paper-s' is none of the switcher's views (a<account id>, "
                                           "m<mode>, l<level>-<mode>)")
    assert "is none of the switcher" in viewer_client.get("/dashboard/live/", {"scope": "x"}).text
    # The figures under the error are the default view's, and the page says so, not only in the heading.
    assert ("these are the figures of the default view, combined paper accounts: paper-s." in
            page.text.split('id="scope-error"')[1].split("</p>")[0])


def test_a_halt_shows_what_it_stops_a_pair_halt_is_not_its_whole_account(viewer_client):
    """The halts table showed a halt of one pair as its account's name alone (the account read as stopped), and
    neither a halt's mode (no new entries, or no exits but stop-losses) nor the end of its latch."""
    account = ExchangeAccountFactory(name="real-h", mode=ExchangeAccount.Mode.REAL)
    pair = _closed(account, 1, "1").pair
    HaltFactory(account=account, pair=pair, source="manual", reason="pause it")
    HaltFactory(account=account, source="guard", trigger="daily_loss", mode="halt", reason="loss",
                until=datetime(2099, 1, 1, 6, tzinfo=UTC))
    for page in (viewer_client.get("/"), viewer_client.get("/system/")):
        rows = [row.split("</tr>")[0] for row in page.text.split('id="halts"')[1].split("<tr>")[2:4]]
        assert rows[1].startswith(f"<td>real-h (real): pair {pair} only</td><td>new entries of the pair</td>")
        assert "<td>Halted (no entries, no exits but stop-losses)</td><td>Guard (daily_loss)</td>" in rows[0]
        assert "<td>2099-01-01 06:00</td>" in rows[0] and "<td>until cleared</td>" in rows[1]


def test_the_recent_closed_trades_lead_to_all_the_trades_the_kpis_count(viewer_client):
    """The dashboard showed the newest 25 closed trades of the view with no way to the others: the trade list
    opened unfiltered, every account and every day."""
    one = ExchangeAccountFactory(name="paper-1", capital=Decimal("1000"))
    two = ExchangeAccountFactory(name="paper-2", capital=Decimal("1000"))
    real = ExchangeAccountFactory(name="real-z", mode=ExchangeAccount.Mode.REAL)
    for n in range(30):
        _closed(one if n % 2 else two, 1 + n, "1")  # 1 March 01:00 to 2 March 06:00
    _closed(real, 2, "1")
    _closed(one, 80, "1")  # 4 March
    for query, expected in (({"scope": "mpaper", "start": "2021-03-01", "end": "2021-03-02"}, 30),
                            ({"scope": f"a{one.pk}", "start": "2021-03-01", "end": "2021-03-02"}, 15),
                            ({"scope": f"a{one.pk}"}, 16)):
        page = viewer_client.get("/", query)
        assert page.context["summary"].total_trades == expected
        link = page.text.split('id="all-closed-trades" href="')[1].split('"')[0].replace("&amp;", "&")
        listed = viewer_client.get(link)
        assert listed.status_code == 200, listed.text
        rows = listed.context["page"].object_list
        assert len(rows) == expected and {t.account.mode for t in rows} == {"paper"}, query


def test_today_not_measured_yet_is_not_coloured_as_a_gain(viewer_client):
    account = ExchangeAccountFactory(name="paper-t")
    html = viewer_client.get("/", {"scope": f"a{account.pk}"}).text
    assert '<div class="value">not measured yet' in html  # was class "value pos": green, as a profit
