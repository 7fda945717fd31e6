"""The fake Telegram Bot API server, exercised over real HTTP on 127.0.0.1 with urllib / http.client."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.fakes.telegram import (
    ADMIN_CHAT_ID,
    ALERTS_CHAT_ID,
    DEFAULT_TOKEN,
    FakeTelegram,
    HtmlParseError,
    fake_telegram,  # noqa: F401 - registers the shared fixture
    parse_html,
)

OTHER_CHAT_ID = -1009999999999
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ManualClock:
    def __init__(self, start: float = 1_700_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def call(
    fake: FakeTelegram,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    token: str | None = None,
    encoding: str = "json",
    timeout: float = 3.0,
) -> tuple[int, Any]:
    """(HTTP status, decoded JSON or the raw text of a non-JSON answer). ``encoding``: json, form, query (GET)."""
    params = params or {}
    url = fake.url(method, token)
    headers: dict[str, str] = {}
    data: bytes | None = None
    if encoding == "json":
        data, headers["Content-Type"] = json.dumps(params).encode(), "application/json"
    else:
        flat = {k: v if isinstance(v, str) else json.dumps(v) for k, v in params.items()}
        if encoding == "form":
            data, headers["Content-Type"] = urlencode(flat).encode(), "application/x-www-form-urlencoded"
        elif flat:
            url += "?" + urlencode(flat)
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data is not None else "GET")
    try:
        with NO_PROXY.open(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            body = exc.read()
        if exc.headers.get("Content-Type", "").startswith("application/json"):
            return exc.code, json.loads(body)
        return exc.code, body.decode()


def send(fake: FakeTelegram, chat_id: int | str, text: str, *, timeout: float = 3.0, **extra: Any) -> tuple[int, Any]:
    return call(fake, "sendMessage", {"chat_id": chat_id, "text": text, **extra}, timeout=timeout)


def error(code: int, description: str, **parameters: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return body


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fake(clock):
    """Two known chats, a manual clock for the flood limits, short holds."""
    with FakeTelegram(clock=clock, outage_hold_s=1.0, max_poll_timeout_s=2.0) as server:
        server.add_chat(ALERTS_CHAT_ID, "statarb alerts")
        server.add_chat(ADMIN_CHAT_ID, "Operator", username="statarb_operator")
        yield server
    assert server.errors == []


# ---------------------------------------------------------------------------------------------------- basics


def test_get_me_token_and_unknown_methods(fake):
    status, body = call(fake, "getMe", encoding="query")
    assert status == 200 and body["ok"] is True
    assert body["result"] == {
        "id": 123456, "is_bot": True, "first_name": "statarb test bot", "username": "statarb_test_bot",
        "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False,
    }  # fmt: skip
    assert call(fake, "getme")[0] == 200  # method names are case-insensitive, POST works too

    assert call(fake, "getMe", token="123456:WRONG") == (401, error(401, "Unauthorized"))
    assert call(fake, "sendMessage", {"chat_id": ALERTS_CHAT_ID, "text": "x"}, token="nope")[0] == 401
    assert call(fake, "sendCarrierPigeon") == (404, error(404, "Not Found"))
    assert call(fake, "getChat", {"chat_id": ALERTS_CHAT_ID})[1]["result"]["type"] == "supergroup"
    assert fake.delivered() == []

    log = fake.requests
    assert [(r.method, r.status, r.token_ok) for r in log] == [
        ("getMe", 200, True), ("getme", 200, True), ("getMe", 401, False), ("sendMessage", 401, False),
        ("sendCarrierPigeon", 404, True), ("getChat", 200, True),
    ]  # fmt: skip
    assert log[-2].description == "Not Found"
    assert [r.method for r in fake.requests_to("GETME")] == ["getMe", "getme", "getMe"]


def test_a_path_outside_the_bot_api_is_404(fake):
    with pytest.raises(urllib.error.HTTPError) as caught:
        NO_PROXY.open(f"{fake.base_url}/favicon.ico", timeout=2)
    assert caught.value.code == 404
    caught.value.close()


@pytest.mark.parametrize("encoding", ["json", "form", "query"])
def test_parameters_from_json_form_or_query(fake, encoding):
    markup = {"inline_keyboard": [[{"text": "Halt", "callback_data": "halt:main"}]]}
    status, body = call(
        fake, "sendMessage",
        {"chat_id": ALERTS_CHAT_ID, "text": "<b>spread</b> z=2.1 ✓", "parse_mode": "HTML", "reply_markup": markup,
         "disable_web_page_preview": True, "disable_notification": True},
        encoding=encoding,
    )  # fmt: skip
    assert status == 200, body
    assert body["result"]["reply_markup"] == markup
    [message] = fake.delivered()
    assert (message.text, message.plain_text, message.parse_mode) == ("<b>spread</b> z=2.1 ✓", "spread z=2.1 ✓", "HTML")
    assert message.reply_markup == markup
    assert message.disable_web_page_preview is True and message.disable_notification is True


def test_multipart_body_and_query_string_merge(fake):
    boundary = uuid.uuid4().hex
    parts = [("chat_id", str(ADMIN_CHAT_ID)), ("text", "multipart ✓")]
    body = (
        b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
            for name, value in parts
        )
        + f"--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        fake.url("sendMessage") + "?parse_mode=HTML", data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )  # fmt: skip
    with NO_PROXY.open(request, timeout=2) as response:
        assert json.loads(response.read())["result"]["text"] == "multipart ✓"
    [message] = fake.delivered(ADMIN_CHAT_ID)
    assert (message.text, message.parse_mode) == ("multipart ✓", "HTML")


def test_invalid_json_body_is_a_bad_request(fake):
    request = urllib.request.Request(
        fake.url("sendMessage"), data=b"{not json", headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        NO_PROXY.open(request, timeout=2)
    with caught.value as answer:
        assert answer.code == 400
        assert json.loads(answer.read())["description"] == "Bad Request: can't parse JSON object"


# ---------------------------------------------------------------------------------------------------- sendMessage


def test_send_message_html_happy_path(fake, clock):
    text = '<b>ETH/BTC</b> opened: z=<code>2.31</code> &lt;&amp;&gt; <a href="https://x.test/p?a=1&amp;b=2">pair</a>'
    status, body = send(fake, ALERTS_CHAT_ID, text, parse_mode="HTML")
    assert status == 200 and body["ok"] is True
    result = body["result"]
    assert result["message_id"] == 1
    assert result["date"] == int(clock.now)
    assert result["chat"] == {"id": ALERTS_CHAT_ID, "type": "supergroup", "title": "statarb alerts"}
    assert result["from"]["is_bot"] is True
    assert result["text"] == "ETH/BTC opened: z=2.31 <&> pair"
    assert result["entities"] == [
        {"offset": 0, "length": 7, "type": "bold"},
        {"offset": 18, "length": 4, "type": "code"},
        {"offset": 27, "length": 4, "type": "text_link", "url": "https://x.test/p?a=1&b=2"},
    ]

    clock.advance(1)
    assert send(fake, ALERTS_CHAT_ID, "second")[1]["result"]["message_id"] == 2  # ids increase per chat
    first_private = send(fake, ADMIN_CHAT_ID, "hello")[1]["result"]
    assert first_private["message_id"] == 1
    assert first_private["chat"] == {
        "id": ADMIN_CHAT_ID, "type": "private", "first_name": "Operator", "username": "statarb_operator",
    }  # fmt: skip
    assert "entities" not in first_private

    delivered = fake.delivered()
    assert [(m.chat_id, m.message_id) for m in delivered] == [(ALERTS_CHAT_ID, 1), (ALERTS_CHAT_ID, 2),
                                                              (ADMIN_CHAT_ID, 1)]  # fmt: skip
    assert delivered[0].text == text and delivered[0].parse_mode == "HTML" and delivered[0].time == clock.now - 1
    assert delivered[1].parse_mode is None
    assert fake.delivered_texts(ADMIN_CHAT_ID) == ["hello"]
    assert send(fake, "@statarb_operator", "by username", parse_mode="html")[0] == 429  # same chat, same second


@pytest.mark.parametrize(
    ("params", "description"),
    [
        ({"chat_id": OTHER_CHAT_ID, "text": "hi"}, "chat not found"),
        ({"chat_id": "@nobody", "text": "hi"}, "chat not found"),
        ({"chat_id": "not-a-chat", "text": "hi"}, "chat not found"),
        ({"text": "hi"}, "chat_id is empty"),
        ({"chat_id": ALERTS_CHAT_ID}, "message text is empty"),
        ({"chat_id": ALERTS_CHAT_ID, "text": ""}, "message text is empty"),
        ({"chat_id": ALERTS_CHAT_ID, "text": " \n\t "}, "message text is empty"),
        ({"chat_id": ALERTS_CHAT_ID, "text": "<b> </b>", "parse_mode": "HTML"}, "text must be non-empty"),
        ({"chat_id": ALERTS_CHAT_ID, "text": "x" * 4097}, "message is too long"),
        ({"chat_id": ALERTS_CHAT_ID, "text": "&lt;" * 4097, "parse_mode": "HTML"}, "message is too long"),
        ({"chat_id": ALERTS_CHAT_ID, "text": "hi", "parse_mode": "BBCode"}, "unsupported parse_mode"),
        ({"chat_id": ALERTS_CHAT_ID, "text": "hi", "reply_to_message_id": 77}, "message to be replied not found"),
        ({"chat_id": ALERTS_CHAT_ID, "text": "hi", "reply_markup": "{oops"},
         "can't parse reply keyboard markup JSON object"),
    ],
)  # fmt: skip
def test_send_message_bad_requests(fake, params, description):
    status, body = call(fake, "sendMessage", params)
    assert (status, body) == (400, error(400, f"Bad Request: {description}"))
    assert fake.delivered() == []


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("<p>para</p>", 'Unsupported start tag "p" at byte offset 0'),
        ("<b>bold", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<b><i>x</b></i>", 'Unmatched end tag at byte offset 7, expected "</i>", found "</b>"'),
        ("x</b>", "Unexpected end tag at byte offset 1"),
        ("<B>x</B>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</B>"'),  # as TDLib
        ("z < 2", 'Unsupported start tag "" at byte offset 2'),
        ("é<b", "Unclosed start tag at byte offset 2"),  # offsets are UTF-8 bytes
        ("<b>x</b", "Unclosed end tag at byte offset 4"),
        ('<a href="https://x.test>x</a>', "Unclosed start tag at byte offset 0"),
        ("<span>x</span>", 'Tag "span" must have class "tg-spoiler" at byte offset 0'),
        ("<a href=x/y>x</a>", "Unexpected end of name token at byte offset 9"),
        ("AT&T", 'Unescaped "&" at byte offset 2 (fake: write &amp;)'),
        ("<b>1 & 2</b>", 'Unescaped "&" at byte offset 5 (fake: write &amp;)'),
    ],
)
def test_malformed_html_is_rejected_with_telegrams_reason(fake, text, reason):
    status, body = send(fake, ALERTS_CHAT_ID, text, parse_mode="HTML")
    assert (status, body) == (400, error(400, f"Bad Request: can't parse entities: {reason}"))
    assert fake.delivered() == []
    assert send(fake, ALERTS_CHAT_ID, text)[0] == 200  # without parse_mode the same text is plain text


def test_every_supported_tag_parses():
    text = (
        "<b>b</b><strong>s</strong><i>i</i><em>e</em><u>u</u><ins>n</ins><s>s</s><strike>k</strike><del>d</del>"
        '<code>c</code><pre>p</pre><pre><code class="language-python">py</code></pre><a href="https://a.test">a</a>'
        '<tg-spoiler>t</tg-spoiler><span class="tg-spoiler">x</span><span class=tg-spoiler>y</span>'
        "<blockquote>q</blockquote><blockquote expandable>w</blockquote>"
        '<tg-emoji emoji-id="5368324170671202286">👍</tg-emoji><B>upper</b>'
    )
    plain, entities = parse_html(text)
    assert plain == "bsieunskdcppyatxyqw👍upper"
    types = [e["type"] for e in entities]
    assert types == ["bold", "bold", "italic", "italic", "underline", "underline", "strikethrough",
                     "strikethrough", "strikethrough", "code", "pre", "pre", "text_link", "spoiler", "spoiler",
                     "spoiler", "blockquote", "expandable_blockquote", "custom_emoji", "bold"]  # fmt: skip
    assert entities[11] == {"offset": 11, "length": 2, "type": "pre", "language": "python"}
    assert entities[18] == {"offset": 19, "length": 2, "type": "custom_emoji", "custom_emoji_id": "5368324170671202286"}


def test_entities_use_utf16_offsets_and_numeric_entities_decode():
    plain, entities = parse_html("🚀 <b>up&#33;</b> &#x2192; &quot;done&quot")
    assert plain == '🚀 up! → "done"'
    assert entities == [{"offset": 3, "length": 3, "type": "bold"}]  # the rocket is two UTF-16 units
    with pytest.raises(HtmlParseError, match="Unescaped"):
        parse_html("&nbsp;")  # only &lt; &gt; &amp; &quot; are named entities on Telegram
    assert parse_html("AT&T &nbsp;", strict_entities=False) == ("AT&T &nbsp;", [])  # TDLib's leniency


def test_lenient_ampersands_when_asked():
    with FakeTelegram(strict_html_entities=False) as lenient:
        lenient.add_chat(ALERTS_CHAT_ID)
        status, body = send(lenient, ALERTS_CHAT_ID, "<b>AT&T</b>", parse_mode="HTML")
        assert status == 200 and body["result"]["text"] == "AT&T"


def test_length_limit_counts_the_text_after_entity_parsing(fake, clock):
    at_limit = [
        ("x" * 4096, None),
        ("<b>" + "x" * 4096 + "</b>", "HTML"),  # tags do not count
        ("&lt;" * 4096, "HTML"),  # an entity counts as one character
        ("  " + "é" * 4096 + "\n", None),  # surrounding whitespace is stripped first; code points, not bytes
    ]
    for text, mode in at_limit:
        clock.advance(1)
        status, body = send(fake, ALERTS_CHAT_ID, text, **({"parse_mode": mode} if mode else {}))
        assert status == 200, (text[:20], body)
    assert [len(m.plain_text) for m in fake.delivered()] == [4096] * 4
    clock.advance(1)
    assert send(fake, ALERTS_CHAT_ID, "<b>" + "x" * 4097 + "</b>", parse_mode="HTML")[1] == error(
        400, "Bad Request: message is too long"
    )


def test_reply_to_a_message(fake, clock):
    update = fake.push_message(ADMIN_CHAT_ID, "/status")
    asked = update["message"]["message_id"]
    status, body = send(fake, ADMIN_CHAT_ID, "all good", reply_to_message_id=asked)
    assert status == 200
    assert body["result"]["reply_to_message"]["text"] == "/status"
    assert body["result"]["message_id"] == asked + 1  # one id sequence per chat, both directions
    assert fake.delivered()[0].reply_to_message_id == asked
    clock.advance(1)
    status, body = send(
        fake, ADMIN_CHAT_ID, "gone", reply_parameters={"message_id": 999, "allow_sending_without_reply": True}
    )
    assert status == 200 and "reply_to_message" not in body["result"]


def test_blocked_and_kicked(fake):
    fake.block_chat(ADMIN_CHAT_ID)
    fake.block_chat(ALERTS_CHAT_ID)
    assert send(fake, ADMIN_CHAT_ID, "hi") == (403, error(403, "Forbidden: bot was blocked by the user"))
    assert send(fake, ALERTS_CHAT_ID, "hi") == (403, error(403, "Forbidden: bot was kicked from the supergroup chat"))
    fake.block_chat(ADMIN_CHAT_ID, blocked=False)
    assert send(fake, ADMIN_CHAT_ID, "hi")[0] == 200
    fake.remove_chat(ALERTS_CHAT_ID)
    assert send(fake, ALERTS_CHAT_ID, "hi")[1]["description"] == "Bad Request: chat not found"
    assert len(fake.delivered()) == 1


def test_a_group_upgraded_to_a_supergroup_answers_migrate_to_chat_id(fake):
    fake.add_chat(-4001, "desk", chat_type="group")
    fake.migrate_chat(-4001, -1004001)
    status, body = send(fake, -4001, "hi")
    assert (status, body["description"]) == (400, "Bad Request: group chat was upgraded to a supergroup chat")
    assert body["parameters"] == {"migrate_to_chat_id": -1004001}
    assert send(fake, -1004001, "hi")[0] == 200
    assert fake.chats()[-1004001].type == "supergroup" and len(fake.delivered()) == 1


# ---------------------------------------------------------------------------------------------------- rate limits


def test_per_chat_limit_answers_429_with_retry_after(fake, clock):
    assert send(fake, ALERTS_CHAT_ID, "one")[0] == 200
    limited = error(429, "Too Many Requests: retry after 1", retry_after=1)
    assert send(fake, ALERTS_CHAT_ID, "two") == (429, limited)
    clock.advance(0.5)
    assert send(fake, ALERTS_CHAT_ID, "two") == (429, limited)  # retry_after is whole seconds, at least 1
    assert send(fake, ADMIN_CHAT_ID, "elsewhere")[0] == 200  # the limit is per chat
    clock.advance(0.5)
    assert send(fake, ALERTS_CHAT_ID, "two")[0] == 200
    assert fake.delivered_texts(ALERTS_CHAT_ID) == ["one", "two"]  # a 429 delivers nothing

    fake.set_rate_limits(per_chat_limit=3, per_chat_window_s=60)  # e.g. a group's 20 a minute
    clock.advance(60)
    for second in range(3):
        assert send(fake, ALERTS_CHAT_ID, f"burst {second}")[0] == 200
        clock.advance(10)
    status, body = send(fake, ALERTS_CHAT_ID, "burst 3")
    assert (status, body["parameters"]) == (429, {"retry_after": 30})  # the first of the burst leaves at +60 s
    assert body["description"] == "Too Many Requests: retry after 30"


def test_global_limit(clock):
    with FakeTelegram(clock=clock, global_limit=3, global_window_s=1.0) as fake:
        chats = [-1001, -1002, -1003, -1004]
        for chat in chats:
            fake.add_chat(chat)
        assert [send(fake, chat, "x")[0] for chat in chats] == [200, 200, 200, 429]
        assert send(fake, chats[3], "x")[1]["parameters"] == {"retry_after": 1}
        clock.advance(1)
        assert send(fake, chats[3], "x")[0] == 200
        assert len(fake.delivered()) == 4


def test_rate_limits_can_be_turned_off(fake):
    fake.set_rate_limits(enabled=False)
    assert not fake.rate_limits_enabled
    assert {send(fake, ALERTS_CHAT_ID, f"m{i}")[0] for i in range(40)} == {200}
    assert len(fake.delivered()) == 40


def test_forced_429s(fake, clock):
    fake.set_rate_limits(enabled=False)  # forced ones fire anyway
    fake.force_rate_limit(2, retry_after=7, chat_id=ALERTS_CHAT_ID)
    forced = (429, error(429, "Too Many Requests: retry after 7", retry_after=7))
    assert send(fake, ADMIN_CHAT_ID, "not this chat")[0] == 200
    assert send(fake, ALERTS_CHAT_ID, "a") == forced
    assert send(fake, ALERTS_CHAT_ID, "a") == forced
    assert send(fake, ALERTS_CHAT_ID, "a")[0] == 200
    fake.force_rate_limit(retry_after=3)  # any chat
    assert send(fake, ADMIN_CHAT_ID, "b")[1]["parameters"] == {"retry_after": 3}
    assert send(fake, ADMIN_CHAT_ID, "b")[0] == 200
    assert fake.delivered_texts() == ["not this chat", "a", "b"]
    assert [r.status for r in fake.requests_to("sendMessage")] == [200, 429, 429, 200, 429, 200]


# ---------------------------------------------------------------------------------------------------- outages


def test_outage_http_502(fake):
    with fake.outage("http_502") as outage:
        assert fake.outage_mode == "http_502" and outage.active
        status, page = send(fake, ALERTS_CHAT_ID, "lost")
        assert status == 502 and "<h1>502 Bad Gateway</h1>" in page
        assert call(fake, "getMe")[0] == 502
        assert call(fake, "getMe", token="123456:WRONG")[0] == 502  # the gateway fails before the token is checked
    assert fake.outage_mode is None and not outage.active
    assert fake.delivered() == []
    assert send(fake, ALERTS_CHAT_ID, "back")[0] == 200
    assert [r.outage for r in fake.requests] == ["http_502", "http_502", "http_502", None]


def test_outage_timeout_holds_the_answer_and_delivers_nothing(fake):
    fake.outage("timeout", hold_s=1.0)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        send(fake, ALERTS_CHAT_ID, "slow", timeout=0.2)
    assert time.monotonic() - started < 0.9
    fake.outage("timeout", hold_s=0.1)  # replaces the first; a patient client gets the gateway's 504
    status, page = send(fake, ALERTS_CHAT_ID, "slow")
    assert status == 504 and "Gateway Time-out" in page
    fake.recover()
    assert fake.delivered() == []


def test_outage_drop_closes_without_answer(fake):
    fake.outage("drop")
    with pytest.raises(http.client.RemoteDisconnected):
        send(fake, ALERTS_CHAT_ID, "lost")
    fake.recover()
    assert fake.delivered() == []
    assert fake.requests[0].status is None and fake.requests[0].outage == "drop"


def test_outage_after_deliver_drop_delivers_but_does_not_answer(fake, clock):
    with fake.outage("after_deliver_drop"):
        with pytest.raises(http.client.RemoteDisconnected):
            send(fake, ALERTS_CHAT_ID, "did it arrive?")
        clock.advance(1)
        with pytest.raises(http.client.RemoteDisconnected):
            send(fake, OTHER_CHAT_ID, "unknown chat")  # a rejected request is not delivered either way
    assert fake.delivered_texts() == ["did it arrive?"]  # the client cannot know this
    assert fake.requests_to("sendMessage")[0].status is None


def test_outage_after_deliver_502_delivers_and_answers_a_gateway_error(fake):
    with fake.outage("after_deliver_502"):
        status, page = send(fake, ALERTS_CHAT_ID, "did it arrive?")
    assert status == 502 and "<h1>502 Bad Gateway</h1>" in page
    assert fake.delivered_texts() == ["did it arrive?"]  # the client cannot know this
    assert fake.requests_to("sendMessage")[0].status == 502


def test_outage_refuse_then_recover_on_the_same_port(fake):
    port, base_url = fake.port, fake.base_url
    fake.outage("refuse")
    with pytest.raises(urllib.error.URLError) as caught:
        send(fake, ALERTS_CHAT_ID, "lost")
    assert isinstance(caught.value.reason, ConnectionRefusedError)
    fake.recover()
    assert (fake.port, fake.base_url) == (port, base_url)
    assert send(fake, ALERTS_CHAT_ID, "back")[0] == 200
    assert fake.delivered_texts() == ["back"]
    assert len(fake.requests) == 1  # the refused one never reached the server


def test_refuse_drops_kept_alive_connections(fake):
    connection = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=2)
    connection.request("GET", f"/bot{DEFAULT_TOKEN}/getMe")
    assert connection.getresponse().read()
    fake.outage("refuse")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        connection.request("GET", f"/bot{DEFAULT_TOKEN}/getMe")
        connection.getresponse()
    connection.close()
    fake.recover()
    assert call(fake, "getMe")[0] == 200


def test_timed_outages_end_by_themselves(fake):
    fake.outage_for("refuse", 0.3)
    with pytest.raises(urllib.error.URLError):
        call(fake, "getMe")
    deadline = time.monotonic() + 3
    while fake.outage_mode is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake.outage_mode is None
    assert call(fake, "getMe")[0] == 200

    fake.outage_for("http_502", 0.2)
    assert call(fake, "getMe")[0] == 502
    time.sleep(0.3)
    assert call(fake, "getMe")[0] == 200


def test_outage_limited_to_some_methods(fake):
    fake.start_outage("http_502", methods=["sendMessage"])
    assert call(fake, "getMe")[0] == 200
    assert send(fake, ALERTS_CHAT_ID, "x")[0] == 502
    fake.stop_outage()
    with pytest.raises(ValueError, match="whole port"):
        fake.outage("refuse", methods=["sendMessage"])
    with pytest.raises(ValueError, match="unknown outage mode"):
        fake.outage("flaky")


# ---------------------------------------------------------------------------------------------------- getUpdates


def updates(fake: FakeTelegram, **params: Any) -> list[dict[str, Any]]:
    status, body = call(fake, "getUpdates", params, timeout=5)
    assert status == 200, body
    return body["result"]


def test_get_updates_offset_semantics(fake):
    pushed = [fake.push_message(ADMIN_CHAT_ID, text) for text in ("/status", "/halt main", "/resume main")]
    ids = [u["update_id"] for u in pushed]
    assert ids == [1, 2, 3]
    first = updates(fake)
    assert [u["update_id"] for u in first] == ids
    message = first[1]["message"]
    assert message["text"] == "/halt main"
    assert message["entities"] == [{"type": "bot_command", "offset": 0, "length": 5}]
    assert message["chat"]["id"] == ADMIN_CHAT_ID and message["from"]["id"] == ADMIN_CHAT_ID
    assert message["from"]["username"] == "operator"

    assert [u["update_id"] for u in updates(fake)] == ids  # nothing confirmed yet
    assert [u["update_id"] for u in updates(fake, limit=1)] == [1]
    assert [u["update_id"] for u in updates(fake, offset=2)] == [2, 3]  # confirms 1
    assert [u["update_id"] for u in fake.pending_updates()] == [2, 3]
    assert updates(fake, offset=4) == []  # confirms everything
    assert fake.pending_updates() == []

    for text in ("a", "b", "c"):
        fake.push_message(ALERTS_CHAT_ID, text, from_user_id=555, username="trader")
    assert [u["message"]["text"] for u in updates(fake, offset=-1)] == ["c"]  # and forgets a, b
    assert [u["update_id"] for u in fake.pending_updates()] == [6]
    group_message = fake.pending_updates()[0]["message"]
    assert group_message["from"]["id"] == 555 and group_message["chat"]["type"] == "supergroup"


def test_long_poll_returns_early_when_an_update_arrives(fake):
    threading.Timer(0.15, fake.push_message, args=(ADMIN_CHAT_ID, "/status")).start()
    started = time.monotonic()
    got = updates(fake, timeout=2)
    elapsed = time.monotonic() - started
    assert [u["message"]["text"] for u in got] == ["/status"]
    assert 0.1 <= elapsed < 1.0


def test_long_poll_waits_its_timeout_capped(clock):
    with FakeTelegram(clock=clock, max_poll_timeout_s=0.3) as fake:
        started = time.monotonic()
        assert updates(fake, timeout=0.2) == []
        assert 0.15 <= time.monotonic() - started < 1.0
        started = time.monotonic()
        assert updates(fake, timeout=30) == []  # capped at 0.3 s
        assert time.monotonic() - started < 1.5


def test_a_second_poll_terminates_the_first(fake):
    results: list[tuple[int, Any]] = []
    first = threading.Thread(target=lambda: results.append(call(fake, "getUpdates", {"timeout": 2}, timeout=5)))
    first.start()
    deadline = time.monotonic() + 2
    while not fake.requests_to("getUpdates") and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    assert updates(fake) == []
    first.join(timeout=5)
    assert results == [(409, error(409, "Conflict: terminated by other getUpdates request; make sure that only one "
                                        "bot instance is running"))]  # fmt: skip


def test_allowed_updates_filter_and_callback_queries(fake):
    fake.push_message(ADMIN_CHAT_ID, "/status")
    query_id = fake.push_callback_query(ADMIN_CHAT_ID, "halt:main", message_id=1)
    got = updates(fake, allowed_updates=["callback_query"])
    assert [u["callback_query"]["data"] for u in got] == ["halt:main"]
    assert got[0]["callback_query"]["message"]["text"] == "/status"
    assert [u["update_id"] for u in updates(fake)] == [2]  # the choice sticks until changed
    assert len(updates(fake, allowed_updates=[])) == 2

    status, body = call(fake, "answerCallbackQuery", {"callback_query_id": query_id, "text": "halting"})
    assert (status, body["result"]) == (200, True)
    assert fake.answered_callback_queries == [{"callback_query_id": query_id, "text": "halting"}]
    assert call(fake, "answerCallbackQuery", {"callback_query_id": query_id}) == (400, error(
        400, "Bad Request: query is too old and response timeout expired or query ID is invalid"))  # fmt: skip


def test_webhook_blocks_get_updates(fake):
    assert call(fake, "setWebhook", {"url": "http://insecure.test/hook"}) == (
        400, error(400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"))  # fmt: skip
    assert call(fake, "setWebhook", {"url": "https://bot.test/hook"}, encoding="form")[1] == {
        "ok": True, "result": True, "description": "Webhook was set"}  # fmt: skip
    assert fake.webhook_url == "https://bot.test/hook"
    fake.push_message(ADMIN_CHAT_ID, "/status")
    assert call(fake, "getWebhookInfo")[1]["result"] == {
        "url": "https://bot.test/hook", "has_custom_certificate": False, "pending_update_count": 1}  # fmt: skip
    conflict = error(409, "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to "
                          "delete the webhook first")  # fmt: skip
    assert call(fake, "getUpdates") == (409, conflict)

    assert call(fake, "deleteWebhook")[1] == {"ok": True, "result": True, "description": "Webhook was deleted"}
    assert call(fake, "deleteWebhook")[1]["description"] == "Webhook is already deleted"
    assert fake.webhook_url is None
    assert len(updates(fake)) == 1
    call(fake, "setWebhook", {"url": "https://bot.test/hook"})
    call(fake, "deleteWebhook", {"drop_pending_updates": True})
    assert updates(fake) == []
    assert [r.method for r in fake.requests_to("setWebhook")] == ["setWebhook"] * 3


# ---------------------------------------------------------------------------------------------------- inspection


def test_clear_and_wait_for_delivered(fake):
    send(fake, ALERTS_CHAT_ID, "x")
    fake.push_message(ADMIN_CHAT_ID, "/status")
    fake.force_rate_limit(chat_id=ADMIN_CHAT_ID)
    fake.clear()
    assert (fake.delivered(), fake.requests, fake.pending_updates()) == ([], [], [])
    assert send(fake, ALERTS_CHAT_ID, "y")[0] == 200  # the flood history went too
    assert send(fake, ADMIN_CHAT_ID, "z")[0] == 200  # and the forced 429
    threading.Timer(0.1, send, args=(fake, -1, "late")).start()  # unknown chat: never delivered
    with pytest.raises(AssertionError, match="expected 3 delivered message"):
        fake.wait_for_delivered(3, timeout=0.3)
    assert [m.text for m in fake.wait_for_delivered(1, chat_id=ADMIN_CHAT_ID)] == ["z"]


def test_a_bug_in_the_fake_is_a_500_and_is_recorded():
    with FakeTelegram() as fake:
        fake._routes["getme"] = lambda params: 1 / 0
        status, body = call(fake, "getMe")
        assert status == 500 and body["description"].startswith("Internal Server Error: fake telegram")
        assert len(fake.errors) == 1 and "ZeroDivisionError" in fake.errors[0]
        fake.clear()
        assert len(fake.errors) == 1  # bugs are never cleared away


def test_shared_fixture(fake_telegram):  # noqa: F811 - the fixture imported above
    assert set(fake_telegram.chats()) == {ALERTS_CHAT_ID, ADMIN_CHAT_ID}
    assert fake_telegram.base_url.startswith("http://127.0.0.1:")
    assert fake_telegram.api_url == f"{fake_telegram.base_url}/bot{DEFAULT_TOKEN}"
    assert send(fake_telegram, ALERTS_CHAT_ID, "<i>ready</i>", parse_mode="HTML")[0] == 200
    assert fake_telegram.delivered()[0].plain_text == "ready"
