"""Closing a trade by hand with the broker down: the request is stored, audited and answered at once (202) by a
real server whose broker never answers; the bot's next tick closes the trade though the wake-up never arrived."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import urllib.request

import pytest
from django.contrib.auth.models import Group
from knox.models import AuthToken

from core.models import AuditEntry
from execution.models import PairTrade, Signal
from tests.execution.bot_world import BotWorld
from tests.live_server import live_server

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)
# Long enough for any honest answer; a server that waited for this broker would wait forever.
ANSWER_TIMEOUT_S = 30


@contextlib.contextmanager
def silent_broker():
    """A broker address that accepts connections and never says a word (a hung Redis, a black-holed network)."""
    server = socket.create_server(("127.0.0.1", 0), backlog=64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        server.close()


@contextlib.contextmanager
def refusing_broker():
    """A broker address nobody listens on (the broker process is down)."""
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    yield port


@pytest.mark.parametrize("broker", [silent_broker, refusing_broker], ids=["silent", "refusing"])
def test_a_close_is_stored_and_answered_with_the_broker_down(broker, django_user_model):
    world = BotWorld()
    world.next_bar(action=Signal.Action.ENTER_LONG, zscore=-2.2)
    world.tick()
    trade = world.trade()
    trader = django_user_model.objects.create_user("trader-on-call", password="unused-password-123")
    trader.groups.add(Group.objects.get(name="trader"))
    _, token = AuthToken.objects.create(user=trader)

    with broker() as port, live_server({"CELERY_BROKER_URL": f"redis://127.0.0.1:{port}/0"}) as base_url:
        request = urllib.request.Request(f"{base_url}/api/v1/trades/{trade.pk}/close/", method="POST",
                                         headers={"Authorization": f"Token {token}"})
        with urllib.request.urlopen(request, timeout=ANSWER_TIMEOUT_S) as response:
            status, body = response.status, json.loads(response.read())

    assert status == 202 and body["id"] == trade.pk and body["close_requested_at"]
    trade.refresh_from_db()
    assert trade.close_requested_by == trader and trade.state == PairTrade.State.OPEN
    assert AuditEntry.objects.filter(action="close_trade", actor=trader, channel="api").count() == 1
    # The wake-up was lost; the next scheduled tick reads the request and closes.
    world.tick()
    trade.refresh_from_db()
    assert trade.state == PairTrade.State.CLOSED and trade.exit_reason == PairTrade.ExitReason.MANUAL


def test_flattening_an_account_asks_every_active_trade_of_it_to_close(django_user_model):
    from execution.services.manual import account_request_flatten
    from tests.factories import ExchangeAccountFactory, PairTradeFactory

    user = django_user_model.objects.create_user(username="flattener", password="a-long-test-password")
    account = ExchangeAccountFactory(name="flat")
    active = [PairTradeFactory(account=account, state=state)
              for state in (PairTrade.State.PLANNED, PairTrade.State.OPENING, PairTrade.State.OPEN,
                            PairTrade.State.CLOSING)]
    done = PairTradeFactory(account=account, state=PairTrade.State.CLOSED)
    elsewhere = PairTradeFactory(state=PairTrade.State.OPEN)

    closing = account_request_flatten(account=account, user=user, wake_bot=False, channel="command")
    assert closing == [t.pk for t in active]
    assert set(PairTrade.objects.filter(close_requested_by=user).values_list("pk", flat=True)) == set(closing)
    assert not PairTrade.objects.filter(pk__in=[done.pk, elsewhere.pk], close_requested_at__isnull=False).exists()
    flatten = AuditEntry.objects.get(action="flatten_account")
    assert flatten.actor == user and flatten.channel == "command" and flatten.details == {"trades": closing}
    assert AuditEntry.objects.filter(action="close_trade").count() == 4
    # Asking again changes nothing that was asked already, and is audited again.
    assert account_request_flatten(account=account, user=user, wake_bot=False) == closing
    assert AuditEntry.objects.filter(action="close_trade").count() == 4
