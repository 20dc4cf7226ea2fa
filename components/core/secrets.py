"""Passwords stay out of everything the project writes or shows.

A data source or a server given as a URL can carry a password (`postgresql://user:pw@host/db`,
`https://user:token@mlflow`). `redact` replaces it with `***` in any text: MLflow params,
Prefect flow parameters (the config serialises its source redacted), reports, manifests, error
messages and log lines (`install_log_redaction`). The password itself is better kept out of the
URL altogether: `with_password` fills a URL that names a user but no password from
`MLOPS_DATA_PASSWORD`, or the database driver reads its own variable (PGPASSWORD, ...).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

MASK = "***"
PASSWORD_VARIABLE = "MLOPS_DATA_PASSWORD"

# scheme://user:password@  (the user part may be empty: scheme://:token@host)
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s]*):(?P<password>[^@/?#\s]+)@")
# ...?password=...&  and the other spellings drivers accept in a query string
_QUERY = re.compile(r"(?P<head>[?&;](?:password|passwd|pwd|token|secret|api_key|apikey)=)(?P<value>[^&;#\s]+)", re.I)


def redact(text: str) -> str:
    """`text` with every URL password (and password-like query value) replaced by `***`."""
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
    return _QUERY.sub(lambda m: f"{m['head']}{MASK}", text)


def without_password(url: str) -> str:
    """`url` with its password removed (the user kept), for files people commit."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user.split(':', 1)[0]}@{host}"))


def has_password(url: str) -> bool:
    return redact(url) != url


def with_password(url: str, environ: Mapping[str, str]) -> str:
    """`url` with the password from `MLOPS_DATA_PASSWORD` when it names a user and no password."""
    password = environ.get(PASSWORD_VARIABLE)
    if not password or "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.username is None or parts.password is not None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))


_installed = False


def install_log_redaction() -> None:
    """Every log record of this process has its message redacted as it is made (once per process).

    A record factory, not a handler filter: it covers the handlers Prefect and MLflow add later
    too, including Prefect's, which sends run logs to its API.
    """
    global _installed
    if _installed:
        return
    _installed = True
    make = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is the logging module's to report
            return record
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return record

    logging.setLogRecordFactory(factory)
