"""The Telegram console end to end: updates pushed into the fake Telegram, polled, answered in the chat."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission

from core.models import AuditEntry
from execution.models import Order
from monitoring.telegram.console import Console, parse_command
from monitoring.telegram.poller import Poller
from risk.models import Halt
from tests.factories import CandleFactory, ExchangeAccountFactory, OrderFactory, PairTradeFactory
from tests.fakes.telegram import ADMIN_CHAT_ID, ALERTS_CHAT_ID

pytestmark = pytest.mark.django_db

STRANGER_CHAT = -100777


@pytest.fixture
def console(telegram_settings, fake_telegram):
    fake_telegram.add_chat(STRANGER_CHAT, "someone else's group")
    clock = [1000.0]
    poller = Poller(console=Console(clock=lambda: clock[0]), poll_timeout_s=0)
    poller.clock = clock
    yield poller
    poller.close()


def say(fake, poller, chat_id, text, user_id=ADMIN_CHAT_ID) -> list[str]:
    before = len(fake.delivered(chat_id))
    fake.push_message(chat_id, text, from_user_id=user_id)
    poller.poll_once()
    return [m.plain_text for m in fake.delivered(chat_id)[before:]]


def trader(django_user_model, *perms):
    user = django_user_model.objects.create_user(username="alice", password="a-long-test-password")
    for perm in perms:
        app, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app, codename=codename))
    return user


def test_parse_command():
    assert parse_command("/Halt@statarb_bot main flatten") == ("halt", ["main", "flatten"])
    assert parse_command("hello") == ("", [])
    assert parse_command("/halt@Statarb_Bot main", bot_username="statarb_bot") == ("halt", ["main"])
    assert parse_command("/halt@other_bot main", bot_username="statarb_bot") == ("", [])


def test_a_command_addressed_to_another_bot_is_not_answered(fake_telegram, console):
    # In a group two bots read, /status@other_bot is the other bot's: ours learned its own name with getMe.
    assert say(fake_telegram, console, ADMIN_CHAT_ID, "/status@other_bot") == []
    assert console.console.bot_username == fake_telegram.bot_username
    assert say(fake_telegram, console, ADMIN_CHAT_ID, f"/help@{fake_telegram.bot_username}") != []


def test_status_answers_with_the_open_trades_marked_to_the_newest_closes(fake_telegram, console):
    trade = PairTradeFactory(account=ExchangeAccountFactory(name="lvl1"), state="open")
    pair = trade.pair
    OrderFactory(trade=trade, leg=Order.Leg.Y, side="buy", qty=Decimal("10"), filled_qty=Decimal("10"),
                 avg_price=Decimal("100"), fee=Decimal("0.1"), status="filled")
    OrderFactory(trade=trade, instrument=pair.x_instrument, leg=Order.Leg.X, side="sell", qty=Decimal("8.5"),
                 filled_qty=Decimal("8.5"), avg_price=Decimal("50"), fee=Decimal("0.1"), status="filled")
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    CandleFactory(instrument=pair.y_instrument, open_time=hour, close=Decimal("90"))
    CandleFactory(instrument=pair.y_instrument, open_time=hour + timedelta(hours=1), close=Decimal("105"))
    CandleFactory(instrument=pair.x_instrument, open_time=hour + timedelta(hours=1), close=Decimal("48"))

    [answer] = say(fake_telegram, console, ALERTS_CHAT_ID, "/status")

    # 10 x (105 - 100) - 8.5 x (48 - 50) - 0.2 fees = 66.8
    assert f"#{trade.pk} [lvl1] {pair} long_spread open:" in answer
    assert f"{pair.y_instrument.symbol} 10, {pair.x_instrument.symbol} -8.5, uPnL 66.8" in answer
    assert "unrealised PnL (at the newest closes, net of fees paid and funding): 66.8 USDT" in answer
    assert answer.endswith("halts: none")


def test_balance_counts_the_open_trades_in_the_equity(fake_telegram, console):
    """Equity is capital + realised + the open trades marked to market, everywhere (the guard, the dashboard's
    chart, /status's net): /balance said "equity 10010" for an account whose open trade had lost 100.2."""
    account = ExchangeAccountFactory(name="lvl1")
    PairTradeFactory(account=account, state="closed", closed_at=datetime(2021, 1, 2, tzinfo=UTC),
                     realised_pnl=Decimal("10"), exit_reason="exit_signal")
    trade = PairTradeFactory(account=account, state="open")
    pair = trade.pair
    OrderFactory(trade=trade, leg=Order.Leg.Y, side="buy", qty=Decimal("10"), filled_qty=Decimal("10"),
                 avg_price=Decimal("100"), fee=Decimal("0.1"), status="filled")
    OrderFactory(trade=trade, instrument=pair.x_instrument, leg=Order.Leg.X, side="sell", qty=Decimal("8.5"),
                 filled_qty=Decimal("8.5"), avg_price=Decimal("50"), fee=Decimal("0.1"), status="filled")
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    CandleFactory(instrument=pair.y_instrument, open_time=hour, close=Decimal("90"))
    CandleFactory(instrument=pair.x_instrument, open_time=hour, close=Decimal("50"))
    ExchangeAccountFactory(name="lvl2")  # nothing open: no open part
    unpriced = PairTradeFactory(account=ExchangeAccountFactory(name="lvl3"), state="open")
    OrderFactory(trade=unpriced, leg=Order.Leg.Y, side="buy", qty=Decimal("1"), filled_qty=Decimal("1"),
                 avg_price=Decimal("100"), status="filled")

    # 10 x (90 - 100) - 0.2 fees = -100.2; 10000 + 10 - 100.2 = 9909.8
    assert say(fake_telegram, console, ALERTS_CHAT_ID, "/balance") == [
        "[lvl1] paper: capital 10000, realised 10, open trades -100.2, equity 9909.8\n"
        "[lvl2] paper: capital 10000, realised 0, equity 10000\n"
        "[lvl3] paper: capital 10000, realised 0, 1 open trade(s), 1 without a current price, equity n/a"]


def test_an_unknown_chat_gets_nothing(fake_telegram, console):
    assert say(fake_telegram, console, STRANGER_CHAT, "/status") == []
    assert say(fake_telegram, console, STRANGER_CHAT, "/help") == []


def test_halt_needs_a_mapped_user_with_the_permission(fake_telegram, console, django_user_model):
    """A refusal is audited with its reason; the chat (maybe a group) learns neither who is mapped to whom nor which
    permission is missing, only where an administrator reads it."""
    account = ExchangeAccountFactory(name="lvl1")
    [stranger] = say(fake_telegram, console, ADMIN_CHAT_ID, "/halt lvl1", user_id=999)
    alice = trader(django_user_model)  # without permissions
    [refused] = say(fake_telegram, console, ADMIN_CHAT_ID, "/halt lvl1")
    assert not Halt.objects.filter(account=account).exists()
    first, second = AuditEntry.objects.filter(action="refused").order_by("pk")
    assert stranger == f"not allowed (refusal #{first.pk} in the audit trail: ask an administrator)"
    assert refused == f"not allowed (refusal #{second.pk} in the audit trail: ask an administrator)"
    assert "TELEGRAM_USERS" not in stranger and "permission" not in refused
    assert (first.channel, first.actor, first.actor_label) == ("telegram", None, "telegram:999")
    assert first.summary == "/halt refused: the Telegram user is not mapped to a user (TELEGRAM_USERS)"
    assert (second.actor, second.actor_label) == (alice, f"alice via telegram:{ADMIN_CHAT_ID}")
    assert second.summary == "/halt refused: alice lacks the permission execution.halt_account"
    alice.is_active = False
    alice.save()
    say(fake_telegram, console, ADMIN_CHAT_ID, "/halt lvl1")
    assert AuditEntry.objects.filter(action="refused").latest("pk").details["reason"] == (
        "mapped to 'alice', who does not exist or is not active")


def test_halt_is_confirmed_with_a_one_time_code_then_applied_and_audited(fake_telegram, console, django_user_model):
    account = ExchangeAccountFactory(name="lvl1")
    alice = trader(django_user_model, "execution.halt_account", "risk.clear_halt")

    [question] = say(fake_telegram, console, ADMIN_CHAT_ID, "/halt lvl1 flatten")
    assert question.startswith("halt and flatten lvl1? Reply /confirm ")
    code = question.split("/confirm ")[1].split()[0]
    assert not Halt.objects.exists()  # nothing before the confirmation
    assert say(fake_telegram, console, ADMIN_CHAT_ID, "/confirm 000000") == [
        "nothing to confirm with that code (ask again)"]
    assert AuditEntry.objects.get(action="refused").summary == "/confirm of /halt refused: wrong confirmation code"
    assert say(fake_telegram, console, ADMIN_CHAT_ID, f"/confirm {code}") == [
        "nothing to confirm with that code (ask again)"]  # one try: the wrong code spent it

    [question] = say(fake_telegram, console, ADMIN_CHAT_ID, "/halt lvl1 flatten")
    code = question.split("/confirm ")[1].split()[0]
    [done] = say(fake_telegram, console, ADMIN_CHAT_ID, f"/confirm {code}")

    halt = Halt.objects.get(account=account)
    assert done == f"halted lvl1 and flattening its open trades (halt #{halt.pk})"
    assert (halt.source, halt.mode, halt.flatten, halt.created_by) == (Halt.Source.TELEGRAM, "halt", True, alice)
    entry = AuditEntry.objects.get(action="kill_switch")
    # The user the sender is mapped to, not the handle it writes under ("operator": anyone can choose one).
    assert (entry.channel, entry.actor, entry.actor_label) == ("telegram", alice, f"alice via telegram:{ADMIN_CHAT_ID}")
    assert say(fake_telegram, console, ADMIN_CHAT_ID, f"/confirm {code}") == [
        "nothing to confirm with that code (ask again)"]  # used once

    [answer] = say(fake_telegram, console, ALERTS_CHAT_ID, "/status")
    assert "halts: lvl1 (paper) halted and flattening: kill switch: /halt from Telegram by alice" in answer

    [question] = say(fake_telegram, console, ADMIN_CHAT_ID, "/resume lvl1")
    code = question.split("/confirm ")[1].split()[0]
    assert say(fake_telegram, console, ADMIN_CHAT_ID, f"/confirm {code}") == [
        "resumed lvl1: 1 halt(s) cleared; no halt in force"]
    halt.refresh_from_db()
    assert halt.cleared_by == alice and AuditEntry.objects.filter(action="resume", channel="telegram").exists()


def test_a_confirmation_expires(fake_telegram, console, django_user_model):
    ExchangeAccountFactory(name="lvl1")
    trader(django_user_model, "execution.halt_account")
    [question] = say(fake_telegram, console, ADMIN_CHAT_ID, "/flatten lvl1")
    code = question.split("/confirm ")[1].split()[0]
    console.clock[0] += 121
    assert say(fake_telegram, console, ADMIN_CHAT_ID, f"/confirm {code}") == ["that code has expired (ask again)"]
    assert not Halt.objects.exists()


def test_reads_answer_from_the_dashboard_selectors(fake_telegram, console):
    account = ExchangeAccountFactory(name="lvl1")
    closed = datetime(2021, 1, 2, tzinfo=UTC)
    PairTradeFactory(account=account, state="closed", closed_at=closed, realised_pnl=Decimal("12.5"),
                     fees=Decimal("1"), funding=Decimal("0"), exit_reason="exit_signal")
    PairTradeFactory(account=account, state="closed", closed_at=closed + timedelta(days=1),
                     realised_pnl=Decimal("-2.5"), fees=Decimal("1"), funding=Decimal("0"), exit_reason="stop")
    [profit] = say(fake_telegram, console, ALERTS_CHAT_ID, "/profit")
    assert profit.splitlines()[0] == "[lvl1] paper: closed trades 2, win rate 50.0%, profit factor 5.00"
    # A fall from 10,012.50 to 10,010.00, signed as the dashboard and the report sign it (it read '0.02%').
    assert "max drawdown -0.02%," in profit
    assert "realised PnL 10 USDT" in profit and "Sharpe" in profit
    assert say(fake_telegram, console, ALERTS_CHAT_ID, "/profit lvl1") == [profit]
    assert say(fake_telegram, console, ALERTS_CHAT_ID, "/profit nope") == ["no account named 'nope'"]

    [balance] = say(fake_telegram, console, ALERTS_CHAT_ID, "/balance")
    assert balance == "[lvl1] paper: capital 10000, realised 10, equity 10010"
    [trades] = say(fake_telegram, console, ALERTS_CHAT_ID, "/trades 1")
    assert len(trades.splitlines()) == 1 and "PnL" in trades
    [helptext] = say(fake_telegram, console, ALERTS_CHAT_ID, "/help")
    assert "/confirm CODE" in helptext
    assert say(fake_telegram, console, ALERTS_CHAT_ID, "/nope") == ["unknown command /nope; /help lists them"]


def test_profit_never_mixes_paper_with_real_money(fake_telegram, console):
    paper = ExchangeAccountFactory(name="paper1", mode="paper")
    ExchangeAccountFactory(name="real1", mode="real")
    PairTradeFactory(account=paper, state="closed", closed_at=datetime(2021, 1, 2, tzinfo=UTC),
                     realised_pnl=Decimal("5"), fees=Decimal("1"), funding=Decimal("0"), exit_reason="exit_signal")
    [profit] = say(fake_telegram, console, ALERTS_CHAT_ID, "/profit")
    paper_block, real_block = profit.split("\n\n")
    assert paper_block.startswith("[paper1] paper: closed trades 1, win rate 100.0%")
    assert real_block.startswith("[real1] real: closed trades 0, win rate n/a")


def test_a_long_reply_arrives_whole_under_telegrams_rate_limit():
    """A /status of many trades is split in parts: they go a second apart (Telegram's limit per chat), and a part
    refused with 429 is sent again after the wait Telegram names, instead of the rest being dropped."""
    from tests.fakes.telegram import FakeTelegram

    clock = [1000.0]
    with FakeTelegram(clock=lambda: clock[0]) as fake:
        fake.add_chat(ALERTS_CHAT_ID, "statarb alerts")
        fake.force_rate_limit(times=1, retry_after=3, chat_id=ALERTS_CHAT_ID)
        poller = Poller(token=fake.token, api_url=fake.base_url, poll_timeout_s=0,
                        sleep=lambda seconds: clock.__setitem__(0, clock[0] + seconds))
        try:
            poller._reply(ALERTS_CHAT_ID, None, "\n".join(f"#{i} trade line " + "x" * 60 for i in range(150)))
        finally:
            poller.close()
        parts = fake.delivered(ALERTS_CHAT_ID)
        assert len(parts) >= 3 and "".join(p.plain_text for p in parts).count("trade line") == 150
        assert clock[0] >= 1000.0 + 3 + 2  # the 429's wait, then a second before each later part
        assert fake.errors == []


def test_a_change_with_arguments_it_cannot_take_is_refused_audited_and_never_guessed(fake_telegram, console,
                                                                                   django_user_model):
    """`/halt lvl1 lvl2` halted lvl1 alone, `/halt lvl1 flaten` halted without flattening and `/resume lvl1 flatten`
    resumed: words it did not take were dropped and a guess was carried out."""
    ExchangeAccountFactory(name="lvl1")
    ExchangeAccountFactory(name="lvl2")
    trader(django_user_model, "execution.halt_account", "risk.clear_halt")
    asked = {
        "/halt lvl1 lvl2": "more than one account ('lvl1', 'lvl2'): name one, or none for all",
        "/halt lvl1 flaten": "more than one account ('lvl1', 'flaten'): name one, or none for all",
        "/resume lvl1 flatten": "/resume does not take 'flatten' here",
        "/flatten lvl1 flatten": "/flatten does not take 'flatten' here",
        "/halt nope": "no account named 'nope'",
    }
    for text, why in asked.items():
        [answer] = say(fake_telegram, console, ADMIN_CHAT_ID, text)
        entry = AuditEntry.objects.filter(action="refused").latest("pk")
        assert answer.startswith(f"{why} (refusal #{entry.pk}); usage: /")
        assert entry.summary == f"{text} refused: {why}" and entry.actor.username == "alice"
        assert "/confirm" not in answer
    assert not console.console.pending and not Halt.objects.exists()


def test_a_new_request_voids_the_one_waiting_for_its_code(fake_telegram, console, django_user_model):
    ExchangeAccountFactory(name="lvl1")
    trader(django_user_model, "execution.halt_account")
    [question] = say(fake_telegram, console, ADMIN_CHAT_ID, "/halt lvl1")
    code = question.split("/confirm ")[1].split()[0]
    say(fake_telegram, console, ADMIN_CHAT_ID, "/halt lvl9")  # refused (no such account): the first is void too
    assert say(fake_telegram, console, ADMIN_CHAT_ID, f"/confirm {code}") == [
        "nothing to confirm with that code (ask again)"]
    assert not Halt.objects.exists()


def test_a_change_asked_in_a_chat_not_on_the_whitelist_is_audited_and_not_answered(fake_telegram, console,
                                                                                   django_user_model):
    ExchangeAccountFactory(name="lvl1")
    alice = trader(django_user_model, "execution.halt_account")
    assert say(fake_telegram, console, STRANGER_CHAT, "/flatten lvl1") == []
    assert say(fake_telegram, console, STRANGER_CHAT, "/status") == []
    entry = AuditEntry.objects.get(action="refused")
    assert entry.summary == f"/flatten refused: chat {STRANGER_CHAT} is not a command chat"
    assert (entry.actor, entry.details["chat"]) == (alice, STRANGER_CHAT)
    assert not Halt.objects.exists()


def test_a_stranger_chat_flooding_change_requests_gets_one_audit_entry_a_minute(fake_telegram, console):
    """Someone scripting /halt at the bot from their own chat: the first request is on the record at once, the rest
    of the minute only counted, and the count goes into the chat's next entry."""
    for _ in range(5):
        assert say(fake_telegram, console, STRANGER_CHAT, "/halt lvl1") == []
    assert AuditEntry.objects.filter(action="refused").count() == 1
    console.clock[0] += 61
    assert say(fake_telegram, console, STRANGER_CHAT, "/confirm 123456") == []
    first, second = AuditEntry.objects.filter(action="refused").order_by("pk")
    assert first.summary == f"/halt refused: chat {STRANGER_CHAT} is not a command chat"
    assert second.summary == (f"/confirm refused: chat {STRANGER_CHAT} is not a command chat (and 4 more change "
                              "request(s) from this chat since its last record)")
    assert not Halt.objects.exists()


def test_a_stranger_chats_counted_requests_are_recorded_when_it_stops(fake_telegram, console):
    """A flood that stops: its count must not wait for a next request that never comes (nor die with the poller).
    Once the chat's minute is over, the poller's next round writes the requests it counted."""
    for _ in range(5):
        say(fake_telegram, console, STRANGER_CHAT, "/halt lvl1")
    console.poll_once()  # a round within the minute: nothing more yet
    assert AuditEntry.objects.filter(action="refused").count() == 1
    console.clock[0] += 61
    console.poll_once()  # a round with no message at all
    _, second = AuditEntry.objects.filter(action="refused").order_by("pk")
    assert second.summary == (f"/halt refused: chat {STRANGER_CHAT} is not a command chat (4 more change "
                              "request(s) from this chat since its last record, the last this one)")
    assert second.details["chat"] == STRANGER_CHAT
    console.clock[0] += 61
    console.poll_once()
    assert AuditEntry.objects.filter(action="refused").count() == 2  # nothing left to record


@pytest.mark.parametrize(("text", "answer"), [
    ("/trades ten", "'ten' is not a number of rows (1 to 30); usage: /trades [n]"),
    ("/daily 0", "'0' is not a number of rows (1 to 30); usage: /daily [n]"),
    ("/pairs -3", "'-3' is not a number of rows (1 to 30); usage: /pairs [n]"),
    ("/trades 5 lvl1", "/trades takes at most 1 argument; usage: /trades [n]"),
    ("/status lvl1", "/status takes no argument; usage: /status"),
])
def test_a_read_with_a_malformed_number_or_too_many_arguments_answers_its_usage(fake_telegram, console, text,
                                                                                  answer):
    """`/trades ten` answered the default ten trades, `/status lvl1` every account's: not what was asked."""
    assert say(fake_telegram, console, ALERTS_CHAT_ID, text) == [answer]


def test_a_resume_says_what_still_stops_trading(fake_telegram, console, django_user_model):
    """/resume clears the halts a person raised; the guard's stay. "resumed lvl1: 0 halt(s) cleared" alone read as
    trading again while the guard's daily loss halt still held the account."""
    account = ExchangeAccountFactory(name="lvl1")
    trader(django_user_model, "risk.clear_halt")
    guard = Halt.objects.create(account=account, source=Halt.Source.GUARD, reason="daily loss 3.2% >= 3%")
    [question] = say(fake_telegram, console, ADMIN_CHAT_ID, "/resume lvl1")
    code = question.split("/confirm ")[1].split()[0]
    assert say(fake_telegram, console, ADMIN_CHAT_ID, f"/confirm {code}") == [
        f"resumed lvl1: 0 halt(s) cleared; still in force: {guard}"]


def test_a_read_never_shows_a_secret(fake_telegram, console):
    from core.secrets import register_secret

    register_secret("exchange-key-abcdef123456")  # an account's key, as its exchange client registers it
    Halt.objects.create(source=Halt.Source.BOT, reason="bybit said: apiKey=exchange-key-abcdef123456 for "
                                                       f"https://api.telegram.org/bot{fake_telegram.token}/x")
    [answer] = say(fake_telegram, console, ALERTS_CHAT_ID, "/status")
    assert "exchange-key-abcdef123456" not in answer and fake_telegram.token not in answer
    assert "apiKey=*** for https://api.telegram.org/bot***/x" in answer


@pytest.mark.parametrize("mode", ["refuse", "http_502", "drop"])
def test_the_console_waits_out_an_outage_then_answers_what_came_meanwhile_once(fake_telegram, console, caplog, mode):
    slept = []
    console.sleep = slept.append
    fake_telegram.push_message(ALERTS_CHAT_ID, "/help", from_user_id=ADMIN_CHAT_ID)
    with fake_telegram.outage(mode):
        with caplog.at_level("WARNING", logger="monitoring.telegram.poller"):
            assert console.poll_once() == 0
            assert console.poll_once() == 0
    assert slept == [2.0, 4.0]  # backed off
    assert "getUpdates failed" in caplog.text and fake_telegram.token not in caplog.text
    assert console.poll_once() == 1
    assert console.poll_once() == 0  # confirmed: never answered twice
    assert [m.plain_text.splitlines()[0] for m in fake_telegram.delivered(ALERTS_CHAT_ID)] == [
        "/status - open trades with unrealised PnL, halts"]


def test_daily_answers_the_last_n_days_of_every_account(fake_telegram, console):
    """/daily n answered n rows: with three accounts, /daily 2 showed not even the whole of the last day."""
    from datetime import date

    from tests.factories import DailyPnlSnapshotFactory

    for name in ("a1", "a2", "a3"):
        account = ExchangeAccountFactory(name=name)
        for day in (1, 2, 3):
            DailyPnlSnapshotFactory(account=account, date=date(2026, 3, day), realised_pnl=Decimal(day))
    [answer] = say(fake_telegram, console, ALERTS_CHAT_ID, "/daily 2")
    assert [line.split(" PnL")[0] for line in answer.splitlines()] == [
        "2026-03-03 [a1]", "2026-03-03 [a2]", "2026-03-03 [a3]", "2026-03-02 [a1]", "2026-03-02 [a2]",
        "2026-03-02 [a3]"]


def test_a_mistyped_command_chat_or_user_mapping_stops_the_console_from_starting_and_names_the_entry(settings):
    """Read leniently, a mistyped entry was dropped without a word: the console started, answered nothing in the
    chat (a /halt in an emergency included), or refused the trader's every /halt as not mapped."""
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    settings.TELEGRAM_BOT_TOKEN = "123456:not-used-here"
    settings.TELEGRAM_COMMAND_CHAT_IDS = f"{ALERTS_CHAT_ID};{ADMIN_CHAT_ID}, 77"
    settings.TELEGRAM_USERS = f"alice:{ADMIN_CHAT_ID},{ADMIN_CHAT_ID}:,88:bob"
    with pytest.raises(SystemCheckError) as refused:
        call_command("telegram_console", rounds=0, skip_checks=False)  # as manage.py runs it
    text = str(refused.value)
    assert f"TELEGRAM_COMMAND_CHAT_IDS: '{ALERTS_CHAT_ID};{ADMIN_CHAT_ID}' is not a chat id" in text
    assert f"TELEGRAM_USERS: 'alice:{ADMIN_CHAT_ID}' is not '<Telegram user id>:<user name>'" in text
    assert f"TELEGRAM_USERS: '{ADMIN_CHAT_ID}:' is not" in text
    assert "'77'" not in text and "88:bob" not in text  # the good entries are not named

    settings.TELEGRAM_COMMAND_CHAT_IDS = f"{ALERTS_CHAT_ID}, {ADMIN_CHAT_ID}:critical"
    settings.TELEGRAM_USERS = f"{ADMIN_CHAT_ID}:alice, 88:bob"
    call_command("check")  # raises on any error
