"""``manage.py performance_report``: the same figures as the API, as PNG, PDF and HTML."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from execution.models import PairTrade
from tests.factories import ExchangeAccountFactory, PairTradeFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2021, 3, 1, tzinfo=UTC)


@pytest.fixture
def account():
    account = ExchangeAccountFactory(name="main", capital=Decimal("1000"))
    for hours, pnl, reason in ((2, "100", "exit_signal"), (30, "-50", "stop"), (800, "20", "exit_signal")):
        PairTradeFactory(account=account, state=PairTrade.State.CLOSED, opened_at=T0,
                         closed_at=T0 + timedelta(hours=hours), realised_pnl=Decimal(pnl), exit_reason=reason)
    return account


def test_html_report_has_the_kpis_months_pairs_and_reasons(account, tmp_path):
    out = tmp_path / "report.html"
    stdout = StringIO()
    call_command("performance_report", "--account", "main", "--start", "2021-03-01", "--end", "2021-04-30",
                 "--out", str(out), stdout=stdout)
    html = out.read_text()
    assert "main (paper): 3 trades" in stdout.getvalue()
    assert "<tr><th>Trades</th><td>3</td></tr>" in html
    assert "<tr><th>Return</th><td>7.00%</td></tr>" in html
    # Equity 1000 -> 1100 -> 1050 -> 1070: drawdown 50 / 1100.
    assert "<tr><th>Max drawdown</th><td>-4.55%</td></tr>" in html
    # March ends at 1050 (+5 %), April at 1070.
    assert "<tr><td>2021-03</td><td>5.00%</td></tr>" in html
    assert f"<tr><td>2021-04</td><td>{100 * (1070 / 1050 - 1):.2f}%</td></tr>" in html
    assert "<tr><td>stop</td><td>1</td><td>-50.00</td></tr>" in html
    assert 'src="data:image/png;base64,' in html


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".pdf", b"%PDF")])
def test_png_and_pdf(account, tmp_path, suffix, magic):
    out = tmp_path / f"report{suffix}"
    call_command("performance_report", "--out", str(out), stdout=StringIO())
    assert out.read_bytes().startswith(magic) and out.stat().st_size > 10_000


def test_bad_options_are_refused_before_any_work(account, tmp_path):
    with pytest.raises(CommandError, match=r"\.png, \.pdf, \.html"):
        call_command("performance_report", "--out", str(tmp_path / "r.txt"))
    with pytest.raises(CommandError) as refused:
        call_command("performance_report", "--account", "nobody", "--out", str(tmp_path / "r.png"))
    assert str(refused.value) == "account: no account with id or name 'nobody'"  # not Python's ErrorDetail(...)
    assert not (tmp_path / "r.png").exists()


def test_an_unknown_level_is_refused_naming_the_levels(account, tmp_path):
    # --mode paper --level 99 wrote a report of no account, exit code 0.
    with pytest.raises(CommandError) as refused:
        call_command("performance_report", "--mode", "paper", "--level", "99", "--out", str(tmp_path / "r.png"))

    assert str(refused.value) == "level: no level 99 (levels: 0, 1, 2, 3)"
    assert not (tmp_path / "r.png").exists()


def test_money_is_rounded_to_the_cent_as_the_dashboard_rounds_it():
    """The report wrote money through a float: fees of 2.675 (2.67499999... as a double) read 2.67 there and 2.68
    on the dashboard (half up, on the exact decimal)."""
    from monitoring.report import kpi_rows
    from monitoring.selectors import performance_summary

    account = ExchangeAccountFactory(name="fees", capital=Decimal("1000"))
    PairTradeFactory(account=account, state=PairTrade.State.CLOSED, opened_at=T0, closed_at=T0 + timedelta(hours=1),
                     realised_pnl=Decimal("1234.505"), fees=Decimal("2.675"), exit_reason="exit_signal")
    rows = dict(kpi_rows(performance_summary(account=account, start=T0, end=T0 + timedelta(days=1))))
    assert (rows["Fees"], rows["Net PnL"], rows["Capital"]) == ("2.68", "1,234.51", "1,000.00")


def test_a_scope_without_trades_reads_n_a_not_n_a_hours():
    """The report of a period without a trade read "Average holding: n/a h"."""
    from monitoring.report import kpi_rows
    from monitoring.selectors import performance_summary

    account = ExchangeAccountFactory(name="quiet")
    rows = dict(kpi_rows(performance_summary(account=account, start=T0, end=T0 + timedelta(days=1))))
    assert rows["Average holding"] == "n/a" and rows["Win rate"] == "n/a"
