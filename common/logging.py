"""structlog set-up: JSON lines in production, readable console output in dev."""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

_SECRET_KEYS = ("token", "password", "secret", "master_key", "private_key", "authorization")


def _redact(
    _logger: object, _method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    for key in list(event):
        if any(marker in key.lower() for marker in _SECRET_KEYS):
            event[key] = "***"
    return event


class _StderrLogger:
    """Writes each line to the *current* ``sys.stderr`` (it may be replaced after set-up, e.g.
    by a test harness or a daemoniser), never to a stream captured at configuration time."""

    def msg(self, message: str) -> None:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def _stderr_logger_factory(*_args: object) -> _StderrLogger:
    return _StderrLogger()


class _StderrHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def configure_logging(
    level: str = "INFO", fmt: Literal["auto", "console", "json"] = "auto", *, dev: bool = True
) -> None:
    if fmt == "auto":
        fmt = "console" if dev and sys.stderr.isatty() else "json"
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer()
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=_stderr_logger_factory,
        cache_logger_on_first_use=False,
    )
    # Route the standard library's loggers (uvicorn, sqlalchemy, alembic) the same way.
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("alembic.runtime.migration",):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
