"""The one base class of the errors a user causes and can fix.

A bad config, a file that is not data, a target that fits no task, a batch the contract refuses, a
model the registry does not have: each is reported as one message, without a traceback, and the
command exits with the error's `exit_status`. Every such error subclasses `UserError` (and keeps
its builtin base, `ValueError` or `RuntimeError`, for code that catches those), so the CLI needs
no hand-kept list of them.
"""

from __future__ import annotations

EXIT_ERROR = 1


class UserError(Exception):
    """An error the user can fix: its message says what and how; `exit_status` is the command's."""

    exit_status: int = EXIT_ERROR
