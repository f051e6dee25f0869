"""A ``logging.Handler`` that sends log records to tierlog as audit events, so that
existing ``logger.info("...", extra={...})`` audit calls need no change.

The record's ``extra`` fields named like event fields (``category``, ``action``,
``status``, ``user_id``, ``details``, ``changes``, ...) become those fields; any other
``extra`` goes into ``details``. The message is the record's message, the level its
level, the logger its logger's name, the timestamp its creation time. A record
without ``category`` gets ``default_category``.

    audit = logging.getLogger("app.audit")
    audit.addHandler(AuditHandler(client))
    audit.warning("invalid password", extra={"category": "auth", "action": "auth.login_failed",
                                             "status": "failure", "user_id": "u-42"})
"""

from __future__ import annotations

import datetime as _dt
import logging
from typing import Any, Dict

from .client import AuditClient

FIELDS = {
    "id", "timestamp", "category", "level", "event_type", "action", "status", "tenant_id",
    "application", "user_id", "username", "email", "resource", "resource_id", "ip_address",
    "user_agent", "request_id", "session_id", "details", "changes", "security", "financial",
}
# What every LogRecord has, so that the rest is what the caller put in ``extra``.
_STANDARD = set(vars(logging.LogRecord("x", logging.INFO, "x", 1, "x", None, None))) | {"message", "asctime", "taskName"}
_LEVELS = {logging.DEBUG: "DEBUG", logging.INFO: "INFO", logging.WARNING: "WARNING", logging.ERROR: "ERROR",
           logging.CRITICAL: "CRITICAL"}


def _level(levelno: int) -> str:
    for number in sorted(_LEVELS, reverse=True):
        if levelno >= number:
            return _LEVELS[number]
    return "DEBUG"


class AuditHandler(logging.Handler):
    """Sends each record to ``client`` (which batches and retries in the background:
    ``emit`` never waits for the network)."""

    def __init__(self, client: AuditClient, level: int = logging.NOTSET, default_category: str = "audit"):
        super().__init__(level)
        self.client = client
        self.default_category = default_category

    def event(self, record: logging.LogRecord) -> Dict[str, Any]:
        """The audit event for ``record``."""
        event: Dict[str, Any] = {
            "category": self.default_category,
            "level": _level(record.levelno),
            "logger": record.name,
            "message": record.getMessage(),
            "timestamp": _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc)
            .isoformat(timespec="microseconds").replace("+00:00", "Z"),
        }
        details: Dict[str, Any] = {}
        for name, value in vars(record).items():
            if name in _STANDARD or name.startswith("_"):
                continue
            if name in FIELDS:
                event[name] = value
            else:
                details[name] = value
        if details:
            merged = dict(details)
            merged.update(event.get("details") or {})
            event["details"] = merged
        if record.exc_info and record.exc_info[0] is not None:
            event.setdefault("details", {})["exception"] = self.format(record).splitlines()[-1][:1000]
        return event

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.client.send(self.event(record))
        except Exception:  # noqa: BLE001 - logging must not raise
            self.handleError(record)

    def flush(self) -> None:
        self.client.flush(timeout=5)
