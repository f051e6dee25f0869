#!/usr/bin/env bash
# Why tierlog merges the search indexes' pending lists in the background
# (postgres.search_merge_interval_ms, src/tiers/postgres/search.rs).
#
# Inserts 5-row batches into a fresh database migrated with tierlog's schema, open loop
# at RATE batches/s from 2 sessions for SECONDS, twice: with nothing merging the GIN
# pending list (Postgres merges it inside whichever insert crosses
# gin_pending_list_limit), and with a session merging it every second as tierlog does.
# Commits do not wait for the disk (synchronous_commit=off) so the disk's own fsync
# stalls do not hide the difference. Prints each run's latency percentiles (pgbench's
# per-transaction log, from each transaction's scheduled time).
#
#   benches/pg/search_pending.sh [postgres://user@host:port]   (default: 127.0.0.1:5432, user postgres)
set -euo pipefail
cd "$(dirname "$0")/../.."
BASE=${1:-postgres://postgres@127.0.0.1:5432}
RATE=${RATE:-400}
SECONDS_=${SECONDS_:-30}
DB=tierlog_search_pending_$$
command -v pgbench >/dev/null || { echo "needs pgbench (Debian: postgresql-client)" >&2; exit 1; }
psql -X -q "$BASE/postgres" -c "CREATE DATABASE $DB"
WORK=$(mktemp -d)
cleanup() { psql -X -q "$BASE/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"; rm -rf "$WORK"; }
trap cleanup EXIT
for f in migrations/0*.sql; do psql -X -q -v ON_ERROR_STOP=1 "$BASE/$DB" -f "$f" >/dev/null; done
psql -X -q "$BASE/$DB" -c "CREATE SEQUENCE bench_seq; CREATE EXTENSION IF NOT EXISTS pgstattuple"

run() {
  (cd "$WORK" && rm -f pgbench_log.* && PGOPTIONS="-c synchronous_commit=off" \
    pgbench -n -c 2 -j 1 -T "$SECONDS_" -R "$RATE" -f "$OLDPWD/benches/pg/search_insert.pgbench" -l "$BASE/$DB" >/dev/null 2>&1)
  cat "$WORK"/pgbench_log.* | awk '{print $3/1000}' | sort -n | awk -v what="$1" '
    {a[NR]=$1; if ($1 > 50) slow++}
    END {printf "%-28s transactions=%d p50=%.2fms p99=%.2fms p99.9=%.2fms max=%.1fms over_50ms=%d\n",
         what, NR, a[int(NR*.5)], a[int(NR*.99)], a[int(NR*.999)], a[NR], slow}'
}

run "no background merge:"
psql -X -q -tA "$BASE/$DB" -c "SELECT 'pending list left: ' || pending_pages || ' pages' FROM pgstatginindex('audit_logs_search')"
psql -X -q -tA "$BASE/$DB" -c "SELECT gin_clean_pending_list('audit_logs_search')" >/dev/null
( for _ in $(seq 1 $((SECONDS_ + 1))); do
    psql -X -q -tA "$BASE/$DB" -c "SELECT gin_clean_pending_list('audit_logs_search')" >/dev/null; sleep 1
  done ) &
merger=$!
run "merged every second:"
wait $merger
