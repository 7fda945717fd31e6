"""The commands of the Telegram console.

Only chats on the whitelist (``TELEGRAM_COMMAND_CHAT_IDS``, else the chats of ``TELEGRAM_CHAT_IDS``) are answered;
any other chat gets nothing at all. Reads (/status, /profit, /daily, /balance, /trades, /pairs, /help) answer any
whitelisted chat. Changes (/halt, /flatten, /resume) need the Telegram user mapped to a Django user
(``TELEGRAM_USERS="424242:alice"``) holding the permission the API asks for (execution.halt_account to halt,
risk.clear_halt to resume); they are confirmed with a one-time code (``/confirm 1a2b3c``, valid 2 minutes, for the
same user in the same chat) and audited with the user the Telegram user is mapped to through ``risk.services``. A
refused change (or a wrong confirmation code) is audited too, with its reason (action ``refused``); the chat is
told only the audit entry's number. A change asked with arguments that name no account, more than one, or words
it does not take is refused (audited) with its usage, never carried out on a guess; one asked in a chat that is not
whitelisted is audited and not answered. A read with a malformed number or too many arguments answers its usage.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model

from core.audit import audit_record
from execution.models import ExchangeAccount
from monitoring.guard.control import accounts_halt, accounts_resume
from monitoring.telegram import reports
from risk.models import Halt
from risk.selectors import active_halts

logger = logging.getLogger(__name__)

CONFIRM_TTL_S = 120.0
# A chat that is not a command chat gets one audit entry for its change requests per this many seconds; the
# rest are counted into its next entry (someone scripting /halt at the bot must not bury the audit trail).
STRANGER_AUDIT_INTERVAL_S = 60.0
# Each read and the most arguments it takes: more is a mistake answered with its usage, never silently dropped.
READS: dict[str, tuple[Callable[[list[str]], str], int]] = {
    "status": (reports.status, 0), "profit": (reports.profit, 1), "daily": (reports.daily, 1),
    "balance": (reports.balance, 0), "trades": (reports.trades, 1), "pairs": (reports.pairs, 1),
}  # fmt: skip
PERMISSIONS = {"halt": "execution.halt_account", "flatten": "execution.halt_account", "resume": "risk.clear_halt"}
HELP = """/status - open trades with unrealised PnL, halts
/profit [account] - closed-trade performance per account
/daily [n] - the last n days' PnL
/balance - capital and equity per account
/trades [n] - the last n closed trades
/pairs [n] - pairs per level
/halt [account] [flatten] - stop trading (all accounts without a name)
/flatten [account] - halt and close every open trade
/resume [account] - clear the halts raised by hand or by the kill switch
/confirm CODE - confirm a /halt, /flatten or /resume"""


@dataclass(frozen=True)
class Incoming:
    chat_id: int
    user_id: int
    username: str
    text: str


@dataclass
class _Pending:
    code: str
    command: str
    account: ExchangeAccount | None
    flatten: bool
    expires: float


def _ids(spec: str) -> set[int]:
    out = set()
    for item in spec.split(","):
        head = item.strip().rpartition(":")[0] if ":" in item else item.strip()
        if head.isascii() and head.lstrip("-").isdigit():
            out.add(int(head))
    return out


def command_chats() -> set[int]:
    spec = getattr(settings, "TELEGRAM_COMMAND_CHAT_IDS", "") or getattr(settings, "TELEGRAM_CHAT_IDS", "") or \
        getattr(settings, "TELEGRAM_CHAT_ID", "")  # fmt: skip
    return _ids(spec)


def telegram_users() -> dict[int, str]:
    users = {}
    for item in getattr(settings, "TELEGRAM_USERS", "").split(","):
        telegram_id, _, username = item.strip().partition(":")
        if telegram_id.isascii() and telegram_id.strip().lstrip("-").isdigit() and username.strip():
            users[int(telegram_id)] = username.strip()
    return users


def console_problems() -> list[str]:
    """What is wrong in the console's settings, each naming the entry (the system check reports them as errors, so
    ``manage.py telegram_console`` does not start on them). An entry read as nothing is otherwise dropped without a
    word: a mistyped command chat is answered nothing at all (a /halt in an emergency included), and a mistyped
    user mapping turns that person's every /halt into "not allowed"."""
    problems = []
    for item in (part.strip() for part in getattr(settings, "TELEGRAM_COMMAND_CHAT_IDS", "").split(",")):
        if item and not _ids(item):
            problems.append(f"TELEGRAM_COMMAND_CHAT_IDS: {item!r} is not a chat id (a number: -1001234567890 for a "
                            "group, your user id for a private chat); entries are separated by commas")
    for item in (part.strip() for part in getattr(settings, "TELEGRAM_USERS", "").split(",")):
        telegram_id, colon, username = item.partition(":")
        if item and not (colon and telegram_id.strip() and _ids(telegram_id) and username.strip()):
            problems.append(f"TELEGRAM_USERS: {item!r} is not '<Telegram user id>:<user name>' (424242:alice); "
                            "entries are separated by commas")
    return problems


def parse_command(text: str, *, bot_username: str = "") -> tuple[str, list[str]]:
    """("/halt@statarb_bot main flatten") -> ("halt", ["main", "flatten"]); ("", []) for anything else, and for a
    command addressed to another bot (``/halt@other_bot`` in a group both bots read), when ``bot_username`` is known."""
    words = text.strip().split()
    if not words or not words[0].startswith("/"):
        return "", []
    command, _, addressee = words[0][1:].partition("@")
    if addressee and bot_username and addressee.lower() != bot_username.lower():
        return "", []
    return command.lower(), words[1:]


class Console:
    """Answers one message at a time (the poller's thread). Pending confirmations live in this object: a restart
    forgets them, so a code never outlives the process that gave it."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, bot_username: str = ""):
        self.clock = clock
        self.pending: dict[tuple[int, int], _Pending] = {}
        self.bot_username = bot_username  # this bot's (the poller asks getMe): commands to another bot are not ours
        # chat -> (last entry's time, requests counted since, the last of them and its command)
        self._stranger_audits: dict[int, tuple[float, int, Incoming | None, str]] = {}

    def answer(self, message: Incoming) -> str | None:
        command, args = parse_command(message.text, bot_username=self.bot_username)
        if message.chat_id not in command_chats():
            if command in PERMISSIONS or command == "confirm":  # a change asked from elsewhere: on the record
                self._stranger_refusal(message, command)
            return None  # not even an error: an unknown chat learns nothing
        if not command:
            return None
        if command in ("help", "start"):
            return HELP
        if command in READS:
            return self._read(command, args)
        if command in PERMISSIONS:
            return self._ask(message, command, args)
        if command == "confirm":
            return self._confirm(message, args)
        return f"unknown command /{command}; /help lists them"

    def _stranger_refusal(self, message: Incoming, command: str) -> None:
        now = self.clock()
        # Forgotten once their interval is over, unless requests were counted: those go into the chat's next entry.
        self._stranger_audits = {chat: seen for chat, seen in self._stranger_audits.items()
                                 if seen[1] or now - seen[0] < STRANGER_AUDIT_INTERVAL_S}  # fmt: skip
        last, unrecorded, _, _ = self._stranger_audits.get(message.chat_id, (None, 0, None, ""))
        if last is not None and now - last < STRANGER_AUDIT_INTERVAL_S:
            self._stranger_audits[message.chat_id] = (last, unrecorded + 1, message, command)
            return
        why = f"chat {message.chat_id} is not a command chat"
        if unrecorded:
            why += f" (and {unrecorded} more change request(s) from this chat since its last record)"
        self._audit_refusal(message, f"/{command}", why, user=self._user(message)[0])
        self._stranger_audits[message.chat_id] = (now, 0, None, "")

    def stranger_audits_flush(self) -> None:
        """Write the requests counted from a chat whose minute is over (the poller asks after each round): a flood
        that stops has no next request to carry its count."""
        now = self.clock()
        for chat, (last, unrecorded, message, command) in list(self._stranger_audits.items()):
            if unrecorded and message is not None and now - last >= STRANGER_AUDIT_INTERVAL_S:
                self._audit_refusal(message, f"/{command}", f"chat {chat} is not a command chat ({unrecorded} more "
                                    "change request(s) from this chat since its last record, the last this one)",
                                    user=self._user(message)[0])
                self._stranger_audits[chat] = (now, 0, None, "")

    @staticmethod
    def _read(command: str, args: list[str]) -> str:
        read, most = READS[command]
        if len(args) > most:
            return f"/{command} takes {'no argument' if not most else f'at most {most} argument'}; usage: " \
                   f"{usage(command)}"  # fmt: skip
        try:
            return read(args)
        except reports.BadArgument as exc:
            return f"{exc}; usage: {usage(command)}"

    def _user(self, message: Incoming) -> tuple[object | None, str]:
        """The active user the sender is mapped to, or None and why not (for the audit trail, not the chat)."""
        username = telegram_users().get(message.user_id)
        if username is None:
            return None, "the Telegram user is not mapped to a user (TELEGRAM_USERS)"
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            return None, f"mapped to {username!r}, who does not exist or is not active"
        return user, ""

    def _allowed(self, message: Incoming, command: str) -> tuple[object | None, str | None]:
        user, why = self._user(message)
        if user is not None and not user.has_perm(PERMISSIONS[command]):
            why = f"{user.get_username()} lacks the permission {PERMISSIONS[command]}"
        if why:
            return None, self._refused(message, f"/{command}", why, user=user)
        return user, None

    def _refused(self, message: Incoming, what: str, why: str, *, user=None) -> str:
        """Record a refused request and answer the chat without the reason: a group's members need not learn who
        is mapped to whom nor which permission is missing; an administrator reads it in the audit trail."""
        entry = self._audit_refusal(message, what, why, user=user)
        return f"not allowed (refusal #{entry.pk} in the audit trail: ask an administrator)"

    @staticmethod
    def _audit_refusal(message: Incoming, what: str, why: str, *, user=None):
        entry = audit_record(action="refused", channel="telegram", actor=user, actor_label=_label(message, user),
                             summary=f"{what} refused: {why}",
                             details={"chat": message.chat_id, "telegram_user": message.user_id,
                                      "telegram_username": message.username or "", "reason": why})
        logger.warning("telegram: %s from Telegram user %s refused: %s", what, message.user_id, why)
        return entry

    def _ask(self, message: Incoming, command: str, args: list[str]) -> str:
        # A new request voids the one waiting for its code, refused or not: a /confirm never carries out a request
        # older than the sender's last.
        self.pending.pop((message.chat_id, message.user_id), None)
        user, refusal = self._allowed(message, command)
        if refusal:
            return refusal
        request = _change_request(command, args)
        if isinstance(request, str):  # never carried out on a guess: the whole request is refused
            entry = self._audit_refusal(message, f"/{command} {' '.join(args)}".strip(), request, user=user)
            return f"{request} (refusal #{entry.pk}); usage: {usage(command)}"
        account, flatten = request
        code = secrets.token_hex(3)
        self.pending[(message.chat_id, message.user_id)] = _Pending(
            code=code, command=command, account=account, flatten=flatten, expires=self.clock() + CONFIRM_TTL_S)
        scope = account.name if account else ("every account" if command != "resume" else "the system-wide halts")
        what = {"halt": "halt", "flatten": "halt and flatten", "resume": "resume"}[command]
        if command == "halt" and flatten:
            what = "halt and flatten"
        return f"{what} {scope}? Reply /confirm {code} within {int(CONFIRM_TTL_S)} s"

    def _confirm(self, message: Incoming, args: list[str]) -> str:
        pending = self.pending.pop((message.chat_id, message.user_id), None)
        if pending is None or not args or not secrets.compare_digest(args[0].lower(), pending.code):
            if pending is not None:  # a request was waiting and the code was wrong: it is void now
                self._refused(message, f"/confirm of /{pending.command}", "wrong confirmation code",
                              user=self._user(message)[0])
            return "nothing to confirm with that code (ask again)"
        if self.clock() > pending.expires:
            return "that code has expired (ask again)"
        user, refusal = self._allowed(message, pending.command)  # the permission may have gone meanwhile
        if refusal:
            return refusal
        label = _label(message, user)
        if pending.command == "resume":
            cleared = accounts_resume(account=pending.account, user=user, channel="telegram", actor_label=label,
                                      source=Halt.Source.TELEGRAM)
            return f"resumed {pending.account.name if pending.account else 'system-wide'}: {cleared} halt(s) cleared" \
                + _still_halted(pending.account)  # fmt: skip
        halt = accounts_halt(account=pending.account, flatten=pending.flatten, user=user, channel="telegram",
                             actor_label=label, source=Halt.Source.TELEGRAM,
                             reason=f"/{pending.command} from Telegram by {user.get_username()}")
        scope = pending.account.name if pending.account else "every account"
        return f"halted {scope}" + (" and flattening its open trades" if halt.flatten else "") + f" (halt #{halt.pk})"


STILL_LISTED = 5


def _still_halted(account: ExchangeAccount | None) -> str:
    """What still stops trading after a /resume (the guard's halts, which /resume leaves, and a system-wide halt
    over an account): without it "resumed lvl1: 0 halt(s) cleared" reads as trading again when it is not."""
    halts = list(active_halts(account=account).select_related(
        "account", "pair__y_instrument", "pair__x_instrument").order_by("pk")[:STILL_LISTED + 1])
    if not halts:
        return "; no halt in force"
    more = " (and more: /status lists them)" if len(halts) > STILL_LISTED else ""
    return "; still in force: " + "; ".join(str(h) for h in halts[:STILL_LISTED]) + more


def usage(command: str) -> str:
    """The command's line of HELP, without its description."""
    return next((line.split(" - ")[0] for line in HELP.splitlines() if line.split()[0] == f"/{command}"),
                f"/{command}")


def _change_request(command: str, args: list[str]) -> tuple[ExchangeAccount | None, bool] | str:
    """(the account, flatten) a /halt, /flatten or /resume asks for, or what is wrong with its arguments: at most one
    account name, and the word ``flatten`` only after /halt."""
    flags = [a for a in args if a.lower() == "flatten"]
    names = [a for a in args if a.lower() != "flatten"]
    if len(names) > 1:
        return f"more than one account ({', '.join(map(repr, names))}): name one, or none for all"
    if flags and (command != "halt" or len(flags) > 1):
        return f"/{command} does not take 'flatten' here"
    account = None
    if names:
        account = ExchangeAccount.objects.filter(name=names[0]).first()
        if account is None:
            return f"no account named {names[0]!r}"
    return account, command == "flatten" or bool(flags)


def _label(message: Incoming, user) -> str:
    """Who acted, for the audit trail: the user the sender is mapped to (never the handle the sender chose, which
    anyone can set), and the Telegram id it came from."""
    return f"{user.get_username()} via telegram:{message.user_id}" if user is not None else \
        f"telegram:{message.user_id}"
