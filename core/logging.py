"""A logging filter that keeps secrets out of every log line.

Exchange keys, the Telegram bot token and the secrets key can reach a message through an exception text, a
request URL or a ccxt debug line; this filter masks any value it knows to be secret and any token that looks
like a Telegram bot token or an API signature parameter, before a handler formats the record.
"""

from __future__ import annotations

import logging
import re

from django.views.debug import SafeExceptionReporterFilter

from core.secrets import known_secret_values, redact

# Shapes worth masking even when the value is unknown to us: Telegram bot tokens ("123456:ABC..."), query or JSON
# parameters that carry keys and signatures, and Bybit's echo of a refused request's credentials
# ("apiKey[..] apiSignature[..]", "origin_string[<timestamp><key>...]").
_SECRET_SHAPES = re.compile(
    r"((?<!\d)\d{6,12}:[A-Za-z0-9_-]{30,}(?![A-Za-z0-9_-]))"  # also inside .../bot<token>/ URLs
    r"|((?:api[_-]?key|secret|sign|signature|password|token|origin_string|X-BAPI-API-KEY|X-BAPI-SIGN)"
    r"[\"']?\s*[=:\[]\s*[\"']?)([^\s&\"',}\]]+)",
    re.IGNORECASE,
)


# The password of a URL's credentials ("redis://:pw@host", "mysql://user:pw@host").
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)([^@\s/]+)(@)", re.IGNORECASE)


def mask_secret_shapes(text: str) -> str:
    def _mask(match: re.Match[str]) -> str:
        if match.group(1):
            return "***"
        return f"{match.group(2)}***"

    return _URL_PASSWORD.sub(r"\1***\3", _SECRET_SHAPES.sub(_mask, text))


class SecretsExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django's error page (DEBUG only) and error reports: beside its own names (AUTH, KEY, SECRET, PASS, TOKEN...:
    AUTH covers the Authorization header, an API token), the settings and request variables that hold URLs or
    connection strings are hidden, since a broker, result backend or database URL carries its password."""

    hidden_settings = re.compile("API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|URL|BROKER|BACKEND|DSN",
                                 flags=re.IGNORECASE)

    def is_active(self, request) -> bool:
        # Django cleanses posted parameters (sensitive_post_parameters) and marked variables (sensitive_variables)
        # only with DEBUG off; with DEBUG on (make demo, .env.example) its page showed an exchange key typed into the
        # admin's credential form in full. Here they are hidden whatever DEBUG says.
        return True


class RedactSecretsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = mask_secret_shapes(redact(message, known_secret_values()))
        if record.exc_info and record.exc_info[1] is not None:
            # Exception texts are formatted later by the handler; render and clean them now.
            formatted = logging.Formatter().formatException(record.exc_info)
            cleaned += "\n" + mask_secret_shapes(redact(formatted, known_secret_values()))
            record.exc_info = None
            record.exc_text = None
        if cleaned != message or record.args:
            record.msg = cleaned
            record.args = None
        return True
