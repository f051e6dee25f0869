-- The three tamper-evident event tables share one column layout, so a row maps back
-- to the event exactly and one code path writes and hashes all of them. Typed query
-- columns of security and financial events are generated from their JSON objects.
--
-- Chain columns: seq (1, 2, ... per tenant and table, no gaps), prev_hash, row_hash
-- (see src/integrity/chain.rs); pii_salt and pii_hash seal the personal fields so
-- GDPR erasure can remove them without breaking the chain.

CREATE TABLE chain_heads (
    tenant_id   text        NOT NULL,
    table_name  text        NOT NULL,
    seq         bigint      NOT NULL,
    head_hash   bytea       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, table_name)
);

CREATE TABLE audit_logs (
    tenant_id    text        NOT NULL,
    seq          bigint      NOT NULL,
    id           uuid        NOT NULL,
    occurred_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    category     text        NOT NULL,
    level        text        NOT NULL,
    logger       text,
    message      text,
    event_type   text,
    action       text,
    status       text,
    application  text,
    user_id      text,
    username     text,
    email        text,
    resource     text,
    resource_id  text,
    ip_address   inet,
    user_agent   text,
    request_id   text,
    session_id   text,
    details      jsonb,
    changes      jsonb,
    security     jsonb,
    financial    jsonb,
    prev_hash    bytea       NOT NULL,
    row_hash     bytea       NOT NULL,
    pii_salt     bytea,
    pii_hash     bytea       NOT NULL,
    PRIMARY KEY (tenant_id, seq),
    UNIQUE (id, tenant_id)
);

CREATE TABLE security_events (LIKE audit_logs INCLUDING ALL);
ALTER TABLE security_events
    ADD COLUMN security_event_type text GENERATED ALWAYS AS (security ->> 'event_type') STORED,
    ADD COLUMN severity text GENERATED ALWAYS AS (security ->> 'severity') STORED;

CREATE TABLE financial_audit_logs (LIKE audit_logs INCLUDING ALL);
ALTER TABLE financial_audit_logs
    ADD COLUMN transaction_id text GENERATED ALWAYS AS (financial ->> 'transaction_id') STORED,
    ADD COLUMN amount numeric GENERATED ALWAYS AS ((financial ->> 'amount')::numeric) STORED,
    ADD COLUMN currency text GENERATED ALWAYS AS (financial ->> 'currency') STORED,
    ADD COLUMN account_id text GENERATED ALWAYS AS (financial ->> 'account_id') STORED;

-- Indexes for the queries of the /audit API: a tenant's newest events, a user's
-- timeline, an action's history, lookups by caller IP (a btree serves CIDR filters:
-- Postgres turns `<<=` into a range scan) and request id, failures.
CREATE INDEX audit_logs_tenant_time ON audit_logs (tenant_id, occurred_at DESC, id);
CREATE INDEX audit_logs_user_time ON audit_logs (tenant_id, user_id, occurred_at DESC) WHERE user_id IS NOT NULL;
CREATE INDEX audit_logs_action_time ON audit_logs (tenant_id, action, occurred_at DESC);
CREATE INDEX audit_logs_ip ON audit_logs (tenant_id, ip_address) WHERE ip_address IS NOT NULL;
CREATE INDEX audit_logs_request ON audit_logs (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX audit_logs_status_time ON audit_logs (tenant_id, status, occurred_at DESC);

CREATE INDEX security_events_tenant_time ON security_events (tenant_id, occurred_at DESC, id);
CREATE INDEX security_events_user_time ON security_events (tenant_id, user_id, occurred_at DESC) WHERE user_id IS NOT NULL;
CREATE INDEX security_events_type_time ON security_events (tenant_id, security_event_type, occurred_at DESC);
CREATE INDEX security_events_ip ON security_events (tenant_id, ip_address) WHERE ip_address IS NOT NULL;
CREATE INDEX security_events_request ON security_events (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX security_events_status_time ON security_events (tenant_id, status, occurred_at DESC);

CREATE INDEX financial_audit_logs_tenant_time ON financial_audit_logs (tenant_id, occurred_at DESC, id);
CREATE INDEX financial_audit_logs_user_time ON financial_audit_logs (tenant_id, user_id, occurred_at DESC) WHERE user_id IS NOT NULL;
CREATE INDEX financial_audit_logs_action_time ON financial_audit_logs (tenant_id, action, occurred_at DESC);
CREATE INDEX financial_audit_logs_ip ON financial_audit_logs (tenant_id, ip_address) WHERE ip_address IS NOT NULL;
CREATE INDEX financial_audit_logs_request ON financial_audit_logs (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX financial_audit_logs_status_time ON financial_audit_logs (tenant_id, status, occurred_at DESC);
CREATE INDEX financial_audit_logs_transaction ON financial_audit_logs (tenant_id, transaction_id);

-- Retention deletes by expiry.
CREATE INDEX audit_logs_expiry ON audit_logs (expires_at);
CREATE INDEX security_events_expiry ON security_events (expires_at);
CREATE INDEX financial_audit_logs_expiry ON financial_audit_logs (expires_at);

-- Persisted rows are append-only: only retention and GDPR erasure (later migrations,
-- through functions that audit themselves) may change them.
CREATE FUNCTION tierlog_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('tierlog.maintenance', true) = 'on' THEN
        RETURN COALESCE(NEW, OLD);
    END IF;
    RAISE EXCEPTION 'tierlog: % on % is not allowed: audit rows are append-only', TG_OP, TG_TABLE_NAME;
END $$;

CREATE TRIGGER audit_logs_append_only BEFORE UPDATE OR DELETE ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION tierlog_refuse_change();
CREATE TRIGGER security_events_append_only BEFORE UPDATE OR DELETE ON security_events
    FOR EACH ROW EXECUTE FUNCTION tierlog_refuse_change();
CREATE TRIGGER financial_audit_logs_append_only BEFORE UPDATE OR DELETE ON financial_audit_logs
    FOR EACH ROW EXECUTE FUNCTION tierlog_refuse_change();
