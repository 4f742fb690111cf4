"""trioweb's log lines: the session line, text or JSON formats, and a rate-limited warning.

Loggers: ``trioweb`` (the framework), ``trioweb.session`` (one INFO line per WebSocket session,
at its end: set it to WARNING to turn those off), ``trioweb.broadcast`` (the hubs).

``trioweb run`` sets them up with :func:`logging_config` (``--log-format text``, the default,
or ``json``); an app that sets up logging itself can use the same config::

    import logging.config
    from trioweb.logs import logging_config

    logging.config.dictConfig(logging_config("json"))
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import trio

__all__ = [
    "SESSION_LOGGER",
    "TIME_FORMAT",
    "JSONFormatter",
    "RateLimitedWarning",
    "logging_config",
]

#: The logger of the session lines.
SESSION_LOGGER = "trioweb.session"

#: hypercorn's timestamp format, used on every trioweb line in text format.
TIME_FORMAT = "[%Y-%m-%d %H:%M:%S %z]"

#: The text format: hypercorn's own.
TEXT_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(message)s"

#: The attribute of a log record that holds a session line's fields.
SESSION_FIELDS = "trioweb_session"


class JSONFormatter(logging.Formatter):
    """One JSON object a line: ``time``, ``level``, ``logger``, ``pid``, ``message``, plus the
    fields of a session line (``route``, ``path``, ``client``, ``closed_by``, ``code``,
    ``reason``, ``duration``, ``messages_in``, ``bytes_in``, ``messages_out``, ``bytes_out``)
    and ``exc_info`` (the traceback as text) when there is one."""

    def __init__(self, datefmt: str | None = None) -> None:
        super().__init__(datefmt=datefmt)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, self.datefmt),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        fields = getattr(record, SESSION_FIELDS, None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def logging_config(log_format: str = "text", level: str = "INFO") -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` dict for trioweb's loggers, on stderr.

    ``log_format`` is ``"text"`` (hypercorn's format, with a timestamp on every line) or
    ``"json"`` (one JSON object a line, see :class:`JSONFormatter`). Other loggers are left
    as they are.
    """
    if log_format == "text":
        formatter: dict[str, Any] = {"format": TEXT_FORMAT, "datefmt": TIME_FORMAT}
    elif log_format == "json":
        formatter = {"()": JSONFormatter}
    else:
        raise ValueError(f"unknown log format {log_format!r} (text or json)")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"trioweb": formatter},
        "handlers": {
            "trioweb": {
                "class": "logging.StreamHandler",
                "formatter": "trioweb",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {"trioweb": {"handlers": ["trioweb"], "level": level}},
    }


class RateLimitedWarning:
    """A warning that repeats (a publish failing through a broker outage): the first one is
    logged, then at most one line per ``interval`` seconds, which says how many were
    suppressed since the last line; :meth:`flush` logs the count still pending once the
    interval is over (call it when things work again).

    ``clock`` is ``trio.current_time`` by default (so trio's fake clock drives it in tests).
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock or trio.current_time
        self._next = float("-inf")
        self._suppressed = 0
        self._last: tuple[str, tuple[Any, ...]] | None = None

    @property
    def suppressed(self) -> int:
        """How many warnings were swallowed since the last line."""
        return self._suppressed

    def warning(self, message: str, *args: Any) -> None:
        """Log ``message % args``, unless one was logged less than ``interval`` ago."""
        now = self._clock()
        if now < self._next:
            self._suppressed += 1
            self._last = (message, args)
            return
        self._next = now + self._interval
        if self._suppressed:
            self._logger.warning(
                message + " (and %d more like it in the last %.0f s)",
                *args,
                self._suppressed,
                self._interval,
            )
            self._suppressed = 0
        else:
            self._logger.warning(message, *args)

    def flush(self) -> None:
        """Log the count of those suppressed since the last line, if any, once ``interval``
        has passed since it (call it when things work again: the outage's tail is counted
        without waiting for another failure)."""
        if not self._suppressed or self._last is None:
            return
        now = self._clock()
        if now < self._next:
            return
        message, args = self._last
        self._logger.warning(
            message + " (the last of %d more like it in the last %.0f s)",
            *args,
            self._suppressed,
            self._interval,
        )
        self._suppressed = 0
        self._last = None
        self._next = now + self._interval
