"""The getUpdates long poll: reads the chat's messages, answers each with the console, confirms them by offset.

One poller per bot (Telegram answers a second getUpdates with 409 Conflict). Answers go straight back with
sendMessage (they are replies, not alerts: no outbox), HTML-escaped. Outages and errors are logged (the token
masked) and waited out with backoff; an update is confirmed only after it was answered or deliberately ignored.
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Callable

import httpx
from django.conf import settings
from django.db import close_old_connections

from core.secrets import redact
from monitoring.telegram.console import Console, Incoming
from notifications.channels import split_text, telegram_outcome

logger = logging.getLogger(__name__)

POLL_TIMEOUT_S = 25  # Telegram holds the request this long when there is nothing new
REPLY_PART_INTERVAL_S = 1.0  # Telegram allows about one message a second per chat
REPLY_ATTEMPTS = 3  # a part refused with 429 (retry_after) is tried this many times
MAX_REPLY_WAIT_S = 30.0


class TelegramRefused(RuntimeError):
    """The Bot API answered ok=false; ``retry_after_s`` when it asked to wait (429)."""

    def __init__(self, message: str, *, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Poller:
    def __init__(self, *, console: Console | None = None, token: str | None = None, api_url: str | None = None,
                 poll_timeout_s: int = POLL_TIMEOUT_S, sleep: Callable[[float], None] = time.sleep):
        self.console = console or Console()
        self.token = token if token is not None else settings.TELEGRAM_BOT_TOKEN
        self.api_url = (api_url or settings.TELEGRAM_API_URL).rstrip("/")
        self.poll_timeout_s = poll_timeout_s
        self.sleep = sleep
        self.offset = 0
        self.failures = 0
        self._client = httpx.Client(timeout=poll_timeout_s + 10)

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, **params) -> dict:
        response = self._client.post(f"{self.api_url}/bot{self.token}/{method}", json=params)
        outcome = telegram_outcome(response)
        if not outcome.sent:
            raise TelegramRefused(f"{method}: {outcome.reason}", retry_after_s=outcome.retry_after_s)
        return response.json()

    def _learn_username(self) -> None:
        """The bot's own user name (getMe), so that the console ignores commands addressed to another bot; until
        it is known (Telegram unreachable at start), asked again before each round."""
        if self.console.bot_username:
            return
        try:
            self.console.bot_username = str(self._call("getMe")["result"].get("username") or "")
        except (httpx.HTTPError, RuntimeError, ValueError, KeyError) as exc:
            logger.warning("telegram getMe failed (%s); asked again next round", redact(f"{type(exc).__name__}: {exc}"))

    def poll_once(self) -> int:
        """One getUpdates round; returns how many updates it handled. Errors are logged and backed off."""
        self._learn_username()
        try:
            updates = self._call("getUpdates", offset=self.offset, timeout=self.poll_timeout_s,
                                 allowed_updates=["message"])["result"]  # fmt: skip
        except (httpx.HTTPError, RuntimeError, ValueError) as exc:
            self.failures += 1
            logger.warning("telegram getUpdates failed (%s); retrying", redact(f"{type(exc).__name__}: {exc}"))
            self.sleep(min(60.0, 2.0 ** min(self.failures, 6)))
            return 0
        self.failures = 0
        for update in updates:
            self._handle(update)
            self.offset = max(self.offset, int(update["update_id"]) + 1)
        try:
            self.console.stranger_audits_flush()
        except Exception:  # the database away: the counts stay, written at a later round
            logger.exception("telegram: the counted requests of stranger chats could not be audited")
        return len(updates)

    def _handle(self, update: dict) -> None:
        message = update.get("message") or {}
        chat, sender = message.get("chat") or {}, message.get("from") or {}
        if not message.get("text") or "id" not in chat or "id" not in sender:
            return
        incoming = Incoming(chat_id=int(chat["id"]), user_id=int(sender["id"]),
                            username=str(sender.get("username") or ""), text=str(message["text"]))
        try:
            answer = self.console.answer(incoming)
        except Exception:  # one broken command must not stop the console; the user hears about it
            logger.exception("telegram command %r failed", incoming.text[:100])
            answer = "that command failed (see the server log)"
        if answer:
            self._reply(incoming.chat_id, message.get("message_id"), answer)

    def _reply(self, chat_id: int, message_id: int | None, text: str) -> None:
        """Send a reply, part by part (Telegram's 4,096 characters), a second apart (its limit per chat); a part
        refused with 429 is sent again after the wait Telegram names, so a long /status arrives whole."""
        for index, part in enumerate(split_text(redact(text))):
            if index:
                self.sleep(REPLY_PART_INTERVAL_S)
            if not self._reply_part(chat_id, message_id, part):
                return

    def _reply_part(self, chat_id: int, message_id: int | None, part: str) -> bool:
        for attempt in range(REPLY_ATTEMPTS):
            try:
                self._call("sendMessage", chat_id=chat_id, text=html.escape(part), parse_mode="HTML",
                           reply_parameters={"message_id": message_id, "allow_sending_without_reply": True})
                return True
            except TelegramRefused as exc:
                if exc.retry_after_s is None or attempt + 1 == REPLY_ATTEMPTS:
                    logger.warning("telegram reply failed: %s", redact(str(exc)))
                    return False
                self.sleep(min(exc.retry_after_s, MAX_REPLY_WAIT_S))
            except (httpx.HTTPError, ValueError) as exc:
                logger.warning("telegram reply failed: %s", redact(f"{type(exc).__name__}: {exc}"))
                return False
        return False

    def run(self, *, rounds: int | None = None) -> None:
        """Poll forever (or ``rounds`` times)."""
        done = 0
        try:
            while rounds is None or done < rounds:
                close_old_connections()  # a long-running process: drop connections past their age or broken
                self.poll_once()
                done += 1
        finally:
            self.close()
