"""Structured logs: one event per line, key=value (default) or JSON, the queue ID in every line
about a message. Built with structlog but without its global configure(): the logger is an object
made from the configuration and passed to each stage (STYLE.md habit 7).

Every field value of every line is escaped: control characters (C0 including TAB, CR and LF;
DEL; C1, so ESC and CSI too) and the Unicode line separators U+2028/U+2029 are written as
``\\xNN`` (``\\u2028``), so bytes a client sent (an unknown command, an address, a HELO name)
can neither forge a log line nor drive an operator's terminal. In "kv" lines a string value is
quoted ``'...'`` with ``\\\\`` and ``\\'`` inside (the shape of Python's repr); in JSON lines
the decoded string carries the ``\\xNN`` text.

``route_stdlib(log, level)`` makes the same logger the output of the standard ``logging``
module (the root logger: our modules' ``mailgate.*`` loggers, aiosmtpd's ``mail.log``, asyncio,
uvicorn): a record becomes an event named by its message with ``logger=NAME`` and its ``extra``
fields, at the configured level. aiosmtpd's info lines are a trace of every command line and
shadow our own intake events: they show at level "debug"; its warnings (unrecognised commands,
too many bogus commands) at every level. Only the ``serve`` command calls it (logging is
process-global state).
"""
from __future__ import annotations

import logging
import re
import sys
from typing import Any, TextIO

import structlog

__all__ = ["make_logger", "route_stdlib", "escape", "flush_logs"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}
_KEY_ORDER = ("ts", "level", "event", "queue_id")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape(text: str) -> str:
    """``text`` with every control character written as ``\\xNN`` (U+2028/9 as ``\\uNNNN``)."""
    if text.isprintable():      # fast path (C level): no C0, DEL, C1, U+2028/9 in it
        return text
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                        else f"\\u{ord(m.group()):04x}", text)


def make_logger(level: str = "info", fmt: str = "kv", stream: TextIO | None = None,
                batched: bool = False, **bind) -> structlog.BoundLoggerBase:
    """A bound logger writing to ``stream`` (stderr by default). ``fmt`` is "kv" or "json".
    ``batched``: lines logged during one event-loop iteration are written together at its end
    (gateway.logbatch; ``mailgate serve``), else each line is written and flushed at once."""
    from gateway.logbatch import LoopBatchedLogger
    render = (structlog.processors.JSONRenderer() if fmt == "json" else _render_kv)
    out = stream or sys.stderr
    logger = structlog.wrap_logger(
        LoopBatchedLogger(out) if batched else structlog.PrintLogger(out),
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            structlog.processors.format_exc_info,
            *([_escape_fields] if fmt == "json" else []),   # kv escapes as it renders
            render,
        ],
        cache_logger_on_first_use=True,
    )
    return logger.bind(**bind) if bind else logger


def flush_logs(log) -> None:
    """Write the lines a ``batched`` logger still holds (at shutdown); no-op otherwise."""
    flush = getattr(getattr(log, "_logger", None), "flush", None)
    if callable(flush):
        flush()


def _escape_fields(_logger, _name, event: dict) -> dict:
    return {k: _escaped(v) for k, v in event.items()}


def _escaped(v: Any) -> Any:
    if isinstance(v, str):
        return escape(v)
    if v is None or isinstance(v, (bool, int, float)):
        return v
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_escaped(x) for x in v]
    if isinstance(v, dict):
        return {escape(str(k)): _escaped(x) for k, x in v.items()}
    return escape(str(v))


def _render_kv(_logger, _name, event: dict) -> str:
    keys = [k for k in _KEY_ORDER if k in event] + [k for k in event if k not in _KEY_ORDER]
    return " ".join(f"{escape(str(k))}={_kv(event[k])}" for k in keys)


def _kv(v: Any) -> str:
    if isinstance(v, str):
        return "'" + escape(v.replace("\\", "\\\\").replace("'", "\\'")) + "'"
    if v is None or isinstance(v, (bool, int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_kv(x) for x in v) + "]"
    if isinstance(v, tuple):
        return "(" + ", ".join(_kv(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_kv(k)}: {_kv(x)}" for k, x in v.items()) + "}"
    return escape(repr(v))


# --- the standard logging module into the same log ---

_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_STD_LEVELS = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)


class _ToStructlog(logging.Handler):
    """A stdlib handler that writes each record as an event of a structlog logger."""

    def __init__(self, log) -> None:
        super().__init__()
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = {k: v for k, v in vars(record).items()
                      if k not in _RECORD_ATTRS and not k.startswith("_")}
            if record.exc_info and record.exc_info[0] is not None:
                fields["exc_info"] = record.exc_info
            level = max([lv for lv in _STD_LEVELS if lv <= record.levelno] or [logging.DEBUG])
            self.log.log(level, record.getMessage(), logger=record.name, **fields)
        except Exception:
            self.handleError(record)


def route_stdlib(log, level: str = "info") -> logging.Handler | None:
    """Add ``log`` (from make_logger) as a handler of the root logger, at ``level``
    (aiosmtpd's ``mail.log`` at "warning" unless ``level`` is "debug"); ``warnings`` go there
    too. ``route_stdlib(None)`` removes it again. Returns the handler installed."""
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, _ToStructlog)]:
        root.removeHandler(h)
    if log is None:
        logging.captureWarnings(False)
        return None
    handler = _ToStructlog(log)
    root.addHandler(handler)
    root.setLevel(_LEVELS[level])
    logging.getLogger("mail.log").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
    logging.captureWarnings(True)
    return handler
