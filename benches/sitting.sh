#!/usr/bin/env bash
# One benchmark sitting: every figure of docs/benchmarks.md, measured one after the
# other on this machine, each part's output kept in $OUT (default
# target/bench-sitting/<UTC time>/<part>.txt).
#
#   benches/sitting.sh                 # every part, in this order (about 1.5 h on 2 cores)
#   benches/sitting.sh ingest query    # only the parts named
#
# Parts:
#   baseline   the raw limits (Redis, Postgres, disk) and the syslog-ng peer, from
#              benches/baseline/, on its private Redis (6390) and Postgres (5440)
#   ingest     tierlog's ingest bench on those same private servers, beside them:
#              batches of 100 with the raw limits of the same work, the peer's corpus,
#              batches of 1 at their maximum, then open loop at half of it
#   nodes      one node against three on the same database and Redis (private servers)
#   detection  the mixed workload with every built-in rule against none, and with 100
#              live-tail clients against none (private servers)
#   intake     the mixed workload as OTLP protobuf against native JSON, and without
#              and with the direct Loki push (private servers)
#   embedded   embedded mode against Redis + Postgres (the machine's servers)
#   verify     verification speed on a chain of 1,000,000 rows (the machine's Postgres)
#   query      query speed on 5,000,000 rows (the machine's Postgres)
#   retention  partition purge against row purge, 5,000,000 rows (the machine's Postgres)
#
# Needs what benches/baseline/README.md lists (Debian packages), and nothing else
# running: the figures are only as steady as the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/target/bench-sitting/$(date -u +%Y%m%dT%H%MZ)}
mkdir -p "$OUT"
PRIVATE="--database-url postgres://postgres@127.0.0.1:5440/postgres --redis-url redis://127.0.0.1:6390"
PARTS=("$@")
[ ${#PARTS[@]} -gt 0 ] || PARTS=(baseline ingest nodes detection intake embedded verify query retention)

# Runs a command, its output appended to $OUT/<part>.txt and shown, between timestamps.
run() {
    local part=$1
    shift
    echo "# $(date -u +%FT%TZ) \$ $*" | tee -a "$OUT/$part.txt"
    "$@" 2>&1 | tee -a "$OUT/$part.txt"
    echo "# $(date -u +%FT%TZ) done" | tee -a "$OUT/$part.txt"
}

# The newest build of a bench binary.
bench_bin() { ls -t "$ROOT"/target/release/deps/"$1"-* | grep -v '\.d$' | head -1; }
ingest() { "$(bench_bin ingest)" "$@" --bench; }

# The events/s of `mix` at batch 1 in a part's output so far.
batch1_rate() {
    grep -E "mix=$2 +batch=1 " "$OUT/$1.txt" | tail -1 | sed -E 's/.*events\/s= *([0-9]+).*/\1/'
}

# Starts the private Redis (6390) and Postgres (5440) unless they answer already.
private_servers() {
    cd benches/baseline
    redis-cli -p 6390 ping >/dev/null 2>&1 || ./redis_ctl.sh start
    if ! pg_isready -q -h 127.0.0.1 -p 5440; then
        [ -d "${BENCH_WORK:-/tmp/tierlog-bench}/pgdata" ] || ./pg_ctl.sh init
        ./pg_ctl.sh start
    fi
    cd "$ROOT"
}

cargo build --release --bins --benches
echo "# sitting on $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with uncommitted changes)'), $(nproc) cores, output in $OUT"

for part in "${PARTS[@]}"; do
    case $part in
    baseline)
        (cd benches/baseline && ./make_data.sh) > "$OUT/make_data.txt" 2>&1
        private_servers
        cd benches/baseline
        run baseline env RUNS=1 QW=5 ./bench_redis.sh
        run baseline env RUNS=1 QW=5 IDX=btree SC=on ./bench_pg.sh batch batch2
        run baseline env RUNS=1 QW=5 ./bench_disk.sh
        run baseline env RUNS=1 QW=5 ./bench_peer.sh 300000 4
        run baseline env RUNS=1 QW=5 WITH_PG=0 ./bench_peer.sh 300000 4
        cd "$ROOT"
        ;;
    ingest)
        private_servers
        corpus=${BENCH_WORK:-/tmp/tierlog-bench}/data/events_1m.jsonl
        run ingest ingest --events 150000 --concurrency 32 --batch 100 --mix hot,persisted,mixed --raw-pg --raw-redis $PRIVATE
        run ingest ingest --events 200000 --concurrency 32 --batch 100 --mix peer-events --events-file "$corpus" --peer-work $PRIVATE
        run ingest ingest --events 200000 --concurrency 32 --batch 100 --mix peer-events --events-file "$corpus" $PRIVATE
        run ingest ingest --events 30000 --concurrency 64 --batch 1 --mix hot,persisted,mixed $PRIVATE
        run ingest python3 benches/disk/fsync_latency.py "${BENCH_WORK:-/tmp/tierlog-bench}" 20
        for mix in hot persisted mixed; do
            rate=$(( $(batch1_rate ingest $mix) / 2 ))
            run ingest ingest --events $(( rate * 20 )) --concurrency 64 --batch 1 --mix $mix --rate $rate --raw-pg $PRIVATE
        done
        run ingest python3 benches/disk/fsync_latency.py "${BENCH_WORK:-/tmp/tierlog-bench}" 20
        ;;
    nodes)
        private_servers
        run nodes ingest --events 200000 --concurrency 32 --batch 100 --mix persisted --nodes 1,3 --tenants 100 --repeat 5 $PRIVATE
        run nodes ingest --events 200000 --concurrency 32 --batch 100 --mix persisted --nodes 1,3 --tenants 1 --repeat 5 $PRIVATE
        run nodes ingest --events 400000 --concurrency 32 --batch 100 --mix hot --nodes 1,3 --tenants 100 --repeat 3 $PRIVATE
        ;;
    detection)
        private_servers
        run detection ingest --events 150000 --concurrency 32 --batch 100 --mix mixed --rules off,on --repeat 5 $PRIVATE
        run detection ingest --events 150000 --concurrency 32 --batch 100 --mix mixed --tail-clients 0,100 --repeat 5 $PRIVATE
        ;;
    intake)
        private_servers
        run intake ingest --events 150000 --concurrency 32 --batch 100 --mix mixed --otlp --repeat 5 $PRIVATE
        run intake ingest --events 150000 --concurrency 32 --batch 100 --mix mixed --loki-push off,on --repeat 5 $PRIVATE
        ;;
    embedded)
        run embedded ingest --events 30000 --concurrency 16 --batch 1,100 --mix hot,persisted --embedded
        run embedded ingest --events 30000 --concurrency 16 --batch 1,100 --mix hot,persisted
        ;;
    verify)
        run verify "$(bench_bin verify)" --rows 1000000 --bench
        ;;
    query)
        run query "$(bench_bin query)" --rows 5000000 --bench
        ;;
    retention)
        run retention "$(bench_bin retention)" --rows 5000000 --bench
        ;;
    *)
        echo "unknown part: $part (baseline, ingest, nodes, detection, embedded, verify, query, retention)" >&2
        exit 2
        ;;
    esac
done
if [[ " ${PARTS[*]} " == *" baseline "* || " ${PARTS[*]} " == *" ingest "* || " ${PARTS[*]} " == *" nodes "* || " ${PARTS[*]} " == *" detection "* ]]; then
    (cd benches/baseline && ./pg_ctl.sh stop && ./redis_ctl.sh stop) || true
fi
echo "# sitting done $(date -u +%FT%TZ); output in $OUT"
