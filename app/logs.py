"""Structured JSON logs: one object per line, with the `extra=` fields of each call.

`event` is `logger.info(message, extra=fields)` for the request path: when the line would reach
only Podgraft's own JSON handler (no other handler or filter on the way, as `podgraft serve` sets
it up), it writes the same line without building a `LogRecord` and going through the handler
machinery (a fifth of the instructions); otherwise (a test capturing logs, another handler) it logs
as usual.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from collections.abc import Mapping
from typing import Any

import orjson

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",
}


def _line(created: float, level: str, logger: str, message: str, fields: Mapping[str, Any]) -> str:
    entry: dict[str, Any] = {"ts": round(created, 3), "level": level, "logger": logger, "msg": message}
    entry.update(fields)
    return orjson.dumps(entry, default=str).decode()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = {
            key: value
            for key, value in record.__dict__.items()
            if key not in _STANDARD and not key.startswith("_")
        }
        if record.exc_info:
            fields["traceback"] = "".join(traceback.format_exception(*record.exc_info))
        return _line(record.created, record.levelname.lower(), record.name, record.getMessage(), fields)


class JsonHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Podgraft's handler: JSON lines on a stream (stderr)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(JsonFormatter())

    def write_line(self, line: str) -> None:
        self.acquire()
        try:
            self.stream.write(line + self.terminator)
            self.flush()
        except Exception:  # as `emit` does: a broken stream never fails the caller
            self.handleError(logging.makeLogRecord({"msg": line}))
        finally:
            self.release()


def _only_handler(logger: logging.Logger) -> JsonHandler | None:
    """Podgraft's JSON handler, when an info line of `logger` would reach it and nothing else."""
    if not logger.isEnabledFor(logging.INFO):
        return None
    node: logging.Logger | None = logger
    while node is not None and node is not logging.root:
        if node.handlers or node.filters or node.disabled or not node.propagate:
            return None
        node = node.parent
    handlers = logging.root.handlers
    if len(handlers) != 1 or logging.root.filters or logging.root.disabled:
        return None
    handler = handlers[0]
    if type(handler) is not JsonHandler or handler.filters or handler.level > logging.INFO:
        return None
    return handler


def event(logger: logging.Logger, message: str, fields: Mapping[str, Any]) -> None:
    """`logger.info(message, extra=fields)`, written straight to the JSON handler when it is the only
    one (see the module doc)."""
    handler = _only_handler(logger)
    if handler is None:
        logger.info(message, extra=dict(fields))
    else:
        handler.write_line(_line(time.time(), "info", logger.name, message, fields))


def configure(level: str) -> None:
    """Send every log (Podgraft's and uvicorn's) to stderr as JSON lines."""
    # No caller lookup (a stack walk per record) and no thread/process names: cheap on the hot path.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [JsonHandler()]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
