"""Structured logs: one event per line, key=value (default) or JSON, the queue ID in every line
about a message. Built with structlog but without its global configure(): the logger is an object
made from the configuration and passed to each stage (STYLE.md habit 7).
"""
from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def make_logger(level: str = "info", fmt: str = "kv", stream: TextIO | None = None,
                **bind) -> structlog.BoundLoggerBase:
    """A bound logger writing to ``stream`` (stderr by default). ``fmt`` is "kv" or "json"."""
    render = (structlog.processors.JSONRenderer() if fmt == "json"
              else structlog.processors.KeyValueRenderer(key_order=["ts", "level", "event", "queue_id"],
                                                         drop_missing=True))
    logger = structlog.wrap_logger(
        structlog.PrintLogger(stream or sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            structlog.processors.format_exc_info,
            render,
        ],
        cache_logger_on_first_use=True,
    )
    return logger.bind(**bind) if bind else logger
