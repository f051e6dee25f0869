#!/bin/bash
# Re-runs every measurement in order (about 1.5 h on this 2-core machine).
# Results append to results/all.tsv; summarize.py writes results/summary.md. Starts and stops the private servers.
set -e
cd "$(dirname "$0")"
source ./env.sh
true  # env.sh sets up the python venv
./make_data.sh                                   # 1M events + derived COPY/unnest/RESP files (skips existing ones)
./redis_ctl.sh start
[ -d $PGDATA_DIR ] || ./pg_ctl.sh init
./pg_ctl.sh start
./bench_redis.sh
SC="on off" ./bench_pg.sh single batch
SC=on ./bench_pg.sh batch2 copy
IDX=btree SC=on ./bench_pg.sh copy2
IDX=pkonly SC=on ./bench_pg.sh copy
./bench_disk.sh
./bench_peer.sh 500000 4                         # syslog-ng: redis + postgres(critical, 1 sql writer) + file
WITH_PG=0 ./bench_peer.sh 500000 4               # syslog-ng: redis + file only
PG_SPLIT=1 ./bench_peer.sh 500000 4              # syslog-ng: 2 sql() writers (security / financial)
./summarize.py
./pg_ctl.sh stop
./redis_ctl.sh stop
