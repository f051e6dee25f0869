"""The request an audit event is recorded in: its id, client address and user agent,
set by the ASGI middleware (``tierlog.asgi``) and read by ``AuditClient.send``."""

from __future__ import annotations

import contextvars
from typing import Dict, Optional

_request: contextvars.ContextVar[Dict[str, Optional[str]]] = contextvars.ContextVar("tierlog_request", default={})


def current_request() -> Dict[str, Optional[str]]:
    """``request_id``, ``ip_address`` and ``user_agent`` of the current request
    (empty outside one)."""
    return _request.get()


def set_request(fields: Dict[str, Optional[str]]) -> contextvars.Token:
    """Makes ``fields`` the current request's until ``reset_request(token)``."""
    return _request.set(fields)


def reset_request(token: contextvars.Token) -> None:
    _request.reset(token)
