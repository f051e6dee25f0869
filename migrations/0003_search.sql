-- Full-text search over message, action and details (the `q` filter), backed by a
-- GIN index. The 'simple' configuration keeps ids, codes and names searchable as
-- they are written (no stemming, no stop words). The action is indexed whole and in
-- its parts, so both `user.role_changed` and `role_changed` or `role` find it.

ALTER TABLE audit_logs ADD COLUMN search tsvector GENERATED ALWAYS AS (
    to_tsvector('simple', coalesce(message, '') || ' ' || coalesce(action, '') || ' '
        || translate(coalesce(action, ''), '._', '  ') || ' ' || coalesce(details::text, ''))
) STORED;
ALTER TABLE security_events ADD COLUMN search tsvector GENERATED ALWAYS AS (
    to_tsvector('simple', coalesce(message, '') || ' ' || coalesce(action, '') || ' '
        || translate(coalesce(action, ''), '._', '  ') || ' ' || coalesce(details::text, ''))
) STORED;
ALTER TABLE financial_audit_logs ADD COLUMN search tsvector GENERATED ALWAYS AS (
    to_tsvector('simple', coalesce(message, '') || ' ' || coalesce(action, '') || ' '
        || translate(coalesce(action, ''), '._', '  ') || ' ' || coalesce(details::text, ''))
) STORED;

-- The tenant leads the index (btree_gin makes text indexable by GIN), so a search
-- inside one tenant stays fast even when the term is rare there and common elsewhere.
CREATE EXTENSION IF NOT EXISTS btree_gin;
CREATE INDEX audit_logs_search ON audit_logs USING gin (tenant_id, search);
CREATE INDEX security_events_search ON security_events USING gin (tenant_id, search);
CREATE INDEX financial_audit_logs_search ON financial_audit_logs USING gin (tenant_id, search);

-- All-tenant views (super admin) page through time without a tenant prefix.
CREATE INDEX audit_logs_time ON audit_logs (occurred_at DESC, id DESC);
CREATE INDEX security_events_time ON security_events (occurred_at DESC, id DESC);
CREATE INDEX financial_audit_logs_time ON financial_audit_logs (occurred_at DESC, id DESC);
