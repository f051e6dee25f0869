"""The client against a real tierlog (started by tests/api/python_client.rs), each
event checked where tierlog keeps it: Postgres, Redis and the JSON-lines files.

Environment: TIERLOG_URL, TIERLOG_KEY, TIERLOG_DATABASE_URL, TIERLOG_REDIS_URL,
TIERLOG_REDIS_EVENTS_KEY (with @TENANT@ and @CATEGORY@ in it), TIERLOG_FILES_DIR.
"""

import asyncio
import glob
import http.server
import json
import logging
import os
import threading
import time
import urllib.request
import uuid

import psycopg
import pytest
import redis
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from tierlog import AuditClient, AuditContextMiddleware, AuditHandler, client_address

URL = os.environ["TIERLOG_URL"]
KEY = os.environ["TIERLOG_KEY"]


@pytest.fixture
def tenant():
    return f"py-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def client(tenant):
    audit = AuditClient(URL, KEY, tenant_id=tenant, application="pytest", flush_interval=0.05, close_at_exit=False)
    yield audit
    audit.close()


def db_row(table, event_id):
    with psycopg.connect(os.environ["TIERLOG_DATABASE_URL"]) as conn:
        row = conn.execute(
            f"SELECT tenant_id, action, user_id, host(ip_address), details, changes FROM {table} WHERE id = %s",
            (event_id,),
        ).fetchall()
    return row


def hot(tenant, category):
    key = os.environ["TIERLOG_REDIS_EVENTS_KEY"].replace("@TENANT@", tenant).replace("@CATEGORY@", category)
    return [json.loads(line) for line in redis.Redis.from_url(os.environ["TIERLOG_REDIS_URL"]).lrange(key, 0, -1)]


def filed(event_id):
    lines = []
    for path in sorted(glob.glob(os.path.join(os.environ["TIERLOG_FILES_DIR"], "*.jsonl"))):
        with open(path) as f:
            lines.extend(json.loads(line) for line in f if event_id in line)
    return [e for e in lines if e["id"] == event_id]


def test_helpers_land_in_every_tier(client, tenant):
    ids = {
        "failed": client.login_failed("u-1", reason="invalid password", ip_address="203.0.113.9"),
        "ok": client.login_succeeded("u-1", ip_address="203.0.113.9"),
        "locked": client.account_locked("u-1", failures=5),
        "logout": client.logout("u-1"),
        "password": client.password_changed("u-1"),
        "created": client.entity_created("invoice", "inv-1", {"status": "draft"}, user_id="u-2"),
        "updated": client.entity_updated("invoice", "inv-1", {"status": "draft"}, {"status": "sent"}, user_id="u-2"),
        "deleted": client.entity_deleted("invoice", "inv-1", {"status": "sent"}, user_id="u-2"),
        "money": client.financial_transaction("tx-1", "99.50", "EUR", account_id="acc-1", user_id="u-2"),
    }
    assert client.flush(timeout=20)
    assert client.sent == len(ids) and client.dropped == 0 and client.rejected == 0

    [(row_tenant, action, user, ip, details, _)] = db_row("audit_logs", ids["failed"])
    assert (row_tenant, action, user, ip) == (tenant, "auth.login_failed", "u-1", "203.0.113.9")
    assert details["reason"] == "invalid password"
    [(_, action, _, _, _, changes)] = db_row("audit_logs", ids["updated"])
    assert action == "invoice.updated"
    assert changes == {"before": {"status": "draft"}, "after": {"status": "sent"}}
    assert db_row("audit_logs", ids["locked"])[0][1] == "auth.account_locked"
    [(_, action, _, _, _, _)] = db_row("financial_audit_logs", ids["money"])
    assert action == "payment.transfer"

    in_redis = {e["id"]: e for e in hot(tenant, "auth")}
    assert {ids["failed"], ids["ok"], ids["locked"], ids["logout"], ids["password"]} <= set(in_redis)
    assert in_redis[ids["failed"]]["level"] == "WARNING"
    assert any(e["id"] == ids["money"] for e in hot(tenant, "financial"))

    for event_id in ids.values():
        [line] = filed(event_id)
        assert line["tenant_id"] == tenant and line["application"] == "pytest"
    assert filed(ids["money"])[0]["financial"] == {
        "transaction_id": "tx-1", "amount": "99.50", "currency": "EUR", "account_id": "acc-1"}


class Flaky(http.server.BaseHTTPRequestHandler):
    """Forwards to tierlog, but answers 503 after forwarding the first two requests
    (an acknowledgement lost on the way), and records the ids of every request."""

    seen = []
    lost = 2

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type", "content-encoding")}
        with urllib.request.urlopen(urllib.request.Request(URL + self.path, data=body, headers=headers)) as r:
            answer = r.read()
        raw = body
        if self.headers.get("Content-Encoding") == "gzip":
            import gzip
            raw = gzip.decompress(body)
        Flaky.seen.append([e["id"] for e in json.loads(raw)])
        if Flaky.lost > 0:
            Flaky.lost -= 1
            self.send_response(503)
            self.send_header("Retry-After", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def test_a_retry_sends_the_same_ids_and_tierlog_stores_them_once(tenant):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        audit = AuditClient(f"http://127.0.0.1:{server.server_port}", KEY, tenant_id=tenant, backoff_base=0.05,
                            flush_interval=0.05, close_at_exit=False)
        ids = [audit.login_failed(f"u-{i}") for i in range(3)]
        assert audit.flush(timeout=20)
        audit.close()
    finally:
        server.shutdown()
    # Three attempts, each with the same events.
    assert len(Flaky.seen) == 3 and all(sorted(s) == sorted(ids) for s in Flaky.seen), Flaky.seen
    for event_id in ids:
        assert len(db_row("audit_logs", event_id)) == 1
        assert len(filed(event_id)) == 1
    assert sum(1 for e in hot(tenant, "auth") if e["id"] in ids) == 3


def test_a_full_buffer_reports_what_it_drops(tenant):
    dropped = []
    # Nothing listens there: every batch waits to be sent again.
    audit = AuditClient("http://127.0.0.1:9", KEY, tenant_id=tenant, max_buffer=5, batch_size=100,
                        flush_interval=60, backoff_base=60, on_drop=dropped.append, close_at_exit=False)
    ids = [audit.login_succeeded(f"u-{i}") for i in range(8)]
    assert audit.dropped == 3
    assert [e["id"] for e in dropped] == ids[5:]
    # Closing cannot reach tierlog either: the five buffered are reported too.
    assert audit.close(timeout=0.5) is False
    assert audit.dropped == 8 and len(dropped) == 8


def test_invalid_events_are_reported_and_the_rest_is_sent(client, tenant):
    errors = []
    client.on_error = errors.append
    good = client.login_succeeded("u-1")
    bad = client.send({"category": "nonsense", "action": "x.y"})
    also_good = client.logout("u-1")
    assert client.flush(timeout=20)
    assert [e.event["id"] for e in errors] == [bad]
    assert "category" in errors[0].reasons[0]
    assert client.rejected == 1 and client.sent == 2
    assert len(db_row("audit_logs", good)) == 1 and len(db_row("audit_logs", also_good)) == 1
    assert filed(bad) == []


def test_the_logging_handler_sends_existing_audit_calls(client, tenant):
    logger = logging.getLogger(f"app.audit.{tenant}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(AuditHandler(client))
    logger.warning("invalid password", extra={"category": "auth", "action": "auth.login_failed", "status": "failure",
                                              "user_id": "u-9", "ip_address": "198.51.100.7", "attempt": 3})
    logger.info("role changed", extra={"action": "user.role_changed", "resource": "user", "resource_id": "u-3",
                                       "changes": {"before": {"role": "member"}, "after": {"role": "admin"}}})
    assert client.flush(timeout=20)
    events = [e for e in hot(tenant, "auth")] + [e for e in hot(tenant, "audit")]
    failed = next(e for e in events if e["action"] == "auth.login_failed")
    assert failed["level"] == "WARNING" and failed["logger"] == f"app.audit.{tenant}"
    assert failed["message"] == "invalid password" and failed["details"] == {"attempt": 3}
    assert failed["ip_address"] == "198.51.100.7"
    role = next(e for e in events if e["action"] == "user.role_changed")
    assert role["category"] == "audit"
    [(_, _, _, _, _, changes)] = db_row("audit_logs", role["id"])
    assert changes["after"] == {"role": "admin"}


def test_the_asgi_middleware_fills_request_id_address_and_agent(client, tenant):
    async def login(request):
        return JSONResponse({"id": client.login_failed("u-7")})

    app = Starlette(routes=[Route("/login", login, methods=["POST"])])
    app.add_middleware(AuditContextMiddleware, trusted_proxies=["10.0.0.0/8"])
    web = TestClient(app)
    response = web.post("/login", headers={"X-Request-ID": "req-abc", "User-Agent": "pytest-agent/1"})
    assert response.headers["x-request-id"] == "req-abc"
    event_id = response.json()["id"]
    # Without a request id one is made and sent back.
    generated = web.post("/login")
    assert uuid.UUID(generated.headers["x-request-id"])
    assert client.flush(timeout=20)
    [line] = filed(event_id)
    assert line["request_id"] == "req-abc" and line["user_agent"] == "pytest-agent/1"
    [other] = filed(generated.json()["id"])
    assert other["request_id"] == generated.headers["x-request-id"]


def test_the_asgi_middleware_believes_forwarded_addresses_only_from_trusted_proxies(client, tenant):
    seen = {}

    async def app(scope, receive, send):
        seen["id"] = client.login_succeeded("u-8")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = AuditContextMiddleware(app, trusted_proxies=["10.0.0.0/8"])

    async def call(peer, headers):
        sent = []

        async def receive():
            return {"type": "http.request", "body": b""}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "client": (peer, 5000), "headers": [(k.encode(), v.encode()) for k, v in headers]}
        await middleware(scope, receive, send)
        return seen["id"]

    through_proxy = asyncio.run(call("10.0.0.2", [("x-forwarded-for", "203.0.113.5, 10.0.0.9")]))
    forged = asyncio.run(call("198.51.100.1", [("x-forwarded-for", "203.0.113.5")]))
    assert client.flush(timeout=20)
    assert filed(through_proxy)[0]["ip_address"] == "203.0.113.5"
    assert filed(forged)[0]["ip_address"] == "198.51.100.1"
    # The same decisions as tierlog's own (src/http/extract.rs).
    import ipaddress
    nets = [ipaddress.ip_network("10.0.0.0/8")]
    assert client_address("10.0.0.2", {"x-real-ip": ["192.0.2.8"]}, nets) == "192.0.2.8"
    assert client_address("10.0.0.2", {"x-forwarded-for": ["not-an-ip"]}, nets) == "10.0.0.2"
    assert client_address("10.0.0.2", {"x-forwarded-for": ["198.51.100.1, 192.0.2.7, 10.0.0.9"]}, nets) == "192.0.2.7"


def test_close_sends_what_is_buffered(tenant):
    audit = AuditClient(URL, KEY, tenant_id=tenant, flush_interval=60, batch_size=1000, close_at_exit=False)
    ids = [audit.logout(f"u-{i}") for i in range(20)]
    started = time.monotonic()
    assert audit.close() is True
    assert time.monotonic() - started < 10
    assert all(len(filed(i)) == 1 for i in ids)
