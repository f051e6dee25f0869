"""tierlog's Python client: ``AuditClient`` (typed helpers, batching, retries with the
same event ids, a bounded buffer that reports what it drops), ``AuditHandler`` for
the ``logging`` module, and ``AuditContextMiddleware`` for ASGI apps."""

from .asgi import AuditContextMiddleware, client_address
from .client import AuditClient, RejectedEvent
from .context import current_request
from .handler import AuditHandler

__all__ = ["AuditClient", "AuditContextMiddleware", "AuditHandler", "RejectedEvent", "client_address", "current_request"]
__version__ = "0.1.0"
