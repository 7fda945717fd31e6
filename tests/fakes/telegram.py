"""A fake Telegram Bot API server for tests: enough of https://core.telegram.org/bots/api for a notification sender
and a command console.

Pure stdlib: a ``ThreadingHTTPServer`` on 127.0.0.1 in a background thread, with thread-safe in-memory state. Any
HTTP client pointed at :attr:`FakeTelegram.base_url` (instead of ``https://api.telegram.org``) talks to it:

    with FakeTelegram() as fake:
        fake.add_chat(-1001234567890, title="statarb alerts")
        # POST {fake.base_url}/bot{fake.token}/sendMessage  {"chat_id": -1001234567890, "text": "<b>hi</b>",
        #                                                     "parse_mode": "HTML"}
        assert fake.delivered()[0].plain_text == "hi"
        fake.push_message(-1001234567890, "/status")      # then getUpdates returns it

Rules (each method's docstring has the details):
- URL shape ``/bot<token>/<method>``; the method name is case-insensitive (as on Telegram). A token other than
  :attr:`FakeTelegram.token` answers 401 Unauthorized; an unknown method or path 404 Not Found.
- Parameters come from the query string and from a JSON, ``application/x-www-form-urlencoded`` or
  ``multipart/form-data`` body (the body wins on a clash), with GET or POST. Non-string values (``reply_markup``,
  ``allowed_updates``) may be JSON-serialised strings, as Telegram allows.
- Every answer is Telegram's envelope: ``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code": N,
  "description": "...", ["parameters": {...}]}`` with HTTP status N.
- sendMessage validates like Telegram and is rate limited per chat and globally (sliding windows on ``clock``).
- Outages (:meth:`FakeTelegram.outage`) break the API (all of it, or some methods) in one of :data:`OUTAGE_MODES`;
  like a failing gateway they come before everything else, the token check included.
- getUpdates long-polls a queue fed by :meth:`FakeTelegram.push_message` with Telegram's offset semantics.
- Bugs inside the fake are answered 500 and collected in :attr:`FakeTelegram.errors` (keep it empty).

HTML parse mode follows TDLib's parser (which the Bot API server uses): the supported tags are b, strong, i, em, u,
ins, s, strike, del, code, pre, a (href), tg-spoiler, span class="tg-spoiler", blockquote (optional ``expandable``)
and tg-emoji (emoji-id); the named entities &lt; &gt; &amp; &quot; and numeric ones (&#60; &#x3c;), the ``;`` being
optional, are decoded; error texts and UTF-8 byte offsets are TDLib's (start tags are case-insensitive, end tags
must repeat the lower-case name: ``<B>x</b>``, as TDLib compares them). One deliberate difference: TDLib keeps a bare
``&`` that starts no entity as a literal ``&``; the fake rejects it (``strict_html_entities=True``, the default) so
a sender that forgets to escape user text is caught. Pass ``strict_html_entities=False`` for TDLib's leniency.

Message length rule: the text Telegram would show (HTML tags removed, entities decoded, leading and trailing
whitespace stripped) may have at most ``max_message_length`` (4096) characters, counted as Unicode code points (what
Python's ``len`` counts). Markdown and MarkdownV2 are accepted but not parsed: their raw text is what is counted.
"""

from __future__ import annotations

import copy
import email.parser
import email.policy
import itertools
import json
import math
import re
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.fakes.http_server import TrackingHTTPServer, reply_write

__all__ = [
    "ADMIN_CHAT_ID",
    "ALERTS_CHAT_ID",
    "DEFAULT_FROM_USER_ID",
    "DEFAULT_TOKEN",
    "MAX_MESSAGE_LENGTH",
    "OUTAGE_MODES",
    "Chat",
    "DeliveredMessage",
    "FakeTelegram",
    "HtmlParseError",
    "OutageHandle",
    "RecordedRequest",
    "TelegramError",
    "fake_telegram",
    "parse_html",
]

DEFAULT_TOKEN = "123456:TEST-TOKEN-abcdefghijklmnopqrstuvwxyz0123"
MAX_MESSAGE_LENGTH = 4096
OUTAGE_MODES = ("refuse", "http_502", "timeout", "drop", "after_deliver_drop", "after_deliver_502")
ALERTS_CHAT_ID = -1001234567890  # the fixture's supergroup
ADMIN_CHAT_ID = 424242  # the fixture's private chat with an operator
DEFAULT_FROM_USER_ID = ADMIN_CHAT_ID  # the operator who writes to the bot

WEBHOOK_CONFLICT = "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the " \
                   "webhook first"  # fmt: skip
POLL_CONFLICT = "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"
UPDATE_TYPES = ("message", "callback_query")


# --------------------------------------------------------------------------------------------------------------------
# errors and records


class TelegramError(Exception):
    """Raised inside a method handler: answered as ``{"ok": false, "error_code": code, "description": ...}``."""

    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None):
        super().__init__(f"{code} {description}")
        self.code = code
        self.description = description
        self.parameters = parameters

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": False, "error_code": self.code, "description": self.description}
        if self.parameters:
            body["parameters"] = dict(self.parameters)
        return body


def _bad_request(detail: str) -> TelegramError:
    return TelegramError(400, f"Bad Request: {detail}")


class HtmlParseError(ValueError):
    """Telegram's "can't parse entities" reason (the text after that prefix)."""


@dataclass(frozen=True)
class Chat:
    id: int
    type: str  # private / group / supergroup / channel
    title: str | None = None  # groups and channels
    first_name: str | None = None  # private chats
    username: str | None = None

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.type == "private":
            out["first_name"] = self.first_name or self.username or str(self.id)
        else:
            out["title"] = self.title or str(self.id)
        if self.username:
            out["username"] = self.username
        return out


@dataclass(frozen=True)
class DeliveredMessage:
    """A message the fake accepted from the bot (sendMessage answered ok)."""

    chat_id: int
    message_id: int
    text: str  # as sent, markup included
    parse_mode: str | None  # normalised: "HTML", "MarkdownV2", "Markdown" or None
    time: float  # clock() at delivery
    plain_text: str  # what the user sees: tags removed, entities decoded, stripped
    entities: tuple[dict[str, Any], ...] = ()
    reply_to_message_id: int | None = None
    reply_markup: dict[str, Any] | None = None
    disable_web_page_preview: bool = False
    disable_notification: bool = False


@dataclass
class RecordedRequest:
    """One request that reached the server. ``status`` is the HTTP status answered (or to be answered after an outage's
    hold; None while a long poll waits), None when the connection was dropped without an answer (outage "drop" /
    "after_deliver_drop")."""

    http_method: str
    path: str
    method: str  # the Bot API method as written in the URL ('' when the path is not /bot<token>/<method>)
    params: dict[str, Any]
    time: float
    token_ok: bool
    status: int | None = None
    description: str | None = None  # of an error answer
    outage: str | None = None  # the outage mode that hit it


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    delay_s: float = 0.0
    disconnect: bool = False


@dataclass
class _Outage:
    mode: str
    methods: frozenset[str] | None  # lower-case method names; None = all
    hold_s: float
    timer: threading.Timer | None = None

    def applies_to(self, method: str) -> bool:
        return self.methods is None or method.lower() in self.methods


@dataclass
class _ForcedLimit:
    times: int
    retry_after: int
    chat_id: int | None


@dataclass
class _Open:
    tag: str
    argument: str | None
    utf16_start: int
    begin: int  # index of '<' in the source
    language: str | None = None  # of a <pre> holding <code class="language-...">


# --------------------------------------------------------------------------------------------------------------------
# HTML parse mode (a port of TDLib's parse_html rules)

HTML_TAGS = frozenset(
    {"a", "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "code", "pre", "tg-spoiler", "span",
     "tg-emoji", "blockquote"}
)  # fmt: skip
_SIMPLE_ENTITY_TYPES = {
    "b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline", "ins": "underline",
    "s": "strikethrough", "strike": "strikethrough", "del": "strikethrough", "code": "code",
    "tg-spoiler": "spoiler", "span": "spoiler",
}  # fmt: skip
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _decode_html_entity(text: str, pos: int) -> tuple[str | None, int]:
    """The character of the entity at text[pos] == '&' and the position after it, or (None, pos) if there is none."""
    n = len(text)
    end = pos + 1
    if end < n and text[end] == "#":
        end += 1
        hexadecimal = end < n and text[end] == "x"
        if hexadecimal:
            end += 1
        start = end
        digits = "0123456789abcdefABCDEF" if hexadecimal else "0123456789"
        while end < n and text[end] in digits:
            end += 1
        number = text[start:end]
        value = int(number, 16 if hexadecimal else 10) if number and end - pos < 10 else 0
        if value == 0 or value >= 0x10FFFF or 0xD800 <= value <= 0xDFFF:
            return None, pos
        char = chr(value)
    else:
        while end < n and text[end].isascii() and text[end].isalpha():
            end += 1
        named = _NAMED_ENTITIES.get(text[pos + 1 : end])
        if named is None:
            return None, pos
        char = named
    if end < n and text[end] == ";":
        end += 1
    return char, end


def parse_html(text: str, *, strict_entities: bool = True) -> tuple[str, list[dict[str, Any]]]:
    """Telegram's HTML parse mode: (plain text, entities with UTF-16 offsets), before stripping whitespace.

    Raises :class:`HtmlParseError` with TDLib's reason, e.g. ``Unsupported start tag "p" at byte offset 0``.
    """

    def at(pos: int) -> str:
        return f"at byte offset {len(text[:pos].encode('utf-8', 'surrogatepass'))}"

    n = len(text)
    pieces: list[str] = []
    utf16 = 0
    stack: list[_Open] = []
    entities: list[dict[str, Any]] = []
    i = 0
    while i < n:
        char = text[i]
        if char == "&":
            decoded, after = _decode_html_entity(text, i)
            if decoded is not None:
                pieces.append(decoded)
                utf16 += _utf16_len(decoded)
                i = after
                continue
            if strict_entities:
                raise HtmlParseError(f'Unescaped "&" {at(i)} (fake: write &amp;)')
        if char != "<":
            pieces.append(char)
            utf16 += _utf16_len(char)
            i += 1
            continue
        begin = i
        i += 1
        if i < n and text[i] == "/":  # an end tag
            if not stack:
                raise HtmlParseError(f"Unexpected end tag {at(begin)}")
            i += 1
            name_start = i
            while i < n and not text[i].isspace() and text[i] != ">":
                i += 1
            end_name = text[name_start:i]
            while i < n and text[i].isspace():
                i += 1
            if i >= n or text[i] != ">":
                raise HtmlParseError(f"Unclosed end tag {at(begin)}")
            i += 1
            top = stack.pop()
            if end_name and end_name != top.tag:
                raise HtmlParseError(f'Unmatched end tag {at(begin)}, expected "</{top.tag}>", found "</{end_name}>"')
            _close_entity(top, utf16, stack, entities)
            continue

        name_start = i  # a start tag
        while i < n and not text[i].isspace() and text[i] != ">":
            i += 1
        if i >= n:
            raise HtmlParseError(f"Unclosed start tag {at(begin)}")
        tag = text[name_start:i].lower()
        if tag not in HTML_TAGS:
            raise HtmlParseError(f'Unsupported start tag "{tag}" {at(begin)}')
        attributes: dict[str, str | None] = {}
        while True:
            while i < n and text[i].isspace():
                i += 1
            if i >= n:
                raise HtmlParseError(f"Unclosed start tag {at(begin)}")
            if text[i] == ">":
                i += 1
                break
            attr_start = i
            while i < n and not text[i].isspace() and text[i] not in "=>/\"'":
                i += 1
            attr = text[attr_start:i].lower()
            if not attr:
                raise HtmlParseError(f'Empty attribute name in the tag "{tag}" {at(begin)}')
            while i < n and text[i].isspace():
                i += 1
            if i >= n:
                raise HtmlParseError(f"Unclosed start tag {at(begin)}")
            if text[i] != "=":
                attributes.setdefault(attr, None)  # a bare attribute, e.g. <blockquote expandable>
                continue
            i += 1
            while i < n and text[i].isspace():
                i += 1
            if i >= n:
                raise HtmlParseError(f"Unclosed start tag {at(begin)}")
            if text[i] in "\"'":
                quote = text[i]
                i += 1
                value_chars: list[str] = []
                while i < n and text[i] != quote:
                    if text[i] == "&":
                        decoded, after = _decode_html_entity(text, i)
                        if decoded is not None:
                            value_chars.append(decoded)
                            i = after
                            continue
                    value_chars.append(text[i])
                    i += 1
                if i >= n:
                    raise HtmlParseError(f"Unclosed start tag {at(begin)}")
                i += 1
                value = "".join(value_chars)
            else:
                value_start = i
                while i < n and text[i].isascii() and (text[i].isalnum() or text[i] in ".-"):
                    i += 1
                value = text[value_start:i].lower()
                if i >= n:
                    raise HtmlParseError(f"Unclosed start tag {at(begin)}")
                if not text[i].isspace() and text[i] != ">":
                    raise HtmlParseError(f"Unexpected end of name token {at(i)}")
            attributes.setdefault(attr, value)

        argument: str | None = None
        if tag == "a":
            argument = attributes.get("href") or None
        elif tag == "code":
            css = attributes.get("class") or ""
            argument = css.removeprefix("language-") if css.startswith("language-") else None
        elif tag == "span":
            if attributes.get("class") != "tg-spoiler":
                raise HtmlParseError(f'Tag "span" must have class "tg-spoiler" {at(begin)}')
        elif tag == "tg-emoji":
            argument = attributes.get("emoji-id") or ""
        elif tag == "blockquote":
            argument = "expandable" if "expandable" in attributes else None
        stack.append(_Open(tag, argument, utf16, begin))

    if stack:
        raise HtmlParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1].tag}"')
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(pieces), entities


def _close_entity(top: _Open, utf16: int, stack: list[_Open], entities: list[dict[str, Any]]) -> None:
    if top.tag == "code" and top.argument and stack and stack[-1].tag == "pre":
        stack[-1].language = top.argument  # <pre><code class="language-x"> is one pre entity with a language
        return
    length = utf16 - top.utf16_start
    if length <= 0:
        return
    entity: dict[str, Any] = {"offset": top.utf16_start, "length": length}
    if top.tag in _SIMPLE_ENTITY_TYPES:
        entity["type"] = _SIMPLE_ENTITY_TYPES[top.tag]
    elif top.tag == "pre":
        entity["type"] = "pre"
        if top.language:
            entity["language"] = top.language
    elif top.tag == "a":
        if not top.argument:
            return
        entity["type"] = "text_link"
        entity["url"] = top.argument
    elif top.tag == "blockquote":
        entity["type"] = "expandable_blockquote" if top.argument else "blockquote"
    elif top.tag == "tg-emoji":
        if not (top.argument or "").isdigit():
            raise HtmlParseError("Invalid custom emoji identifier specified")
        entity["type"] = "custom_emoji"
        entity["custom_emoji_id"] = top.argument
    entities.append(entity)


def _strip_text(text: str, entities: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Strip leading/trailing whitespace as Telegram does, moving and clipping the entities (UTF-16 units)."""
    stripped = text.strip()
    if stripped == text:
        return text, entities
    cut = _utf16_len(text) - _utf16_len(text.lstrip())
    size = _utf16_len(stripped)
    kept = []
    for entity in entities:
        start = max(0, entity["offset"] - cut)
        end = min(size, entity["offset"] + entity["length"] - cut)
        if end > start:
            kept.append({**entity, "offset": start, "length": end - start})
    return stripped, kept


_BOT_COMMAND = re.compile(r"(?<!\S)/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?")


def _command_entities(text: str) -> list[dict[str, Any]]:
    return [
        {"type": "bot_command", "offset": _utf16_len(text[: m.start()]), "length": _utf16_len(m.group())}
        for m in _BOT_COMMAND.finditer(text)
    ]


# --------------------------------------------------------------------------------------------------------------------
# parameter helpers


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    return str(value).strip().lower() in ("true", "1")


def _as_int(value: Any, name: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise _bad_request(f"invalid {name} specified")
    try:
        return int(str(value).strip())
    except ValueError:
        raise _bad_request(f"invalid {name} specified") from None


def _as_json(value: Any, what: str) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise _bad_request(f"can't parse {what} JSON object") from None
    return value


def _gateway_page(status: int) -> bytes:
    reason = {502: "Bad Gateway", 504: "Gateway Time-out"}.get(status, "Error")
    title = f"{status} {reason}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
        f"<hr><center>nginx/1.18.0</center>\r\n</body>\r\n</html>\r\n"
    ).encode()


def _json_reply(payload: dict[str, Any], status: int = 200) -> _Reply:
    return _Reply(status, json.dumps(payload, separators=(",", ":")).encode())


# --------------------------------------------------------------------------------------------------------------------
# HTTP plumbing


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    disable_nagle_algorithm = True
    server: TrackingHTTPServer

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _params(self, query: str, raw: bytes) -> tuple[dict[str, Any], str | None]:
        params: dict[str, Any] = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        if not raw:
            return params, None
        content_type = self.headers.get("Content-Type") or ""
        kind = content_type.split(";")[0].strip().lower()
        if kind == "application/json":
            try:
                body = json.loads(raw)
            except ValueError:
                return params, "can't parse JSON object"
            if not isinstance(body, dict):
                return params, "JSON object expected"
            params.update(body)
        elif kind == "multipart/form-data":
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                f"Content-Type: {content_type}\r\n\r\n".encode() + raw
            )
            for part in message.iter_parts():  # type: ignore[attr-defined]
                name = part.get_param("name", header="content-disposition")
                if name:
                    payload = part.get_payload(decode=True) or b""
                    params[str(name)] = payload.decode("utf-8", "replace")
        else:  # form-encoded, also when the client names no type
            text = raw.decode("utf-8", "replace")
            params.update({k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()})
        return params, None

    def _handle(self, http_method: str) -> None:
        fake = self.server.fake
        split = urlsplit(self.path)
        params, body_error = self._params(split.query, self._read_body())
        reply = fake._dispatch(http_method, split.path, params, body_error)
        if reply.delay_s:
            fake._stopping.wait(reply.delay_s)
        reply_write(self, reply)


# --------------------------------------------------------------------------------------------------------------------
# the fake


class OutageHandle:
    """Returned by :meth:`FakeTelegram.outage`: the outage is already on; ``with`` (or :meth:`stop`) ends it."""

    def __init__(self, fake: FakeTelegram, outage: _Outage):
        self._fake = fake
        self._outage = outage

    @property
    def mode(self) -> str:
        return self._outage.mode

    @property
    def active(self) -> bool:
        return self._fake._current_outage() is self._outage

    def stop(self) -> None:
        """End this outage (if it is still the current one); a "refuse" outage reopens the same port."""
        self._fake._end_outage(self._outage)

    def __enter__(self) -> OutageHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class FakeTelegram:
    """In-memory Telegram Bot API served over HTTP on 127.0.0.1. Thread-safe: the test thread configures and
    inspects it while the server threads answer the bot."""

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        bot_username: str = "statarb_test_bot",
        bot_name: str = "statarb test bot",
        per_chat_limit: int = 1,
        per_chat_window_s: float = 1.0,
        global_limit: int = 30,
        global_window_s: float = 1.0,
        rate_limits: bool = True,
        max_message_length: int = MAX_MESSAGE_LENGTH,
        max_poll_timeout_s: float = 5.0,
        outage_hold_s: float = 2.0,
        strict_html_entities: bool = True,
        first_update_id: int = 1,
        clock: Callable[[], float] | None = None,
        port: int = 0,
    ):
        self.token = token
        prefix = token.split(":", 1)[0]
        self.bot_id = int(prefix) if prefix.isdigit() else 1
        self.bot_username = bot_username
        self.bot_name = bot_name
        self.max_message_length = max_message_length
        self.max_poll_timeout_s = max_poll_timeout_s
        self.outage_hold_s = outage_hold_s
        self.strict_html_entities = strict_html_entities
        self._clock = clock or time.time
        self._port = port

        self._lock = threading.RLock()
        self._updates_cond = threading.Condition(self._lock)
        self._life_lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: TrackingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._running = False
        self.base_url = ""

        self._per_chat_limit = per_chat_limit
        self._per_chat_window_s = per_chat_window_s
        self._global_limit = global_limit
        self._global_window_s = global_window_s
        self._rate_limits = rate_limits

        self._chats: dict[int, Chat] = {}
        self._blocked: set[int] = set()
        self._migrated: dict[int, int] = {}  # a group upgraded to a supergroup -> the supergroup's id
        self._message_ids: dict[int, itertools.count] = {}
        self._messages: dict[tuple[int, int], dict[str, Any]] = {}  # every message, for reply_to lookups
        self._delivered: list[DeliveredMessage] = []
        self._chat_sends: dict[int, deque[float]] = {}
        self._global_sends: deque[float] = deque()
        self._forced: list[_ForcedLimit] = []
        self._outage: _Outage | None = None
        self._updates: list[dict[str, Any]] = []
        self._next_update_id = first_update_id
        self._allowed_updates: list[str] | None = None
        self._poll_generation = 0
        self._webhook_url: str | None = None
        self._callback_queries: dict[str, dict[str, Any]] = {}
        self._answered_callbacks: list[dict[str, Any]] = []
        self._callback_seq = itertools.count(1)
        self._requests: list[RecordedRequest] = []
        self._errors: list[str] = []

        self._routes: dict[str, Callable[[dict[str, Any]], Any]] = {
            "getme": self._h_get_me,
            "getchat": self._h_get_chat,
            "sendmessage": self._h_send_message,
            "getupdates": self._h_get_updates,
            "setwebhook": self._h_set_webhook,
            "deletewebhook": self._h_delete_webhook,
            "getwebhookinfo": self._h_get_webhook_info,
            "answercallbackquery": self._h_answer_callback_query,
        }

    # ---------------------------------------------------------------------------------------------------- lifecycle

    def start(self) -> FakeTelegram:
        """Listen on 127.0.0.1 (the constructor's port, 0 = any free one; a restart reuses the same port)."""
        with self._life_lock:
            if self._running:
                return self
            self._stopping.clear()
            self._open_listener(self._port)
            self._running = True
            return self

    def stop(self) -> None:
        """End any outage, drop open connections, wake held answers and long polls, close the port."""
        with self._life_lock:
            if not self._running:
                return
            self._running = False
            self._stopping.set()
            with self._lock:
                outage, self._outage = self._outage, None
                self._updates_cond.notify_all()
            if outage is not None and outage.timer is not None:
                outage.timer.cancel()
            self._close_listener()

    def __enter__(self) -> FakeTelegram:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def api_url(self) -> str:
        """``{base_url}/bot{token}``: append ``/sendMessage`` etc."""
        return f"{self.base_url}/bot{self.token}"

    def url(self, method: str, token: str | None = None) -> str:
        return f"{self.base_url}/bot{self.token if token is None else token}/{method}"

    def now(self) -> float:
        return float(self._clock())

    def _open_listener(self, port: int) -> None:
        server = TrackingHTTPServer(("127.0.0.1", port), _Handler, self)
        self._port = server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self._port}"
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"fake-telegram-{self._port}",
            daemon=True,
        )  # fmt: skip
        thread.start()
        self._server, self._thread = server, thread

    def _close_listener(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()  # the listening socket: new connections are refused from here on
        server.drop_connections()
        if thread is not None:
            thread.join(timeout=5)

    # ---------------------------------------------------------------------------------------------------- set-up

    def add_chat(
        self,
        chat_id: int,
        title: str | None = None,
        *,
        chat_type: str | None = None,
        username: str | None = None,
    ) -> Chat:
        """Make a chat known (the bot may send to it). ``chat_type`` defaults from the id as on Telegram: -100... is a
        supergroup, other negative ids a group, positive ids a private chat (``title`` is then its first name)."""
        chat_id = int(chat_id)
        if chat_type is None:
            chat_type = "supergroup" if str(chat_id).startswith("-100") else "group" if chat_id < 0 else "private"
        if chat_type not in ("private", "group", "supergroup", "channel"):
            raise ValueError(f"unknown chat type {chat_type!r}")
        if chat_type == "private":
            chat = Chat(chat_id, chat_type, first_name=title, username=username)
        else:
            chat = Chat(chat_id, chat_type, title=title, username=username)
        with self._lock:
            self._chats[chat_id] = chat
            self._message_ids.setdefault(chat_id, itertools.count(1))
        return chat

    def remove_chat(self, chat_id: int) -> None:
        """Forget a chat (deleted, or the bot was removed): sendMessage answers "chat not found" again."""
        with self._lock:
            self._chats.pop(int(chat_id), None)

    def block_chat(self, chat_id: int, blocked: bool = True) -> None:
        """The user blocked the bot (private chat) or kicked it (group): sendMessage answers 403 Forbidden."""
        with self._lock:
            if blocked:
                self._blocked.add(int(chat_id))
            else:
                self._blocked.discard(int(chat_id))

    def migrate_chat(self, chat_id: int, new_chat_id: int, title: str | None = None) -> Chat:
        """The group ``chat_id`` was upgraded to the supergroup ``new_chat_id``: sendMessage to the old id answers
        400 "group chat was upgraded to a supergroup chat" with ``parameters.migrate_to_chat_id``, as on Telegram;
        the supergroup is a known chat from now on."""
        with self._lock:
            old = self._chats.get(int(chat_id))
            self._migrated[int(chat_id)] = int(new_chat_id)
        return self.add_chat(int(new_chat_id), title or (old.title if old is not None else None),
                             chat_type="supergroup")

    def chats(self) -> dict[int, Chat]:
        with self._lock:
            return dict(self._chats)

    # ---------------------------------------------------------------------------------------------------- rate limits

    def set_rate_limits(
        self,
        *,
        enabled: bool | None = None,
        per_chat_limit: int | None = None,
        per_chat_window_s: float | None = None,
        global_limit: int | None = None,
        global_window_s: float | None = None,
    ) -> None:
        """Change the flood limits: at most ``per_chat_limit`` deliveries to one chat within any
        ``per_chat_window_s`` and ``global_limit`` to all chats within ``global_window_s`` (sliding windows on the
        clock); arguments left None keep their value. ``enabled=False`` turns both off (forced 429s still fire)."""
        with self._lock:
            if enabled is not None:
                self._rate_limits = enabled
            if per_chat_limit is not None:
                self._per_chat_limit = per_chat_limit
            if per_chat_window_s is not None:
                self._per_chat_window_s = per_chat_window_s
            if global_limit is not None:
                self._global_limit = global_limit
            if global_window_s is not None:
                self._global_window_s = global_window_s

    @property
    def rate_limits_enabled(self) -> bool:
        with self._lock:
            return self._rate_limits

    def force_rate_limit(self, times: int = 1, *, retry_after: int = 5, chat_id: int | None = None) -> None:
        """The next ``times`` sendMessage calls (to ``chat_id`` only, if given) to a known chat answer 429 with this
        ``retry_after`` and deliver nothing, whatever the real limits say."""
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._forced.append(_ForcedLimit(times, int(retry_after), None if chat_id is None else int(chat_id)))

    # ---------------------------------------------------------------------------------------------------- outages

    def outage(self, mode: str, *, methods: Iterable[str] | None = None, hold_s: float | None = None) -> OutageHandle:
        """Start an outage now; it lasts until :meth:`recover` (or the handle's ``stop`` / the end of its ``with``).

        Modes (:data:`OUTAGE_MODES`), for every method or only ``methods`` (not with "refuse"):
        - "refuse": the listening socket is closed (connection refused) and open connections are dropped; recovery
          listens again on the SAME port;
        - "http_502": HTTP 502 with nginx's HTML page, nothing delivered;
        - "timeout": the answer is held ``hold_s`` (default ``outage_hold_s``), then HTTP 504 with nginx's page;
          nothing delivered. Use a hold longer than the client's timeout;
        - "drop": the connection is closed without an answer, nothing delivered;
        - "after_deliver_drop": the request is carried out (a message IS delivered) and then the connection is closed
          without an answer, so the client cannot know it was;
        - "after_deliver_502": the request is carried out (a message IS delivered) and answered HTTP 502 with nginx's
          page, as a gateway that lost the server's answer does.
        A new outage replaces the current one.
        """
        return self.start_outage(mode, methods=methods, hold_s=hold_s)

    def start_outage(
        self, mode: str, *, methods: Iterable[str] | None = None, hold_s: float | None = None
    ) -> OutageHandle:
        """Same as :meth:`outage`."""
        if mode not in OUTAGE_MODES:
            raise ValueError(f"unknown outage mode {mode!r}; use one of {OUTAGE_MODES}")
        if mode == "refuse" and methods is not None:
            raise ValueError('a "refuse" outage closes the whole port: it cannot be limited to some methods')
        selected = frozenset(m.lower() for m in methods) if methods is not None else None
        outage = _Outage(mode, selected, self.outage_hold_s if hold_s is None else hold_s)
        with self._life_lock:
            self._end_outage_locked()
            with self._lock:
                self._outage = outage
                self._updates_cond.notify_all()
            if mode == "refuse" and self._running:
                self._close_listener()
        return OutageHandle(self, outage)

    def outage_for(
        self, mode: str, seconds: float, *, methods: Iterable[str] | None = None, hold_s: float | None = None
    ) -> OutageHandle:
        """An outage that ends by itself after ``seconds`` (real time), as :meth:`recover` would end it."""
        handle = self.start_outage(mode, methods=methods, hold_s=hold_s)
        timer = threading.Timer(seconds, self._end_outage, args=(handle._outage,))
        timer.daemon = True
        with self._life_lock:
            if self._current_outage() is not handle._outage:
                return handle
            handle._outage.timer = timer
            timer.start()
        return handle

    def recover(self) -> None:
        """End the current outage, if any; after "refuse" the server listens again on the same port."""
        with self._life_lock:
            self._end_outage_locked()

    stop_outage = recover

    @property
    def outage_mode(self) -> str | None:
        outage = self._current_outage()
        return outage.mode if outage is not None else None

    def _current_outage(self) -> _Outage | None:
        with self._lock:
            return self._outage

    def _end_outage(self, outage: _Outage) -> None:
        with self._life_lock:
            if self._current_outage() is outage:
                self._end_outage_locked()

    def _end_outage_locked(self) -> None:
        with self._lock:
            outage, self._outage = self._outage, None
        if outage is None:
            return
        if outage.timer is not None:
            outage.timer.cancel()
        if outage.mode == "refuse" and self._running and self._server is None:
            self._open_listener(self._port)

    # ---------------------------------------------------------------------------------------------------- incoming

    def push_message(
        self,
        chat_id: int,
        text: str,
        *,
        from_user_id: int | None = None,
        username: str | None = "operator",
        first_name: str | None = None,
        reply_to_message_id: int | None = None,
        date: int | None = None,
    ) -> dict[str, Any]:
        """Queue an incoming message update (someone wrote ``text`` in the chat) and wake long polls; returns a copy
        of the update. The chat becomes known if it was not (a user who writes to the bot opens the chat). The
        sender defaults to the chat's user in a private chat, else to user :data:`DEFAULT_FROM_USER_ID`. Commands
        ("/status", "/halt main") get bot_command entities as on Telegram."""
        with self._lock:
            chat = self._ensure_chat(chat_id, first_name or username)
            user_id = from_user_id if from_user_id is not None else (chat.id if chat.id > 0 else DEFAULT_FROM_USER_ID)
            sender: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name or username or "User"}
            if username:
                sender["username"] = username
            message: dict[str, Any] = {
                "message_id": next(self._message_ids[chat.id]),
                "from": sender,
                "chat": chat.wire(),
                "date": int(date if date is not None else self.now()),
                "text": text,
            }
            entities = _command_entities(text)
            if entities:
                message["entities"] = entities
            if reply_to_message_id is not None:
                message["reply_to_message"] = self._reply_target(chat, int(reply_to_message_id))
            self._messages[(chat.id, message["message_id"])] = message
            return self._enqueue("message", message)

    def push_callback_query(
        self,
        chat_id: int,
        data: str,
        *,
        message_id: int | None = None,
        from_user_id: int | None = None,
        username: str | None = "operator",
    ) -> str:
        """Queue a callback_query update (an inline button under ``message_id`` was pressed); returns its id, which
        answerCallbackQuery then accepts once."""
        with self._lock:
            chat = self._ensure_chat(chat_id, username)
            user_id = from_user_id if from_user_id is not None else (chat.id if chat.id > 0 else DEFAULT_FROM_USER_ID)
            sender: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": username or "User"}
            if username:
                sender["username"] = username
            query_id = f"{self.bot_id}{next(self._callback_seq):08d}"
            query: dict[str, Any] = {"id": query_id, "from": sender, "chat_instance": str(abs(chat.id)), "data": data}
            if message_id is not None:
                query["message"] = self._reply_target(chat, int(message_id))
            self._callback_queries[query_id] = query
            self._enqueue("callback_query", query)
            return query_id

    def _ensure_chat(self, chat_id: int, name: str | None) -> Chat:
        chat = self._chats.get(int(chat_id))
        return chat if chat is not None else self.add_chat(int(chat_id), name)

    def _reply_target(self, chat: Chat, message_id: int) -> dict[str, Any]:
        found = self._messages.get((chat.id, message_id))
        if found is not None:
            return {k: v for k, v in copy.deepcopy(found).items() if k != "reply_to_message"}
        return {"message_id": message_id, "chat": chat.wire(), "date": int(self.now())}

    def _enqueue(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        update = {"update_id": self._next_update_id, kind: payload}
        self._next_update_id += 1
        self._updates.append(update)
        self._updates_cond.notify_all()
        return copy.deepcopy(update)

    # ---------------------------------------------------------------------------------------------------- inspection

    def delivered(self, chat_id: int | None = None) -> list[DeliveredMessage]:
        """Messages sendMessage accepted, in delivery order (all chats, or one)."""
        with self._lock:
            return [m for m in self._delivered if chat_id is None or m.chat_id == int(chat_id)]

    def delivered_texts(self, chat_id: int | None = None) -> list[str]:
        return [m.text for m in self.delivered(chat_id)]

    def wait_for_delivered(
        self, count: int, *, chat_id: int | None = None, timeout: float = 2.0
    ) -> list[DeliveredMessage]:
        """Wait (real time) until at least ``count`` messages were delivered (to ``chat_id``); returns them all.
        Raises AssertionError on timeout, naming how many arrived."""
        deadline = time.monotonic() + timeout
        with self._updates_cond:
            while True:
                found = self.delivered(chat_id)
                remaining = deadline - time.monotonic()
                if len(found) >= count:
                    return found
                if remaining <= 0:
                    raise AssertionError(f"expected {count} delivered message(s), got {len(found)}: {found!r}")
                self._updates_cond.wait(remaining)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request that reached the server, in order (copies)."""
        with self._lock:
            return [copy.deepcopy(r) for r in self._requests]

    def requests_to(self, method: str) -> list[RecordedRequest]:
        """Requests to one Bot API method (case-insensitive), in order."""
        return [r for r in self.requests if r.method.lower() == method.lower()]

    @property
    def errors(self) -> list[str]:
        """Tracebacks of exceptions raised inside the fake (answered 500): bugs of the fake; should stay empty."""
        with self._lock:
            return list(self._errors)

    def pending_updates(self) -> list[dict[str, Any]]:
        """Updates not yet confirmed by a getUpdates offset (copies)."""
        with self._lock:
            return copy.deepcopy(self._updates)

    @property
    def webhook_url(self) -> str | None:
        with self._lock:
            return self._webhook_url

    @property
    def answered_callback_queries(self) -> list[dict[str, Any]]:
        """The parameters of every accepted answerCallbackQuery, in order."""
        with self._lock:
            return copy.deepcopy(self._answered_callbacks)

    def clear(self) -> None:
        """Forget delivered messages, the request log, queued updates, the rate-limit history, forced 429s and the
        webhook. Chats, settings, the outage and :attr:`errors` stay (errors are bugs and must be seen)."""
        with self._lock:
            self._delivered.clear()
            self._requests.clear()
            self._updates.clear()
            self._chat_sends.clear()
            self._global_sends.clear()
            self._forced.clear()
            self._webhook_url = None
            self._updates_cond.notify_all()

    # ---------------------------------------------------------------------------------------------------- dispatch

    _PATH = re.compile(r"/bot([^/]*)/([A-Za-z0-9_]+)/?")

    def _dispatch(self, http_method: str, path: str, params: dict[str, Any], body_error: str | None) -> _Reply:
        match = self._PATH.fullmatch(path)
        with self._lock:
            record = RecordedRequest(
                http_method=http_method, path=path,
                method=match.group(2) if match else "", params=dict(params), time=self.now(),
                token_ok=bool(match) and match.group(1) == self.token,
            )  # fmt: skip
            self._requests.append(record)
        reply = self._answer(record, body_error)
        with self._lock:
            if reply.disconnect:
                record.status = None
            else:
                record.status = reply.status
                if reply.status != 200 and reply.content_type == "application/json":
                    record.description = json.loads(reply.body).get("description")
        return reply

    def _answer(self, record: RecordedRequest, body_error: str | None) -> _Reply:
        with self._lock:  # an outage is in front of everything, as a failing gateway would be
            outage = self._outage if self._outage is not None and self._outage.applies_to(record.method) else None
            if outage is not None:
                record.outage = outage.mode
        if outage is not None and outage.mode == "http_502":
            return _Reply(502, _gateway_page(502), content_type="text/html")
        if outage is not None and outage.mode == "timeout":
            return _Reply(504, _gateway_page(504), content_type="text/html", delay_s=outage.hold_s)
        if outage is not None and outage.mode in ("drop", "refuse"):  # "refuse": a request that slipped in
            return _Reply(0, b"", disconnect=True)
        route = self._routes.get(record.method.lower())
        if not record.method:
            reply = _json_reply(TelegramError(404, "Not Found").payload(), 404)
        elif not record.token_ok:
            reply = _json_reply(TelegramError(401, "Unauthorized").payload(), 401)
        elif route is None:
            reply = _json_reply(TelegramError(404, "Not Found").payload(), 404)
        elif body_error is not None:
            reply = _json_reply(_bad_request(body_error).payload(), 400)
        else:
            try:
                with self._lock:
                    result = route(record.params)
                payload: dict[str, Any] = {"ok": True, "result": result}
                if isinstance(result, _WithDescription):
                    payload = {"ok": True, "result": result.result, "description": result.description}
                reply = _json_reply(payload)
            except TelegramError as exc:
                reply = _json_reply(exc.payload(), exc.code)
            except Exception as exc:  # noqa: BLE001 - a bug in the fake must reach the test as a 500, not hang it
                with self._lock:
                    self._errors.append(traceback.format_exc())
                error = TelegramError(500, f"Internal Server Error: fake telegram: {exc!r}")
                reply = _json_reply(error.payload(), 500)
        if outage is not None and outage.mode == "after_deliver_drop":
            reply.disconnect = True
        if outage is not None and outage.mode == "after_deliver_502":
            reply = _Reply(502, _gateway_page(502), content_type="text/html")
        return reply

    # ---------------------------------------------------------------------------------------------------- methods

    def _bot_user(self) -> dict[str, Any]:
        return {"id": self.bot_id, "is_bot": True, "first_name": self.bot_name, "username": self.bot_username}

    def _h_get_me(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            **self._bot_user(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    def _resolve_chat(self, params: Mapping[str, Any]) -> Chat:
        raw = params.get("chat_id")
        if raw is None or str(raw).strip() == "":
            raise _bad_request("chat_id is empty")
        text = str(raw).strip()
        if text.startswith("@"):
            for chat in self._chats.values():
                if chat.username and chat.username.lower() == text[1:].lower():
                    return chat
            raise _bad_request("chat not found")
        try:
            chat_id = int(text)
        except ValueError:
            raise _bad_request("chat not found") from None
        chat = self._chats.get(chat_id)
        if chat is None:
            raise _bad_request("chat not found")
        return chat

    def _h_get_chat(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._resolve_chat(params).wire()

    def _h_send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        """Checks, in order: chat (400 chat_id is empty / chat not found), forced 429, text (400 message text is
        empty), parse_mode (400 unsupported parse_mode), entities (400 can't parse entities: ...), length (400 message
        is too long), reply_markup, reply target (400 message to be replied not found, unless
        allow_sending_without_reply), blocked (403), flood limits (429). A chat upgraded to a supergroup
        (:meth:`migrate_chat`) answers 400 with ``migrate_to_chat_id`` right after the chat is found. Only a message
        passing all is delivered."""
        chat = self._resolve_chat(params)
        if chat.id in self._migrated:
            raise TelegramError(400, "Bad Request: group chat was upgraded to a supergroup chat",
                                {"migrate_to_chat_id": self._migrated[chat.id]})
        self._check_forced_limit(chat.id)
        raw_text = params.get("text")
        text = "" if raw_text is None else str(raw_text)
        if not text.strip():
            raise _bad_request("message text is empty")
        parse_mode = self._parse_mode(params.get("parse_mode"))
        entities: list[dict[str, Any]] = []
        if parse_mode == "HTML":
            try:
                plain, entities = parse_html(text, strict_entities=self.strict_html_entities)
            except HtmlParseError as exc:
                raise _bad_request(f"can't parse entities: {exc}") from None
            plain, entities = _strip_text(plain, entities)
            if not plain:
                raise _bad_request("text must be non-empty")
        else:
            plain = text.strip()
        if len(plain) > self.max_message_length:
            raise _bad_request("message is too long")
        markup = _as_json(params.get("reply_markup"), "reply keyboard markup")
        if markup is not None and not isinstance(markup, dict):
            raise _bad_request("can't parse reply keyboard markup JSON object")
        reply_to = _as_int(params.get("reply_to_message_id"), "reply_to_message_id")
        reply_parameters = _as_json(params.get("reply_parameters"), "reply parameters")
        allow_without = _as_bool(params.get("allow_sending_without_reply"))
        if reply_to is None and isinstance(reply_parameters, dict):
            reply_to = _as_int(reply_parameters.get("message_id"), "reply message identifier")
            allow_without = allow_without or _as_bool(reply_parameters.get("allow_sending_without_reply"))
        if reply_to is not None and (chat.id, reply_to) not in self._messages:
            if not allow_without:
                raise _bad_request("message to be replied not found")
            reply_to = None
        if chat.id in self._blocked:
            kicked = {"group": "group chat", "supergroup": "supergroup chat", "channel": "channel chat"}
            reason = "bot was blocked by the user" if chat.type == "private" else f"bot was kicked from the " \
                     f"{kicked[chat.type]}"  # fmt: skip
            raise TelegramError(403, f"Forbidden: {reason}")
        now = self.now()
        self._check_flood(chat.id, now)

        link_preview = _as_json(params.get("link_preview_options"), "link preview options")
        no_preview = _as_bool(params.get("disable_web_page_preview")) or (
            isinstance(link_preview, dict) and _as_bool(link_preview.get("is_disabled"))
        )
        message: dict[str, Any] = {
            "message_id": next(self._message_ids[chat.id]),
            "from": self._bot_user(),
            "chat": chat.wire(),
            "date": int(now),
            "text": plain,
        }
        if entities:
            message["entities"] = entities
        if reply_to is not None:
            message["reply_to_message"] = self._reply_target(chat, reply_to)
        if markup is not None and "inline_keyboard" in markup:
            message["reply_markup"] = markup
        if no_preview:
            message["link_preview_options"] = {"is_disabled": True}
        self._messages[(chat.id, message["message_id"])] = message
        self._chat_sends.setdefault(chat.id, deque()).append(now)
        self._global_sends.append(now)
        self._delivered.append(
            DeliveredMessage(
                chat_id=chat.id, message_id=message["message_id"], text=text, parse_mode=parse_mode, time=now,
                plain_text=plain, entities=tuple(copy.deepcopy(entities)), reply_to_message_id=reply_to,
                reply_markup=copy.deepcopy(markup), disable_web_page_preview=no_preview,
                disable_notification=_as_bool(params.get("disable_notification")),
            )
        )  # fmt: skip
        self._updates_cond.notify_all()  # wakes wait_for_delivered
        return copy.deepcopy(message)

    @staticmethod
    def _parse_mode(value: Any) -> str | None:
        if value is None or str(value) == "":
            return None
        mode = {"html": "HTML", "markdown": "Markdown", "markdownv2": "MarkdownV2"}.get(str(value).lower())
        if mode is None:
            raise _bad_request("unsupported parse_mode")
        return mode

    def _check_forced_limit(self, chat_id: int) -> None:
        for forced in self._forced:
            if forced.chat_id is not None and forced.chat_id != chat_id:
                continue
            forced.times -= 1
            if forced.times <= 0:
                self._forced.remove(forced)
            raise self._too_many(forced.retry_after)

    def _check_flood(self, chat_id: int, now: float) -> None:
        sends = self._chat_sends.setdefault(chat_id, deque())
        window = max(self._per_chat_window_s, self._global_window_s)
        for times in (sends, self._global_sends):  # keep the history short even with limits off
            while times and times[0] <= now - window:
                times.popleft()
        if not self._rate_limits:
            return
        waits = []
        for times, limit, span in ((sends, self._per_chat_limit, self._per_chat_window_s),
                                   (self._global_sends, self._global_limit, self._global_window_s)):  # fmt: skip
            recent = [t for t in times if t > now - span]
            if len(recent) >= limit:
                waits.append(recent[len(recent) - limit] + span - now)  # when the oldest counted one leaves
        if waits:
            raise self._too_many(max(1, math.ceil(max(waits))))

    @staticmethod
    def _too_many(retry_after: int) -> TelegramError:
        return TelegramError(429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after})

    def _h_get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Telegram's semantics: offset > 0 confirms (forgets) every update with a smaller id; offset < 0 keeps only
        the last -offset updates; limit 1..100 (default 100); timeout in seconds (capped at ``max_poll_timeout_s``)
        waits for the first update and returns as soon as there is one. allowed_updates, once given, sticks ([] means
        all). A newer getUpdates ends a waiting one with 409 (terminated by other getUpdates request)."""
        if self._webhook_url is not None:
            raise TelegramError(409, WEBHOOK_CONFLICT)
        offset = _as_int(params.get("offset"), "offset") or 0
        limit = _as_int(params.get("limit"), "limit")
        limit = 100 if limit is None else min(100, max(1, limit))
        timeout = params.get("timeout")
        try:
            wait_s = float(timeout) if timeout not in (None, "") else 0.0
        except (TypeError, ValueError):
            raise _bad_request("invalid timeout specified") from None
        wait_s = min(max(0.0, wait_s), self.max_poll_timeout_s)
        allowed = _as_json(params.get("allowed_updates"), "allowed updates")
        if allowed is not None:
            if not isinstance(allowed, list):
                raise _bad_request("can't parse allowed updates JSON object")
            self._allowed_updates = [str(kind) for kind in allowed] or None
        if offset > 0:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        elif offset < 0:
            self._updates = self._updates[offset:]
        self._poll_generation += 1
        generation = self._poll_generation
        self._updates_cond.notify_all()  # an older poll still waiting ends with 409
        deadline = time.monotonic() + wait_s
        while True:
            ready = [u for u in self._updates if self._allowed(u)]
            if ready:
                return copy.deepcopy(ready[:limit])
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stopping.is_set():
                return []
            self._updates_cond.wait(remaining)
            if self._poll_generation != generation:
                raise TelegramError(409, POLL_CONFLICT)
            if self._webhook_url is not None:
                raise TelegramError(409, WEBHOOK_CONFLICT)
            if self._outage is not None and self._outage.mode == "refuse":
                return []  # the connection is gone anyway

    def _allowed(self, update: dict[str, Any]) -> bool:
        if self._allowed_updates is None:
            return True
        return any(kind in update for kind in self._allowed_updates)

    def _h_set_webhook(self, params: dict[str, Any]) -> _WithDescription:
        url = str(params.get("url") or "").strip()
        if _as_bool(params.get("drop_pending_updates")):
            self._updates.clear()
        if not url:
            return self._delete_webhook()
        if not url.lower().startswith("https://"):
            raise _bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        already = self._webhook_url == url
        self._webhook_url = url
        self._updates_cond.notify_all()  # a waiting getUpdates now ends with 409
        return _WithDescription(True, "Webhook is already set" if already else "Webhook was set")

    def _h_delete_webhook(self, params: dict[str, Any]) -> _WithDescription:
        if _as_bool(params.get("drop_pending_updates")):
            self._updates.clear()
        return self._delete_webhook()

    def _delete_webhook(self) -> _WithDescription:
        had = self._webhook_url is not None
        self._webhook_url = None
        return _WithDescription(True, "Webhook was deleted" if had else "Webhook is already deleted")

    def _h_get_webhook_info(self, params: dict[str, Any]) -> dict[str, Any]:
        info: dict[str, Any] = {
            "url": self._webhook_url or "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }
        if self._allowed_updates is not None:
            info["allowed_updates"] = list(self._allowed_updates)
        return info

    def _h_answer_callback_query(self, params: dict[str, Any]) -> bool:
        query_id = str(params.get("callback_query_id") or "")
        if self._callback_queries.pop(query_id, None) is None:
            raise _bad_request("query is too old and response timeout expired or query ID is invalid")
        self._answered_callbacks.append(dict(params))
        return True


@dataclass
class _WithDescription:
    """A successful result that Telegram answers with a "description" too (setWebhook, deleteWebhook)."""

    result: Any
    description: str


# --------------------------------------------------------------------------------------------------------------------
# pytest fixture


@pytest.fixture
def fake_telegram() -> Iterator[FakeTelegram]:
    """A started :class:`FakeTelegram` knowing two chats, :data:`ALERTS_CHAT_ID` (a supergroup) and
    :data:`ADMIN_CHAT_ID` (a private chat); fails the test if the fake hit a bug of its own.

    To use it elsewhere, import it in a conftest.py: ``from tests.fakes.telegram import fake_telegram  # noqa: F401``.
    """
    with FakeTelegram() as fake:
        fake.add_chat(ALERTS_CHAT_ID, "statarb alerts")
        fake.add_chat(ADMIN_CHAT_ID, "Operator", username="statarb_operator")
        yield fake
    assert fake.errors == [], "the fake Telegram server hit a bug of its own:\n" + "\n".join(fake.errors)
