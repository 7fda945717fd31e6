"""What a trader's phone receives: the bot trading on paper, halted and resumed from Telegram, every notification
sent through the fake Telegram, and the figures of each message compared with the database."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission

from execution.models import Fill, PairTrade, Signal
from monitoring.summaries import daily_summaries_notify
from monitoring.telegram.console import Console
from monitoring.telegram.poller import Poller
from notifications.sender import notifications_send
from risk.models import Halt
from tests.execution.bot_world import BotWorld
from tests.factories import RiskLimitFactory
from tests.fakes.telegram import ADMIN_CHAT_ID, ALERTS_CHAT_ID

pytestmark = pytest.mark.django_db


@pytest.fixture
def phone(telegram_settings):
    telegram_settings.TELEGRAM_MIN_INTERVAL_S = 0.0
    telegram_settings.NOTIFY_FOLD_WINDOW_S = 0
    poller = Poller(console=Console(), poll_timeout_s=0)
    yield poller
    poller.close()


def command(fake, poller, text: str) -> str:
    before = len(fake.delivered(ADMIN_CHAT_ID))
    fake.push_message(ADMIN_CHAT_ID, text, from_user_id=ADMIN_CHAT_ID)
    poller.poll_once()
    [answer] = [m.plain_text for m in fake.delivered(ADMIN_CHAT_ID)[before:]]
    return answer


def alerts(fake) -> list[str]:
    notifications_send(budget_s=5)
    return [m.plain_text for m in fake.delivered(ALERTS_CHAT_ID)]


def test_a_trade_opened_and_closed_then_a_halt_and_resume_from_telegram(fake_telegram, phone, django_user_model,
                                                                       django_capture_on_commit_callbacks):
    world = BotWorld()
    world.account.name = "lvl1 <main> & co_*x*"
    world.account.save(update_fields=["name"])
    alice = django_user_model.objects.create_user(username="alice", password="a-long-test-password")
    for codename in ("halt_account", "clear_halt"):
        alice.user_permissions.add(Permission.objects.get(codename=codename))

    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    world.tick()
    trade = world.trade()
    [opened] = alerts(fake_telegram)
    pair = f"{trade.pair.y_instrument.symbol}/{trade.pair.x_instrument.symbol}"
    assert opened.splitlines() == [
        "🔹 trade_opened",
        f"[lvl1 <main> & co_*x*] {pair} trade {trade.pk} opened (long_spread, z=-2.20, sizes "
        f"{trade.pair.y_instrument.symbol} {trade.y_qty.normalize()}, {trade.pair.x_instrument.symbol} "
        f"-{trade.x_qty.normalize()})"]

    world.next_bar(y="102", x="49", action=Signal.Action.EXIT, zscore=0.1)
    world.tick()
    trade.refresh_from_db()
    assert trade.state == PairTrade.State.CLOSED
    closed = alerts(fake_telegram)[-1]
    assert closed.splitlines()[1] == (
        f"[lvl1 <main> & co_*x*] {pair} trade {trade.pk} closed (Exit signal): PnL {trade.realised_pnl:.2f} "
        f"(fees {trade.fees:.2f}, funding {trade.funding:.2f})")
    assert trade.realised_pnl != 0 and trade.fees > 0
    flows = [(f.qty * f.price * (-1 if f.order.side == "buy" else 1), f.fee)
             for f in Fill.objects.filter(order__trade=trade).select_related("order")]
    assert f"PnL {sum(c for c, _ in flows) - sum(fee for _, fee in flows):.2f} " in closed  # from the fills

    daily_summaries_notify(day=trade.closed_at.date())
    summary = alerts(fake_telegram)[-1]
    assert f"realised PnL {trade.realised_pnl:.2f} USDT" in summary

    # A name with spaces can't be written as one argument: refused, never taken for another account.
    assert command(fake_telegram, phone, f"/halt {world.account.name}").startswith("more than one account")
    account_name = world.account.name
    question = command(fake_telegram, phone, "/halt")
    with django_capture_on_commit_callbacks(execute=True):  # halts are announced after their commit
        done = command(fake_telegram, phone, "/confirm " + question.split("/confirm ")[1].split()[0])
    halt = Halt.objects.get()
    assert done == f"halted every account (halt #{halt.pk})"
    raised = alerts(fake_telegram)[-1]
    assert raised.splitlines() == ["🚨 kill_switch", "Halted (no entries, no exits but stop-losses): all accounts",
                                   "reason: kill switch: /halt from Telegram by alice", "by: alice"]
    assert fake_telegram.delivered(ADMIN_CHAT_ID)[-1].plain_text == raised  # critical: the private chat as well

    question = command(fake_telegram, phone, "/resume")
    with django_capture_on_commit_callbacks(execute=True):
        resumed = command(fake_telegram, phone, "/confirm " + question.split("/confirm ")[1].split()[0])
    assert resumed == "resumed system-wide: 1 halt(s) cleared; no halt in force"
    cleared = alerts(fake_telegram)[-1]
    assert cleared.splitlines() == ["⚠️ kill_switch_released", "cleared: all accounts",
                                    "was: kill switch: /halt from Telegram by alice", "by: alice"]
    assert account_name in opened


def test_a_daily_loss_halt_says_the_loss_the_database_holds(fake_telegram, phone, django_capture_on_commit_callbacks):
    world = BotWorld(start=datetime(2021, 3, 1, 18, tzinfo=UTC))
    RiskLimitFactory(account=world.account, daily_loss_limit=Decimal("1"))
    with django_capture_on_commit_callbacks(execute=True):
        world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
        world.tick()
    with django_capture_on_commit_callbacks(execute=True):
        world.next_bar(y="90", x="55", action=Signal.Action.STOP, zscore=-4.0, position=0)
        world.tick()
    trade = world.trade()
    halt = Halt.objects.get(account=world.account)
    _opened, closed, raised = alerts(fake_telegram)
    assert f"closed (Stop): PnL {trade.realised_pnl:.2f} " in closed and trade.realised_pnl < -1
    assert raised.splitlines() == [
        "🚨 halt_raised", f"Halted (no entries, no exits but stop-losses): {world.account.name}",
        f"reason: daily loss limit: daily loss {-trade.realised_pnl:.2f} is beyond the limit 1.00", "by: Guard",
        "until 2021-03-02 00:00 UTC"]
    assert raised.splitlines()[2] == f"reason: {halt.reason}"
    assert fake_telegram.delivered(ADMIN_CHAT_ID)[-1].plain_text == raised  # critical: the private chat too
