"""structlog, configured once per process: JSON lines in production, a readable console locally."""

from __future__ import annotations

import logging
import sys

import structlog

from consumers.platform.settings import LogFormat, LogLevel


def configure_logging(level: LogLevel = "INFO", fmt: LogFormat = "auto") -> None:
    """Route structlog (and the stdlib loggers of aiokafka/asyncpg) to stderr.

    ``auto`` picks the console renderer when stderr is a terminal, JSON otherwise, so a pod
    always emits JSON and a developer's shell does not.
    """
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info if use_json else _keep_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        # each line in one write (print() writes the line and its newline apart): processes
        # sharing one stream (cie consume --processes N) never splice their lines
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Library loggers (aiokafka, asyncpg) go through the same renderer, at WARNING and above.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processor=renderer)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(logging.WARNING, logging.getLevelName(level)))


def _keep_exc_info(
    logger: object, name: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    return event  # the console renderer formats exceptions itself
