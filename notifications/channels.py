"""The channels a delivery goes out on. Each ``send`` answers an :class:`Outcome`: sent, retry (a temporary fault:
outage, timeout, 5xx, 429) or give up (a definite refusal: 400, 403, a refused recipient).

Telegram is the Bot API's sendMessage over HTTP (httpx), HTML parse mode with every text escaped. A message longer
than Telegram's 4,096 characters goes out in parts marked (1/3), (2/3)...; ``parts_sent`` lets a retry go on from
the part that failed instead of sending the first ones again; a message sent again after a try that may have arrived
is marked so in its header (``Message.repeat``). A group upgraded to a supergroup (400 with
migrate_to_chat_id) gets its messages at the supergroup's id, and the error log asks for the setting to be fixed. The
bot token is part of the URL: nothing here ever stores or logs an error text that has not passed
``core.secrets.redact``.
"""

from __future__ import annotations

import html
import logging
import smtplib
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace

import httpx
from django.conf import settings
from django.core.mail import send_mail

from core.secrets import redact

logger = logging.getLogger("statarb.notifications")

TELEGRAM_MAX_CHARS = 4096
PART_CHARS = 3900  # a part's own text; the header and the (i/n) marker fit in what is left of 4,096
TELEGRAM_TIMEOUT_S = 10.0
SEVERITY_MARK = {"info": "🔹", "warning": "⚠️", "critical": "🚨"}
LOG_LEVEL = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}


@dataclass(frozen=True)
class Message:
    topic: str
    severity: str
    text: str
    # An earlier try may have arrived (it timed out after the request went out, or its sender died before recording
    # the answer): the reader is told, so that a repeated "trade opened" is not read as a second trade.
    repeat: bool = False


REPEAT_MARK = " (sent again: the last try may have arrived)"
# Telegram's 400 descriptions that say the chat is gone or closed to the bot (403 always does); any other 400 is about
# the one message (too long, unparsable) and later messages may go through.
DESTINATION_GONE = ("chat not found", "peer_id_invalid", "not enough rights", "have no rights", "not a member",
                    "kicked", "deactivated", "need administrator rights")


@dataclass(frozen=True)
class Outcome:
    kind: str  # "sent", "retry" or "give_up"
    reason: str = ""
    retry_after_s: float | None = None  # the server's own wait (Telegram's 429 retry_after)
    parts_sent: int = 0
    maybe_delivered: bool = False  # a retry whose request went out unanswered: it may have arrived
    migrate_to: str = ""  # Telegram's migrate_to_chat_id: the group became this supergroup
    # A give-up that says the destination itself is gone (a deleted chat, a blocked or removed bot, a refused
    # recipient), not this one message (too long, unparsable): every later message to it will give up too.
    destination_lost: bool = False

    @property
    def sent(self) -> bool:
        return self.kind == "sent"


def split_text(text: str, limit: int = PART_CHARS) -> list[str]:
    """``text`` in parts of at most ``limit`` characters, cut at a line break (else a space) when there is one in
    the second half of the part."""
    parts, rest = [], text
    while len(rest) > limit:
        cut = rest.rfind("\n", limit // 2, limit)
        if cut < 0:
            cut = rest.rfind(" ", limit // 2, limit)
        if cut < 0:
            cut = limit
        parts.append(rest[:cut])
        rest = rest[cut:].lstrip("\n ")
    parts.append(rest)
    return parts


def telegram_parts(message: Message) -> list[str]:
    """The HTML texts to send: a bold header with the topic, then the escaped text, split as needed."""
    chunks = split_text(message.text)
    mark = SEVERITY_MARK.get(message.severity, "")
    again = REPEAT_MARK if message.repeat else ""
    out = []
    for index, chunk in enumerate(chunks, start=1):
        counter = f" ({index}/{len(chunks)})" if len(chunks) > 1 else ""
        out.append(f"{mark} <b>{html.escape(message.topic)}</b>{again}{counter}\n{html.escape(chunk)}")
    return out


class TelegramChannel:
    def __init__(self, *, token: str | None = None, api_url: str | None = None, timeout_s: float = TELEGRAM_TIMEOUT_S):
        self.token = token if token is not None else settings.TELEGRAM_BOT_TOKEN
        self.api_url = (api_url or settings.TELEGRAM_API_URL).rstrip("/")
        self._client = httpx.Client(timeout=timeout_s)
        # chat id -> (the supergroup it was upgraded to, the note that says so), as Telegram told this channel
        self._migrated: dict[str, tuple[str, str]] = {}

    def close(self) -> None:
        self._client.close()

    def send(self, chat_id: str, message: Message, *, parts_sent: int = 0,
             progress: Callable[[int], None] | None = None) -> Outcome:
        """Send the parts from ``parts_sent`` on; ``progress(n)`` is told after each part but the last that ``n``
        parts are delivered, so that a sender killed in the middle resumes after them instead of repeating them."""
        parts = telegram_parts(message)
        for index in range(parts_sent, len(parts)):
            target, note = self._migrated.get(chat_id, (chat_id, ""))
            outcome = self._send_one(target, parts[index])
            if outcome.migrate_to and not note:
                target, note = self._migrate(chat_id, outcome.migrate_to)
                outcome = self._send_one(target, parts[index])
            if not outcome.sent:
                return replace(outcome, reason=(outcome.reason + ("; " + note if note else ""))[:1000],
                               parts_sent=index, migrate_to="")
            if progress is not None and index + 1 < len(parts):
                progress(index + 1)
        return Outcome("sent", self._migrated.get(chat_id, ("", ""))[1], parts_sent=len(parts))

    def _migrate(self, chat_id: str, new_chat_id: str) -> tuple[str, str]:
        """The group ``chat_id`` became the supergroup ``new_chat_id`` (Telegram answers 400 with
        migrate_to_chat_id and never takes a message for the old id again): this channel sends there from now on,
        and the error log asks for the setting to be fixed, so no alert is lost in the meantime."""
        note = (f"chat {chat_id} was upgraded to the supergroup {new_chat_id}: sent there; replace {chat_id} with "
                f"{new_chat_id} in TELEGRAM_CHAT_IDS (and TELEGRAM_COMMAND_CHAT_IDS)")
        logger.error("telegram: %s", note)
        self._migrated[chat_id] = (new_chat_id, note)
        return self._migrated[chat_id]

    def _send_one(self, chat_id: str, text: str) -> Outcome:
        if not self.token:
            return Outcome("retry", "TELEGRAM_BOT_TOKEN is not set")
        url = f"{self.api_url}/bot{self.token}/sendMessage"
        body = {"chat_id": chat_id, "text": text, "parse_mode": "HTML", "disable_web_page_preview": True}
        try:
            response = self._client.post(url, json=body)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:  # it never went out
            return Outcome("retry", redact(f"{type(exc).__name__}: {exc}"))
        except httpx.HTTPError as exc:  # reset, timed out, no answer after the request: possibly delivered
            return Outcome("retry", redact(f"{type(exc).__name__}: {exc}"), maybe_delivered=True)
        return telegram_outcome(response)


def telegram_outcome(response: httpx.Response) -> Outcome:
    """What a Bot API answer means for its sender: sent, retry (with Telegram's own wait on 429; after a 5xx, as
    possibly delivered) or give up; the reason carries the status and the description, redacted. The delivery
    channel and the Telegram console read every answer through this one function."""
    try:
        payload = response.json()
    except ValueError:
        payload = {}
    if not isinstance(payload, dict):
        payload = {}
    if response.status_code == 200 and payload.get("ok"):
        return Outcome("sent")
    description = redact(str(payload.get("description") or response.reason_phrase))[:500]
    reason = f"HTTP {response.status_code}: {description}"
    if response.status_code == 429:
        parameters = payload.get("parameters") or {}
        retry_after = parameters.get("retry_after") if isinstance(parameters, dict) else None
        return Outcome("retry", reason, retry_after_s=float(retry_after) if retry_after is not None else None)
    if response.status_code in (400, 403):
        parameters = payload.get("parameters")
        migrate_to = parameters.get("migrate_to_chat_id") if isinstance(parameters, dict) else None
        lost = response.status_code == 403 or any(word in description.lower() for word in DESTINATION_GONE)
        return Outcome("give_up", reason, migrate_to=str(migrate_to) if migrate_to is not None else "",
                       destination_lost=lost and migrate_to is None)
    if response.status_code >= 500:  # a gateway that lost the server's answer (502) or gave up waiting (504)
        return Outcome("retry", reason, maybe_delivered=True)  # proves nothing: the message may have arrived
    return Outcome("retry", reason)  # 401/404 (a token being fixed), anything else: try again later


class EmailChannel:
    def send(self, address: str, message: Message, *, parts_sent: int = 0, progress=None) -> Outcome:
        subject = f"[statarb {message.severity}] {message.topic}" + (REPEAT_MARK if message.repeat else "")
        try:
            send_mail(subject, message.text, None, [address], fail_silently=False)
        except smtplib.SMTPRecipientsRefused as exc:
            return Outcome("give_up", redact(f"recipient refused: {exc}")[:500], destination_lost=True)
        except (smtplib.SMTPException, OSError) as exc:
            return Outcome("retry", redact(f"{type(exc).__name__}: {exc}")[:500])
        return Outcome("sent", parts_sent=1)


class LogChannel:
    def send(self, logger_name: str, message: Message, *, parts_sent: int = 0, progress=None) -> Outcome:
        logging.getLogger(logger_name).log(
            LOG_LEVEL.get(message.severity, logging.INFO), "[%s] %s: %s", message.severity, message.topic,
            redact(message.text),
        )
        return Outcome("sent", parts_sent=1)


def console_lines(message: Message) -> str:
    """One notification as the console shows it: ``[severity] topic: first line``, further lines indented."""
    first, *rest = redact(message.text).splitlines() or [""]
    return "\n".join([f"[{message.severity}] {message.topic}: {first}", *(f"    {line}" for line in rest)])


class ConsoleChannel:
    """Writes a message to the console: stdout, or ``write`` (``replay --console`` passes one that clears its
    progress bar first). ``make demo``'s replay prints its held notifications with it (``notifications_echoed``)."""

    def __init__(self, write: Callable[[str], None] | None = None):
        self._write = write or (lambda text: print(text, file=sys.stdout, flush=True))

    def send(self, target: str, message: Message, *, parts_sent: int = 0, progress=None) -> Outcome:
        self._write(console_lines(message))
        return Outcome("sent", parts_sent=1)
