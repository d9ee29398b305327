"""The studio's one error family. A failure that a user or an operator can act on is a ``CodedError``: a
stable ``code`` (the API's ``error`` field, registered in ``app.web.errors``) and a ``message`` that says
what happened and what to do. One that passes by itself (a busy server, a store that is down or full) is
a ``RetryableError`` and says after how many seconds to try again.

The core raises them; ``app.web`` answers each by its base class, so no view catches a core error
itself, and the command line prints the message and exits 2. This module imports nothing of the app.
"""

from __future__ import annotations

from typing import Any, Dict, Optional


class CodedError(Exception):
    """A failure with a stable ``code`` and a ``message`` in plain words; ``details`` are further fields
    for the API's JSON answer (for example a place in line)."""

    def __init__(self, code: str, message: str, details: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = dict(details or {})


class RetryableError(CodedError):
    """A failure that passes: try again after ``retry_after`` seconds."""

    def __init__(self, code: str, message: str, retry_after: int = 5,
                 details: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(code, message, details)
        self.retry_after = retry_after
