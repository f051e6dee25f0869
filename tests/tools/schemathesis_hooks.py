"""What JSON Schema cannot say about tierlog's inputs, taught to Schemathesis.

Every rule a schema can state is in /openapi.json; these are the ones it cannot, each
also stated in the schema's descriptions and the README:

- time relative to now: an event's `timestamp` at most `limits.max_future_seconds`
  ahead of the server's clock; a new key's `expires_at` in the future;
- values the server issues: `cursor` is the `next_cursor` of an earlier page;
- numbers inside free-form `details` / `changes` must be kept exactly by every tier
  (no negative zero, integers within 64 bits), and their strings hold no NUL;
- a webhook URL must not name an internal address and its secret must be base64 of
  24-64 bytes (the pattern cannot check the padding); an all-tenant key (the tests'
  key) names the endpoint's tenant, and an endpoint keeps its tenant;
- a detection rule's fields depend on its `kind` (a threshold rule needs a threshold
  and a window, an amount rule a limit or a factor, ...).

The hooks change only generated *valid* (positive) cases, so negative testing still
sends whatever breaks the schema.
"""

import base64
import datetime
import json
import uuid

import schemathesis

MAX_INT = 2**63 - 1


def _positive(context):
    case = getattr(context, "case", None)
    meta = getattr(case, "meta", None) if case is not None else None
    generation = getattr(meta, "generation", None) if meta is not None else None
    mode = getattr(generation, "mode", None)
    return mode is None or getattr(mode, "is_positive", True)


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _exact(value):
    """A free-form JSON value every tier keeps exactly."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return max(-MAX_INT - 1, min(MAX_INT, value))
    if isinstance(value, float):
        return 0.0 if value == 0 else value
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_exact(v) for v in value]
    if isinstance(value, dict):
        return {k.replace("\x00", ""): _exact(v) for k, v in value.items()}
    return value


def _timestamp(raw):
    try:
        at = datetime.datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        return raw
    if at.tzinfo is None:
        return raw
    return raw if at <= _now() else _now().isoformat()


def _event(item):
    if not isinstance(item, dict):
        return item
    for field in ("details", "changes"):
        if isinstance(item.get(field), dict):
            item[field] = _exact(item[field])
    if "timestamp" in item and item["timestamp"] is not None:
        item["timestamp"] = _timestamp(item["timestamp"])
    return item


@schemathesis.hook
def map_body(context, body):
    if not _positive(context):
        return body
    path = context.operation.path
    if path == "/audit/events":
        if isinstance(body, list):
            return [_event(item) for item in body]
        return _event(body)
    if path == "/audit/keys" and isinstance(body, dict) and body.get("expires_at"):
        body["expires_at"] = (_now() + datetime.timedelta(days=1)).isoformat()
    if path in ("/audit/webhooks", "/audit/webhooks/{id}") and isinstance(body, dict):
        body["url"] = "https://hooks.example.com/tierlog"
        if path == "/audit/webhooks" and body.get("tenant_id") is None:
            body["tenant_id"] = "acme"
        if path == "/audit/webhooks/{id}":
            body.pop("tenant_id", None)
        if body.get("secret") is not None:
            body["secret"] = "whsec_" + base64.b64encode(uuid.uuid4().bytes + uuid.uuid4().bytes).decode()
    if path == "/audit/rules" and isinstance(body, dict):
        body["rules"] = [{
            "name": "schemathesis-threshold", "kind": "threshold", "when": {"categories": ["auth"], "status": "failure"},
            "group_by": ["user_id"], "threshold": 3, "window_seconds": 600,
        }]
    return body


@schemathesis.hook
def map_query(context, query):
    if _positive(context) and isinstance(query, dict) and context.operation.path == "/audit/reports":
        # A period the server takes: to after from, within retention (the defaults:
        # the last 30 days). The refusals are tests/api/reports.rs's.
        query.pop("from", None)
        query.pop("to", None)
    if _positive(context) and isinstance(query, dict) and "cursor" in query:
        # A position such as the server issues: base64url of {"t": microseconds, "id"}.
        position = {"t": 1_800_000_000_000_000, "id": str(uuid.UUID(int=0))}
        text = json.dumps(position, separators=(",", ":")).encode()
        query["cursor"] = base64.urlsafe_b64encode(text).decode().rstrip("=")
    return query
