-- Integrity and retention (see src/integrity/ and src/retention/).
--
-- pii_paths: the concrete paths inside details/changes whose values were sealed as
-- personal at ingest (JSON array of key arrays); covered by row_hash.
ALTER TABLE audit_logs ADD COLUMN pii_paths jsonb;
ALTER TABLE security_events ADD COLUMN pii_paths jsonb;
ALTER TABLE financial_audit_logs ADD COLUMN pii_paths jsonb;

-- What retention leaves of a deleted row, so the chain still links across it:
-- row_hash = SHA-256("tierlog.row.v2" || seq || expires_at || prev_hash || content_hash).
-- Once every row up to some sequence is gone, the tombstones are replaced by one
-- signed checkpoint at that sequence.
CREATE TABLE chain_tombstones (
    tenant_id     text        NOT NULL,
    table_name    text        NOT NULL,
    seq           bigint      NOT NULL,
    expires_at    timestamptz NOT NULL,
    deleted_at    timestamptz NOT NULL,
    prev_hash     bytea       NOT NULL,
    content_hash  bytea       NOT NULL,
    row_hash      bytea       NOT NULL,
    run_id        uuid        NOT NULL,
    PRIMARY KEY (tenant_id, table_name, seq)
);

-- Signed chain heads (src/integrity/checkpoint.rs). Never changed or deleted.
CREATE TABLE checkpoints (
    id          bigserial   PRIMARY KEY,
    tenant_id   text        NOT NULL,
    table_name  text        NOT NULL,
    seq         bigint      NOT NULL,
    head_hash   text        NOT NULL,
    created_at  timestamptz NOT NULL,
    reason      text        NOT NULL,
    key_id      text        NOT NULL,
    signature   text        NOT NULL
);
CREATE INDEX checkpoints_chain ON checkpoints (tenant_id, table_name, seq);
CREATE INDEX checkpoints_time ON checkpoints (created_at DESC);

-- Retention policies: plans (name -> days per category) and tenants (plan, own days
-- per category, legal hold). Category defaults come from configuration.
CREATE TABLE retention_plans (
    plan        text        PRIMARY KEY,
    days        jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tenant_retention (
    tenant_id    text        PRIMARY KEY,
    plan         text        REFERENCES retention_plans (plan),
    days         jsonb       NOT NULL DEFAULT '{}',
    legal_hold   boolean     NOT NULL DEFAULT false,
    hold_reason  text,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER chain_tombstones_append_only BEFORE UPDATE OR DELETE ON chain_tombstones
    FOR EACH ROW EXECUTE FUNCTION tierlog_refuse_change();
CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION tierlog_refuse_change();

-- Subject lookups for GDPR export and erasure: events about a user (admin changes).
CREATE INDEX audit_logs_about_user ON audit_logs (tenant_id, resource_id) WHERE resource = 'user';
CREATE INDEX security_events_about_user ON security_events (tenant_id, resource_id) WHERE resource = 'user';
CREATE INDEX financial_audit_logs_about_user ON financial_audit_logs (tenant_id, resource_id) WHERE resource = 'user';
