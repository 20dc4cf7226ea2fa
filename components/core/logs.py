"""The one way the project quiets library log records: expected outcomes in one line.

A batch the contract rejects, a file with bad rows, a client's invalid request: libraries log
these with a traceback (Prefect's run loggers, BentoML's HTTP app) as if the program had crashed.
`quiet` installs, once per process and logger, a filter that rewrites such a record into the one
line `rewrite` returns (dropping the traceback, and lowering its level where asked), or drops it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Final

DROP: Final = object()  # `rewrite`'s answer for a record to leave out altogether

Rewrite = Callable[[logging.LogRecord], "str | object | None"]  # the new line, DROP, or None: unchanged
PREFECT_RUN_LOGGERS = ("prefect.task_runs", "prefect.flow_runs")


class _Rewriting(logging.Filter):
    def __init__(self, key: str, rewrite: Rewrite, level: int | None) -> None:
        super().__init__()
        self.key, self.rewrite, self.level = key, rewrite, level

    def filter(self, record: logging.LogRecord) -> bool:
        line = self.rewrite(record)
        if line is DROP:
            return False
        if isinstance(line, str):
            record.msg, record.args, record.exc_info, record.exc_text = line, (), None, None
            if self.level is not None:
                record.levelno, record.levelname = self.level, logging.getLevelName(self.level)
        return True


def quiet(key: str, loggers: Iterable[str], rewrite: Rewrite, *, level: int | None = None) -> None:
    """Rewrite the records `rewrite` recognises on each of `loggers`; installed once per `key`."""
    for name in loggers:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Rewriting) and f.key == key for f in logger.filters):
            logger.addFilter(_Rewriting(key, rewrite, level))


def exception_of(record: logging.LogRecord) -> BaseException | None:
    """The exception a record carries, if any."""
    return record.exc_info[1] if record.exc_info else None
