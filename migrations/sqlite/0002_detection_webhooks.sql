-- Detection rules saved through PUT /audit/rules, and webhook endpoints with their
-- outbox (src/webhooks). The same statements run on the embedded store (SQLite),
-- so ids are text, flags integers and times milliseconds since 1970 taken from
-- tierlog's clock (retries and dead-lettering follow the service's time).

-- Overrides laid over the configured rules by name: scope '*' is the deployment's,
-- any other scope a tenant's. `rules` is a JSON array of rules.
CREATE TABLE detection_rules (
    scope      TEXT PRIMARY KEY,
    rules      TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Where a tenant's alerts go. `secret` signs each message (Standard Webhooks); it
-- is shown once, when the endpoint is created. `rules` and `categories` are JSON
-- arrays of names (empty: every alert).
CREATE TABLE webhook_endpoints (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    url         TEXT NOT NULL,
    secret      TEXT NOT NULL,
    description TEXT,
    rules       TEXT NOT NULL DEFAULT '[]',
    categories  TEXT NOT NULL DEFAULT '[]',
    enabled     INTEGER NOT NULL DEFAULT 1,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id);

-- The outbox: one message per endpoint and alert, written in the alert's own
-- transaction. `state`: pending, delivered or dead. `id` is the webhook-id every
-- attempt carries, so receivers can drop repeats.
CREATE TABLE webhook_messages (
    id              TEXT PRIMARY KEY,
    endpoint_id     TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    tenant_id       TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    -- Retries stop (the message is dead-lettered) after this; a redelivery moves it.
    retry_until     BIGINT,
    last_attempt_at BIGINT,
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    BIGINT,
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX webhook_messages_due ON webhook_messages (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_messages_endpoint ON webhook_messages (endpoint_id, created_at);
