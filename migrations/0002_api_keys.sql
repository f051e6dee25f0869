-- API keys: random secrets shown once; only their SHA-256 digest is stored. A key is
-- bound to one tenant or (tenant_id NULL) to all tenants, carries permissions, may
-- expire and may be revoked. Rows are never deleted, so audit records keep resolving.

CREATE TABLE api_keys (
    id           uuid        PRIMARY KEY,
    name         text        NOT NULL,
    key_prefix   text        NOT NULL,
    key_hash     bytea       NOT NULL UNIQUE,
    tenant_id    text,
    permissions  text[]      NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text        NOT NULL,
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);

CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at DESC);
