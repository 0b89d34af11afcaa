"""Logging: loguru to stderr as text for people or JSON lines for machines, secrets redacted.

How this works: ``setup_logging`` replaces every loguru handler with one synchronous sink
(loguru's coroutine sinks need asyncio, and coinfeed runs on trio). A global patcher replaces
each configured secret with ``***`` in the message and the ``extra`` fields of every record, so
any sink sees redacted records; our sink formats the line itself (exception text included) and
redacts the finished line once more, so the key cannot leak through a traceback either.
Variable values in tracebacks (loguru's ``diagnose``) are never shown.

Context goes in ``extra``: ``logger.bind(symbol_id=...).warning("gap detected")`` renders as
``... WARNING  gap detected symbol_id=...`` in text and as a ``symbol_id`` field in JSON.
"""

from __future__ import annotations

import json
import re
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import UTC
from typing import TYPE_CHECKING, Any

import attrs
from loguru import logger

if TYPE_CHECKING:
    from loguru import Message, Record

LOG_FORMATS = ("text", "json")
REDACTED = "***"


_APIKEY_PARAMETER = re.compile(r"(?i)(\bapikey=)[^&#\s\"'\\]+")
"""An ``apikey`` query parameter (CoinAPI accepts the key there): redacted whatever its value."""
_URL_PASSWORD = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^\s/?#@:\"'\\]*:)[^\s/\"'\\]*@")
"""The password in a URL's ``user:password@`` (a Redis sink's, say): up to the last ``@``
before the path, since a password may hold an unescaped ``@``."""


def redact(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every non-empty secret, any ``apikey=`` value and any URL's password
    (``scheme://user:password@``) replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    if "apikey=" in text.lower():
        text = _APIKEY_PARAMETER.sub(r"\1" + REDACTED, text)
    if "@" in text and "://" in text:
        text = _URL_PASSWORD.sub(r"\1" + REDACTED + "@", text)
    return text


@attrs.frozen
class _Redactor:
    secrets: tuple[str, ...]

    def patch(self, record: Record) -> None:
        record["message"] = redact(record["message"], self.secrets)
        extra = record["extra"]
        for key, value in extra.items():
            if isinstance(value, int | float | bool) or value is None:
                continue
            text = value if isinstance(value, str) else str(value)
            if any(secret in text for secret in self.secrets):
                extra[key] = redact(text, self.secrets)

    def write(self, line: str) -> None:
        # sys.stderr is looked up per line so that redirection (and test capture) works.
        sys.stderr.write(redact(line, self.secrets))


def setup_logging(log_format: str, log_level: str, *, secrets: Sequence[str] = ()) -> None:
    """Send all logging to stderr as ``text`` or ``json`` at ``log_level``, secrets redacted.

    Replaces every existing handler (loguru's default one included); safe to call again.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log_format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    redactor = _Redactor(tuple(secret for secret in secrets if secret))
    render = _render_json if log_format == "json" else _render_text

    def sink(message: Message) -> None:
        record = message.record
        exception = _exception_text(record, redactor.secrets)
        redactor.write(render(record, exception))

    logger.remove()
    logger.configure(patcher=redactor.patch)
    logger.add(
        sink,
        level=log_level.upper(),
        format="{message}",
        colorize=False,
        backtrace=False,
        diagnose=False,
    )


def _exception_text(record: Record, secrets: Sequence[str]) -> str | None:
    if record["exception"] is None:
        return None
    kind, value, tb = record["exception"]
    lines = traceback.format_exception(kind, value, tb) if kind is not None else []
    return redact("".join(lines).rstrip("\n"), secrets) or None


def _timestamp(record: Record) -> str:
    return record["time"].astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text_value(value: object) -> str:
    text = value if isinstance(value, str) else str(value)
    if not text or any(c.isspace() or c in "\"'=" for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


def _render_text(record: Record, exception: str | None) -> str:
    fields = "".join(f" {key}={_text_value(value)}" for key, value in record["extra"].items())
    line = f"{_timestamp(record)} {record['level'].name:<8} {record['message']}{fields}"
    return f"{line}\n{exception}\n" if exception else line + "\n"


def _render_json(record: Record, exception: str | None) -> str:
    document: dict[str, Any] = {
        "time": _timestamp(record),
        "level": record["level"].name,
        "message": record["message"],
        "logger": record["name"],
    }
    for key, value in record["extra"].items():
        document[f"extra_{key}" if key in document else key] = value
    if exception:
        document["exception"] = exception
    return json.dumps(document, default=str, ensure_ascii=False) + "\n"


@attrs.define
class _Window:
    emitted_at: float
    suppressed: int = 0


@attrs.define
class RateLimitedLog:
    """Logs a message at most once per ``interval`` seconds per key, for hot paths.

    The first line after a quiet spell carries ``suppressed=N``, the number of lines it stood
    for. At most ``max_keys`` keys are tracked (the oldest is forgotten first).
    """

    interval: float = 10.0
    max_keys: int = 1024
    _windows: dict[str, _Window] = attrs.field(factory=dict, init=False)

    def warning(self, key: str, message: str, *, now: float | None = None, **ctx: object) -> bool:
        """Log a WARNING unless ``key`` logged within ``interval``; return whether it did."""
        return self._log("WARNING", key, message, now, ctx)

    def info(self, key: str, message: str, *, now: float | None = None, **ctx: object) -> bool:
        """Log an INFO line, rate-limited like ``warning``."""
        return self._log("INFO", key, message, now, ctx)

    def error(self, key: str, message: str, *, now: float | None = None, **ctx: object) -> bool:
        """Log an ERROR line, rate-limited like ``warning``."""
        return self._log("ERROR", key, message, now, ctx)

    def _log(
        self, level: str, key: str, message: str, now: float | None, ctx: dict[str, object]
    ) -> bool:
        now = time.monotonic() if now is None else now
        window = self._windows.get(key)
        if window is not None and now - window.emitted_at < self.interval:
            window.suppressed += 1
            return False
        if window is None:
            if len(self._windows) >= self.max_keys:
                del self._windows[next(iter(self._windows))]
            window = self._windows[key] = _Window(now)
        elif window.suppressed:
            ctx = {**ctx, "suppressed": window.suppressed}
        window.emitted_at, window.suppressed = now, 0
        logger.opt(depth=2).bind(**ctx).log(level, message)
        return True
