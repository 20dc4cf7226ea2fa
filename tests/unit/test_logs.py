"""One way to quiet library log records: rewritten to one line, dropped, or left alone."""

from __future__ import annotations

import logging

import pytest

from components.core.logs import DROP, exception_of, quiet


def test_records_are_rewritten_dropped_or_left_and_installed_once(caplog: pytest.LogCaptureFixture) -> None:
    def rewrite(record: logging.LogRecord) -> object:
        exc = exception_of(record)
        if isinstance(exc, KeyError):
            return f"expected: {exc}"
        return DROP if record.getMessage() == "noise" else None

    name = "tests.quiet"
    quiet("k", [name], rewrite, level=logging.INFO)
    quiet("k", [name], rewrite, level=logging.INFO)  # idempotent
    logger = logging.getLogger(name)
    assert len(logger.filters) == 1
    with caplog.at_level(logging.DEBUG, logger=name):
        try:
            raise KeyError("id 7")
        except KeyError:
            logger.exception("crashed")
        logger.warning("noise")
        logger.warning("kept %s", "as is")
    lines = [(r.levelname, r.getMessage(), r.exc_info) for r in caplog.records]
    assert lines == [("INFO", "expected: 'id 7'", None), ("WARNING", "kept as is", None)]
    logger.filters.clear()
