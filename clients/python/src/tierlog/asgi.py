"""ASGI middleware (FastAPI, Starlette, any ASGI app): makes each request's id,
client address and user agent the current request's, so that the audit events
recorded while it runs carry them.

They are found the way tierlog finds its own callers':

- the request id is the ``X-Request-ID`` header (at most 128 characters), or a new
  UUID when there is none, which is also sent back in the response's ``X-Request-ID``;
- the client address is the direct peer's, unless the peer is a trusted proxy
  (``trusted_proxies``: addresses or networks): then ``X-Forwarded-For`` is walked
  from the nearest hop back and the first hop that is not a trusted proxy is the
  client (an entry that is not an address ends the walk at the peer), and without
  that header ``X-Real-IP``;
- the user agent is the ``User-Agent`` header, at most 512 characters.

    app = FastAPI()
    app.add_middleware(AuditContextMiddleware, trusted_proxies=["10.0.0.0/8"])
"""

from __future__ import annotations

import ipaddress
import uuid
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Optional

from .context import reset_request, set_request

Scope = Dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Dict[str, Any]]], Callable[[Dict[str, Any]], Awaitable[None]]], Awaitable[None]]


def _ip(text: str):
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def client_address(peer: Optional[str], headers: Dict[str, List[str]], trusted: Iterable[Any]) -> Optional[str]:
    """The client address of a request from ``peer``, as tierlog decides it."""
    trusted = list(trusted)
    peer_ip = _ip(peer) if peer else None
    if peer_ip is None:
        return None

    def is_trusted(ip) -> bool:
        return any(ip in net for net in trusted)

    if not is_trusted(peer_ip):
        return str(peer_ip)
    hops = [hop.strip() for value in headers.get("x-forwarded-for", []) for hop in value.split(",")]
    for hop in reversed(hops):
        ip = _ip(hop)
        if ip is None:
            return str(peer_ip)
        if not is_trusted(ip):
            return str(ip)
    for value in headers.get("x-real-ip", [])[:1]:
        ip = _ip(value)
        if ip is not None:
            return str(ip)
    return str(peer_ip)


class AuditContextMiddleware:
    """Sets the current request's id, client address and user agent (see above)."""

    def __init__(self, app: ASGIApp, trusted_proxies: Iterable[str] = ()):
        self.app = app
        self.trusted = [ipaddress.ip_network(net, strict=False) for net in trusted_proxies]

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers: Dict[str, List[str]] = {}
        for name, value in scope.get("headers", []):
            headers.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        request_id = (headers.get("x-request-id") or [None])[0]
        request_id = request_id[:128] if request_id else str(uuid.uuid4())
        user_agent = (headers.get("user-agent") or [None])[0]
        client = scope.get("client") or (None, None)
        fields = {
            "request_id": request_id,
            "ip_address": client_address(client[0], headers, self.trusted),
            "user_agent": user_agent[:512] if user_agent else None,
        }

        async def send_with_id(message: Dict[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                if b"x-request-id" not in names:
                    message = dict(message)
                    message["headers"] = list(message.get("headers", [])) + [(b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        token = set_request(fields)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            reset_request(token)
