"""Personal data kept out of log lines.

Shoppers type their email addresses and phone numbers, channels name a
conversation after a phone number (WhatsApp), a page-scoped id (Messenger) or
a widget session id that works as a password for the conversation, and all of
these end up in log messages: ours, Rasa's, rasa-sdk's and Sanic's.  Logs are
read by more people, kept longer and copied further than the store, so what a
log line needs is only enough to tell two shoppers apart:

* ``julia.bakker@example.com``  ->  ``j***@example.com``
* ``+31 6 1234 5678``           ->  ``…5678``
* a widget session id (32 hex)  ->  ``de3f…``
* ``whatsapp:31612345678`` -> ``whatsapp:…5678``, ``messenger:<psid>`` ->
  ``messenger:…1234``, ``widget:<session>`` -> ``widget:de3f…``,
  ``rest:<id>`` -> ``rest:shop…`` (also in URLs, where the colon is ``%3A``).

:func:`install` makes every log record of the process pass through
:func:`redact`: its final message (the format string with its arguments
filled in), its traceback and its stack.  Values passed to a log call with
``extra=`` are set after a record is made, so the factory cannot see them;
they are rewritten for Sanic's access log (the request line with its
conversation id), the one logger of ours and our libraries that uses them.
Nothing here touches storage or transport.
"""

from __future__ import annotations

import logging
import re
import warnings
from typing import Any, Callable

#: The channels whose conversation ids are ``<channel>:<provider id>`` (see connectors.scoped).
CHANNELS = ("whatsapp", "messenger", "widget", "rest")

#: A phone number has 9 to 17 digits here: E.164 allows 15, Messenger's page-scoped ids have 16 or 17.
MIN_PHONE_DIGITS, MAX_PHONE_DIGITS = 9, 17
ELLIPSIS = "…"

_EMAIL_LOCAL = r"[A-Za-z0-9._%+-]+(?:'[A-Za-z0-9._%+-]+)*"
_EMAIL_DOMAIN = r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
EMAIL = re.compile(rf"(?<![A-Za-z0-9._%+-])({_EMAIL_LOCAL})(@|%40)({_EMAIL_DOMAIN})(?![A-Za-z0-9-])")

_PATTERN = re.compile(
    "|".join([
        # A conversation id, also URL-encoded in a path (``whatsapp%3A316…``); the id ends at a delimiter.
        rf"(?<![\w-])(?P<channel>{'|'.join(CHANNELS)})(?P<colon>:|%3[Aa])(?P<id>[^\s'\"`,;<>()\[\]{{}}|\\/?&#]+)",
        rf"(?P<email>(?<![A-Za-z0-9._%+-]){_EMAIL_LOCAL}(?:@|%40){_EMAIL_DOMAIN}(?![A-Za-z0-9-]))",
        # Dates, times and dashed UUIDs are left alone: their digits would look like a phone number.
        r"(?P<keep>(?<!\d)\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?(?:[.,]\d+)?)?"
        r"|\b\d{1,2}[-/.]\d{1,2}[-/.]\d{4}(?:\s\d{1,2}:\d{2})?"
        r"|\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b)",
        # A widget session id: 128 random bits in lower-case hex (connectors.widget.SESSION_ID).
        r"(?P<session>(?<![0-9A-Za-z])[0-9a-f]{32}(?![0-9A-Za-z]))",
        # Digits in groups separated by a space, dash or brackets: +31 6 1234 5678, 06-12345678, +31 (0)6 ...
        # Not part of a word, a decimal number, a path or an amount (``-``, ``.``, ``/`` before it).
        r"(?P<phone>(?<![\w+./%-])(?:\+|\(\+?)?\d(?:[ ()-]{0,2}\d){8,20}(?![\w])(?!\.\d))",
    ])
)


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def mask_email(email: str) -> str:
    """``julia.bakker@example.com`` -> ``j***@example.com`` (also for ``%40``); other text unchanged."""
    match = EMAIL.fullmatch(email.strip())
    if not match:
        return email
    local, at, domain = match.groups()
    return f"{local[0]}***{at}{domain}"


def mask_phone(phone: str) -> str:
    """A phone number (or any long number) as ``…`` and its last four digits."""
    digits = _digits(phone)
    return ELLIPSIS + digits[-4:] if len(digits) > 4 else ELLIPSIS


def mask_session_id(session_id: str) -> str:
    """A widget session id (or any secret-like token) as its first four characters and ``…``."""
    return session_id[:4] + ELLIPSIS if len(session_id) > 4 else ELLIPSIS


def _mask_channel_id(channel: str, raw: str) -> str:
    if channel in ("whatsapp", "messenger") and len(_digits(raw)) > 4:
        return mask_phone(raw)
    return mask_session_id(raw)


def mask_conversation_id(conversation_id: str) -> str:
    """``<channel>:<id>`` with the id masked as that channel's ids are; an unknown shape as a token.

    WhatsApp ids are phone numbers and Messenger's page-scoped ids are long
    numbers: their last four digits stay.  Widget sessions and REST senders
    keep their first four characters.
    """
    channel, colon, raw = conversation_id.partition(":")
    if colon and channel in CHANNELS and raw:
        return f"{channel}:{_mask_channel_id(channel, raw)}"
    return mask_session_id(conversation_id)


def _replace(match: re.Match[str]) -> str:
    kind, text = match.lastgroup, match.group(0)
    channel = match.group("channel")
    if channel is not None:
        return f"{channel}{match.group('colon')}{_mask_channel_id(channel, match.group('id'))}"
    if kind == "email":
        return mask_email(text)
    if kind == "session":
        return mask_session_id(text)
    if kind == "phone":
        return mask_phone(text) if MIN_PHONE_DIGITS <= len(_digits(text)) <= MAX_PHONE_DIGITS else text
    return text


def redact(text: str) -> str:
    """`text` with every email address, phone number, widget session id and conversation id masked."""
    if not text:
        return text
    return _PATTERN.sub(_replace, text)


# --- logging -------------------------------------------------------------------------------

_MARK = "_wismo_redacting"
#: Loggers whose records carry text in attributes given with ``extra=``.
EXTRA_LOGGERS = ("sanic.access",)
#: What every record has; anything else on a record came with ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Rewrite `record` in place: its message with the arguments filled in, its traceback and stack, redacted."""
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a broken log call must not print its raw arguments either
        message = f"{record.msg} (the log arguments could not be formatted and were left out)"
    record.msg, record.args = redact(message), ()
    if record.exc_info and not record.exc_text:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


class ExtrasFilter(logging.Filter):
    """Redacts the text a log call passed with ``extra=`` (Sanic's access log: ``request``, ``host``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's extra text attributes; never drops a record."""
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, redact(value))
        return True


def installed() -> bool:
    """Whether this process's log records are redacted."""
    return bool(getattr(logging.getLogRecordFactory(), _MARK, False))


def install() -> None:
    """Redact every log record this process makes from now on (idempotent).

    It wraps the log record factory, so it covers every logger and handler,
    including those configured later by Rasa or Sanic; call it first thing
    in a server's entry point.
    """
    if installed():
        return
    make: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return redact_record(make(*args, **kwargs))

    setattr(factory, _MARK, True)
    logging.setLogRecordFactory(factory)
    # Rasa reports some problems as Python warnings, written to stderr without logging (for example
    # "Failed to parse arguments in line '<what the shopper typed>'"): they are redacted too.
    show = warnings.showwarning
    if not getattr(show, _MARK, False):
        def showwarning(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
                        line: Any = None) -> None:
            show(redact(str(message)), category, filename, lineno, file, line)

        setattr(showwarning, _MARK, True)
        warnings.showwarning = showwarning
    for name in EXTRA_LOGGERS:
        extras = logging.getLogger(name)
        if not any(isinstance(f, ExtrasFilter) for f in extras.filters):
            extras.addFilter(ExtrasFilter())
