-- The embedded store's schema: the same tables, columns and rules as the Postgres
-- migrations (migrations/0001-0004), in SQLite's types. Instants are TEXT in one
-- fixed format (RFC 3339, UTC, microseconds), so they compare and sort as text;
-- JSON is TEXT; hashes are BLOBs; addresses also as a sortable key (CIDR filters).
-- Full-text search is an FTS5 index per table.


CREATE TABLE chain_heads (
    tenant_id   TEXT    NOT NULL,
    table_name  TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    head_hash   BLOB    NOT NULL,
    updated_at  TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, table_name)
);

-- While a transaction sets this to 1, the append-only triggers let retention and
-- erasure change rows; it is reset before the transaction commits.
CREATE TABLE tierlog_maintenance (on_ INTEGER NOT NULL);
INSERT INTO tierlog_maintenance (on_) VALUES (0);

CREATE TABLE audit_logs (
    tenant_id    TEXT    NOT NULL,
    seq          INTEGER NOT NULL,
    id           TEXT    NOT NULL,
    occurred_at  TEXT    NOT NULL,
    received_at  TEXT    NOT NULL,
    expires_at   TEXT    NOT NULL,
    category     TEXT    NOT NULL,
    level        TEXT    NOT NULL,
    logger       TEXT,
    message      TEXT,
    event_type   TEXT,
    action       TEXT,
    status       TEXT,
    application  TEXT,
    user_id      TEXT,
    username     TEXT,
    email        TEXT,
    resource     TEXT,
    resource_id  TEXT,
    ip_address   TEXT,
    -- The address as sortable text ('4:' + 8 hex digits or '6:' + 32), so that a
    -- CIDR filter is a range of text: exact and indexable.
    ip_key       TEXT,
    user_agent   TEXT,
    request_id   TEXT,
    session_id   TEXT,
    details      TEXT,
    changes      TEXT,
    security     TEXT,
    financial    TEXT,
    prev_hash    BLOB    NOT NULL,
    row_hash     BLOB    NOT NULL,
    pii_salt     BLOB,
    pii_hash     BLOB    NOT NULL,
    pii_paths    TEXT,
    PRIMARY KEY (tenant_id, seq),
    UNIQUE (id, tenant_id)
);
CREATE INDEX audit_logs_tenant_time ON audit_logs (tenant_id, occurred_at DESC, id);
CREATE INDEX audit_logs_user_time ON audit_logs (tenant_id, user_id, occurred_at DESC) WHERE user_id IS NOT NULL;
CREATE INDEX audit_logs_action_time ON audit_logs (tenant_id, action, occurred_at DESC);
CREATE INDEX audit_logs_ip ON audit_logs (tenant_id, ip_key) WHERE ip_key IS NOT NULL;
CREATE INDEX audit_logs_request ON audit_logs (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX audit_logs_status_time ON audit_logs (tenant_id, status, occurred_at DESC);
CREATE INDEX audit_logs_expiry ON audit_logs (expires_at);
CREATE INDEX audit_logs_about_user ON audit_logs (tenant_id, resource_id) WHERE resource = 'user';

CREATE VIRTUAL TABLE audit_logs_search USING fts5(message, action, details, content='audit_logs', content_rowid='rowid');
CREATE TRIGGER audit_logs_search_insert AFTER INSERT ON audit_logs BEGIN
    INSERT INTO audit_logs_search (rowid, message, action, details) VALUES (new.rowid, new.message, new.action, new.details);
END;
CREATE TRIGGER audit_logs_search_delete AFTER DELETE ON audit_logs BEGIN
    INSERT INTO audit_logs_search (audit_logs_search, rowid, message, action, details) VALUES ('delete', old.rowid, old.message, old.action, old.details);
END;
CREATE TRIGGER audit_logs_search_update AFTER UPDATE ON audit_logs BEGIN
    INSERT INTO audit_logs_search (audit_logs_search, rowid, message, action, details) VALUES ('delete', old.rowid, old.message, old.action, old.details);
    INSERT INTO audit_logs_search (rowid, message, action, details) VALUES (new.rowid, new.message, new.action, new.details);
END;

CREATE TRIGGER audit_logs_no_update BEFORE UPDATE ON audit_logs
    WHEN (SELECT on_ FROM tierlog_maintenance) IS NOT 1
BEGIN
    SELECT RAISE(ABORT, 'tierlog: UPDATE on audit_logs is not allowed: audit rows are append-only');
END;
CREATE TRIGGER audit_logs_no_delete BEFORE DELETE ON audit_logs
    WHEN (SELECT on_ FROM tierlog_maintenance) IS NOT 1
BEGIN
    SELECT RAISE(ABORT, 'tierlog: DELETE on audit_logs is not allowed: audit rows are append-only');
END;

CREATE TABLE security_events (
    tenant_id    TEXT    NOT NULL,
    seq          INTEGER NOT NULL,
    id           TEXT    NOT NULL,
    occurred_at  TEXT    NOT NULL,
    received_at  TEXT    NOT NULL,
    expires_at   TEXT    NOT NULL,
    category     TEXT    NOT NULL,
    level        TEXT    NOT NULL,
    logger       TEXT,
    message      TEXT,
    event_type   TEXT,
    action       TEXT,
    status       TEXT,
    application  TEXT,
    user_id      TEXT,
    username     TEXT,
    email        TEXT,
    resource     TEXT,
    resource_id  TEXT,
    ip_address   TEXT,
    -- The address as sortable text ('4:' + 8 hex digits or '6:' + 32), so that a
    -- CIDR filter is a range of text: exact and indexable.
    ip_key       TEXT,
    user_agent   TEXT,
    request_id   TEXT,
    session_id   TEXT,
    details      TEXT,
    changes      TEXT,
    security     TEXT,
    financial    TEXT,
    prev_hash    BLOB    NOT NULL,
    row_hash     BLOB    NOT NULL,
    pii_salt     BLOB,
    pii_hash     BLOB    NOT NULL,
    pii_paths    TEXT,
    security_event_type TEXT GENERATED ALWAYS AS (json_extract(security, '$.event_type')) STORED,
    severity            TEXT GENERATED ALWAYS AS (json_extract(security, '$.severity')) STORED,
    PRIMARY KEY (tenant_id, seq),
    UNIQUE (id, tenant_id)
);
CREATE INDEX security_events_tenant_time ON security_events (tenant_id, occurred_at DESC, id);
CREATE INDEX security_events_user_time ON security_events (tenant_id, user_id, occurred_at DESC) WHERE user_id IS NOT NULL;
CREATE INDEX security_events_action_time ON security_events (tenant_id, action, occurred_at DESC);
CREATE INDEX security_events_ip ON security_events (tenant_id, ip_key) WHERE ip_key IS NOT NULL;
CREATE INDEX security_events_request ON security_events (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX security_events_status_time ON security_events (tenant_id, status, occurred_at DESC);
CREATE INDEX security_events_expiry ON security_events (expires_at);
CREATE INDEX security_events_about_user ON security_events (tenant_id, resource_id) WHERE resource = 'user';

CREATE VIRTUAL TABLE security_events_search USING fts5(message, action, details, content='security_events', content_rowid='rowid');
CREATE TRIGGER security_events_search_insert AFTER INSERT ON security_events BEGIN
    INSERT INTO security_events_search (rowid, message, action, details) VALUES (new.rowid, new.message, new.action, new.details);
END;
CREATE TRIGGER security_events_search_delete AFTER DELETE ON security_events BEGIN
    INSERT INTO security_events_search (security_events_search, rowid, message, action, details) VALUES ('delete', old.rowid, old.message, old.action, old.details);
END;
CREATE TRIGGER security_events_search_update AFTER UPDATE ON security_events BEGIN
    INSERT INTO security_events_search (security_events_search, rowid, message, action, details) VALUES ('delete', old.rowid, old.message, old.action, old.details);
    INSERT INTO security_events_search (rowid, message, action, details) VALUES (new.rowid, new.message, new.action, new.details);
END;

CREATE TRIGGER security_events_no_update BEFORE UPDATE ON security_events
    WHEN (SELECT on_ FROM tierlog_maintenance) IS NOT 1
BEGIN
    SELECT RAISE(ABORT, 'tierlog: UPDATE on security_events is not allowed: audit rows are append-only');
END;
CREATE TRIGGER security_events_no_delete BEFORE DELETE ON security_events
    WHEN (SELECT on_ FROM tierlog_maintenance) IS NOT 1
BEGIN
    SELECT RAISE(ABORT, 'tierlog: DELETE on security_events is not allowed: audit rows are append-only');
END;

CREATE TABLE financial_audit_logs (
    tenant_id    TEXT    NOT NULL,
    seq          INTEGER NOT NULL,
    id           TEXT    NOT NULL,
    occurred_at  TEXT    NOT NULL,
    received_at  TEXT    NOT NULL,
    expires_at   TEXT    NOT NULL,
    category     TEXT    NOT NULL,
    level        TEXT    NOT NULL,
    logger       TEXT,
    message      TEXT,
    event_type   TEXT,
    action       TEXT,
    status       TEXT,
    application  TEXT,
    user_id      TEXT,
    username     TEXT,
    email        TEXT,
    resource     TEXT,
    resource_id  TEXT,
    ip_address   TEXT,
    -- The address as sortable text ('4:' + 8 hex digits or '6:' + 32), so that a
    -- CIDR filter is a range of text: exact and indexable.
    ip_key       TEXT,
    user_agent   TEXT,
    request_id   TEXT,
    session_id   TEXT,
    details      TEXT,
    changes      TEXT,
    security     TEXT,
    financial    TEXT,
    prev_hash    BLOB    NOT NULL,
    row_hash     BLOB    NOT NULL,
    pii_salt     BLOB,
    pii_hash     BLOB    NOT NULL,
    pii_paths    TEXT,
    transaction_id TEXT GENERATED ALWAYS AS (json_extract(financial, '$.transaction_id')) STORED,
    amount         REAL GENERATED ALWAYS AS (CAST(json_extract(financial, '$.amount') AS REAL)) STORED,
    currency       TEXT GENERATED ALWAYS AS (json_extract(financial, '$.currency')) STORED,
    account_id     TEXT GENERATED ALWAYS AS (json_extract(financial, '$.account_id')) STORED,
    PRIMARY KEY (tenant_id, seq),
    UNIQUE (id, tenant_id)
);
CREATE INDEX financial_audit_logs_tenant_time ON financial_audit_logs (tenant_id, occurred_at DESC, id);
CREATE INDEX financial_audit_logs_user_time ON financial_audit_logs (tenant_id, user_id, occurred_at DESC) WHERE user_id IS NOT NULL;
CREATE INDEX financial_audit_logs_action_time ON financial_audit_logs (tenant_id, action, occurred_at DESC);
CREATE INDEX financial_audit_logs_ip ON financial_audit_logs (tenant_id, ip_key) WHERE ip_key IS NOT NULL;
CREATE INDEX financial_audit_logs_request ON financial_audit_logs (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX financial_audit_logs_status_time ON financial_audit_logs (tenant_id, status, occurred_at DESC);
CREATE INDEX financial_audit_logs_expiry ON financial_audit_logs (expires_at);
CREATE INDEX financial_audit_logs_about_user ON financial_audit_logs (tenant_id, resource_id) WHERE resource = 'user';

CREATE VIRTUAL TABLE financial_audit_logs_search USING fts5(message, action, details, content='financial_audit_logs', content_rowid='rowid');
CREATE TRIGGER financial_audit_logs_search_insert AFTER INSERT ON financial_audit_logs BEGIN
    INSERT INTO financial_audit_logs_search (rowid, message, action, details) VALUES (new.rowid, new.message, new.action, new.details);
END;
CREATE TRIGGER financial_audit_logs_search_delete AFTER DELETE ON financial_audit_logs BEGIN
    INSERT INTO financial_audit_logs_search (financial_audit_logs_search, rowid, message, action, details) VALUES ('delete', old.rowid, old.message, old.action, old.details);
END;
CREATE TRIGGER financial_audit_logs_search_update AFTER UPDATE ON financial_audit_logs BEGIN
    INSERT INTO financial_audit_logs_search (financial_audit_logs_search, rowid, message, action, details) VALUES ('delete', old.rowid, old.message, old.action, old.details);
    INSERT INTO financial_audit_logs_search (rowid, message, action, details) VALUES (new.rowid, new.message, new.action, new.details);
END;

CREATE TRIGGER financial_audit_logs_no_update BEFORE UPDATE ON financial_audit_logs
    WHEN (SELECT on_ FROM tierlog_maintenance) IS NOT 1
BEGIN
    SELECT RAISE(ABORT, 'tierlog: UPDATE on financial_audit_logs is not allowed: audit rows are append-only');
END;
CREATE TRIGGER financial_audit_logs_no_delete BEFORE DELETE ON financial_audit_logs
    WHEN (SELECT on_ FROM tierlog_maintenance) IS NOT 1
BEGIN
    SELECT RAISE(ABORT, 'tierlog: DELETE on financial_audit_logs is not allowed: audit rows are append-only');
END;

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    key_prefix   TEXT NOT NULL,
    key_hash     BLOB NOT NULL UNIQUE,
    tenant_id    TEXT,
    -- JSON array of permission names.
    permissions  TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    expires_at   TEXT,
    revoked_at   TEXT,
    last_used_at TEXT
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at DESC);

CREATE TABLE chain_tombstones (
    tenant_id     TEXT    NOT NULL,
    table_name    TEXT    NOT NULL,
    seq           INTEGER NOT NULL,
    expires_at    TEXT    NOT NULL,
    deleted_at    TEXT    NOT NULL,
    prev_hash     BLOB    NOT NULL,
    content_hash  BLOB    NOT NULL,
    row_hash      BLOB    NOT NULL,
    run_id        TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, table_name, seq)
);

CREATE TABLE checkpoints (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id   TEXT    NOT NULL,
    table_name  TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    head_hash   TEXT    NOT NULL,
    created_at  TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    key_id      TEXT    NOT NULL,
    signature   TEXT    NOT NULL
);
CREATE INDEX checkpoints_chain ON checkpoints (tenant_id, table_name, seq);
CREATE INDEX checkpoints_time ON checkpoints (created_at DESC);

CREATE TABLE retention_plans (
    plan        TEXT PRIMARY KEY,
    days        TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE tenant_retention (
    tenant_id    TEXT PRIMARY KEY,
    plan         TEXT REFERENCES retention_plans (plan),
    days         TEXT NOT NULL DEFAULT '{}',
    legal_hold   INTEGER NOT NULL DEFAULT 0,
    hold_reason  TEXT,
    updated_at   TEXT NOT NULL
);

CREATE TRIGGER chain_tombstones_no_update BEFORE UPDATE ON chain_tombstones
    WHEN (SELECT on_ FROM tierlog_maintenance) IS NOT 1
BEGIN
    SELECT RAISE(ABORT, 'tierlog: UPDATE on chain_tombstones is not allowed');
END;
CREATE TRIGGER chain_tombstones_no_delete BEFORE DELETE ON chain_tombstones
    WHEN (SELECT on_ FROM tierlog_maintenance) IS NOT 1
BEGIN
    SELECT RAISE(ABORT, 'tierlog: DELETE on chain_tombstones is not allowed');
END;

CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints
    WHEN (SELECT on_ FROM tierlog_maintenance) IS NOT 1
BEGIN
    SELECT RAISE(ABORT, 'tierlog: UPDATE on checkpoints is not allowed');
END;
CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
    WHEN (SELECT on_ FROM tierlog_maintenance) IS NOT 1
BEGIN
    SELECT RAISE(ABORT, 'tierlog: DELETE on checkpoints is not allowed');
END;
