//! Ingest benchmark: starts the release `tierlog` binary against the given Postgres
//! and Redis, sends a realistic event mix over HTTP from many concurrent connections,
//! waits until every tier holds every event, checks the counts, and prints events/s,
//! request latency (p50/p99) and the server's peak RSS.
//!
//! ```text
//! cargo bench --bench ingest -- [--events N] [--concurrency C] [--batch 1,100]
//!     [--mix mixed,hot,persisted] [--database-url URL] [--redis-url URL] [--embedded]
//!     [--rate R] [--raw-pg] [--raw-redis] [--events-file PATH] [--peer-work]
//!     [--nodes 1,3] [--tenants 100] [--repeat K] [--rules on,off] [--tail-clients 0,100]
//!     [--otlp] [--loki-push off,on] [--role-share 5]
//! ```
//!
//! `--nodes N` runs N tierlog processes on the same database and Redis (one signing
//! key, each its own files and spool) and spreads the connections across them, as a
//! load balancer would; `--nodes 1,3` runs both in one sitting. Each run also samples
//! `pg_stat_activity` every 10 ms and prints the share of samples in which a session
//! of the run waited on a lock (`lock_wait_share`) and the mean number of sessions
//! waiting (`lock_waiters`): the cost of nodes queueing on chain heads.
//! `--tenants T` spreads the generated events over T tenants (default 100).
//! `--rules on,off` runs with every built-in detection rule (the default) or none;
//! `--tail-clients 0,100` opens that many live-tail clients before the run, each
//! following one tenant's events (`tenant_id=tenant-NNN`, so together they receive
//! every event once) and counting what it gets. `--otlp` sends the same events
//! also as OpenTelemetry logs (OTLP/HTTP protobuf, `POST /v1/logs`: each event a log
//! record, its fields attributes), after the same run as JSON to `/audit/events`.
//! `--loki-push off,on` runs without and with tierlog's direct push to Loki (to a
//! stand-in receiver in this process that takes each push and answers 204; the run
//! waits until every line was pushed and fails if any was dropped).
//! The lists combine with `--nodes` and `--repeat` (each combination a setup,
//! compared with the first).
//! `--role-share P` makes P% of the mix's admin changes role changes (default 5,
//! one in twenty; the others change an invoice's status): each role change is an
//! alert of the `privilege-change` rule when rules are on, so `--role-share 100`
//! (every tenth event of the mixed workload a role change) measures an alert storm.
//! `--repeat K` runs the node counts K times, interleaved (1, 3, 1, 3, ...), and
//! ends with the median events/s of each and the median of the K paired ratios: on
//! a small shared machine one pair can be off by a tenth either way.
//!
//! `--events-file PATH` sends the first N events of a JSON-lines file instead of the
//! generated mix (e.g. `../shared/bench`'s `events_1m.jsonl`, the syslog-ng peer's
//! input). `--peer-work` makes tierlog persist only what the peer persists (security
//! and financial events); without it tierlog also chains auth and audit events.
//!
//! `--rate R` sends R requests per second on a fixed schedule (open loop) instead of
//! as fast as answers come back; latency is measured from each request's scheduled
//! time, so a stalled server cannot hide its queueing delay.
//!
//! `--raw-pg` adds, after each run, the raw limit for the same work: the rows tierlog
//! stored, inserted again by two sessions (tierlog's two writers) in 1,000-row
//! multi-row INSERT statements into empty copies of the same tables with the same
//! lookup indexes, without tierlog (no HTTP, no hash chains), in three layouts,
//! interleaved seven times (medians printed): one heap per table with the keys of the
//! layout before time partitions, its primary key (tenant_id, seq) and its unique
//! (id, tenant_id), partitioned as tierlog's tables are, and partitioned with each
//! statement also recording the ids in a copy of `event_ids` (as tierlog's write
//! does). Printed as rows/s, each layout's share of the heap's, and tierlog's
//! persisted rows/s against each. With `--rate R` it gives instead the latency of the
//! simplest durable acknowledgement, without batching: the same rows, each inserted
//! and committed on its own, open loop at the rate they arrived (p50/p99 beside
//! tierlog's).
//!
//! `--raw-redis` adds, after a run that persisted nothing (the `hot` mix), the raw
//! limit of the hot tier's work: the events and JSON lines tierlog wrote (read back
//! from its files) pushed again into Redis by tierlog's own push code (the same
//! script, keys and pipelines), in batches cut per writer lane at tierlog's mean
//! batch size, from four connections, without HTTP, parsing, files or queueing.
//! Printed as events/s beside tierlog's.
//!
//! `--embedded` runs tierlog with neither URL: the in-process hot tier and the SQLite
//! store in a temporary data directory, verified in the SQLite file and the JSON files.
//!
//! `--database-url` names a server where the user may create databases (one fresh
//! database per run, dropped afterwards); `--redis-url` a Redis (one key prefix per
//! run, deleted afterwards). Mixes: `hot` = events that go to Redis and the file only
//! (api/error below ERROR); `persisted` = every event also goes to Postgres (auth,
//! audit, security, financial); `mixed` = a production-like blend of both.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use tierlog::config::Settings;
use tierlog::event::{EventParser, Limits};
use tierlog::ingest::route::Routing;
use uuid::Uuid;

const KEY: &str = "bench-bootstrap-key-0123456789abcdef";

struct Options {
    events: usize,
    concurrency: usize,
    batches: Vec<usize>,
    mixes: Vec<String>,
    database_url: String,
    redis_url: String,
    embedded: bool,
    rate: Option<f64>,
    raw_pg: bool,
    raw_redis: bool,
    events_file: Option<String>,
    peer_work: bool,
    nodes: Vec<usize>,
    rules: Vec<bool>,
    tail_clients: Vec<usize>,
    /// Whether the events go as JSON to /audit/events (false) or as OTLP protobuf to
    /// /v1/logs (true).
    otlp: Vec<bool>,
    /// Whether tierlog also pushes every event to Loki (a stand-in receiver here).
    loki_push: Vec<bool>,
    tenants: u64,
    role_share: u64,
    repeat: usize,
}

/// What one run deploys: nodes, detection rules on or off, live-tail clients.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Setup {
    nodes: usize,
    rules: bool,
    tail: usize,
    otlp: bool,
    loki: bool,
}

impl std::fmt::Display for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let on = |b: bool| if b { "on" } else { "off" };
        write!(f, "nodes={} rules={} tail_clients={} otlp={} loki_push={}", self.nodes, on(self.rules), self.tail, on(self.otlp), on(self.loki))
    }
}

impl Options {
    /// Every combination of `--nodes`, `--rules`, `--tail-clients`, `--otlp` and
    /// `--loki-push`, in that order.
    fn setups(&self) -> Vec<Setup> {
        let mut setups = Vec::new();
        for &nodes in &self.nodes {
            for &rules in &self.rules {
                for &tail in &self.tail_clients {
                    for &otlp in &self.otlp {
                        for &loki in &self.loki_push {
                            setups.push(Setup { nodes, rules, tail, otlp, loki });
                        }
                    }
                }
            }
        }
        setups
    }
}

fn options() -> Options {
    let mut o = Options {
        events: 100_000,
        concurrency: 32,
        batches: vec![1, 100],
        mixes: vec!["hot".into(), "persisted".into(), "mixed".into()],
        database_url: std::env::var("TIERLOG_BENCH_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        redis_url: std::env::var("TIERLOG_BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        embedded: false,
        rate: None,
        raw_pg: false,
        raw_redis: false,
        events_file: None,
        peer_work: false,
        nodes: vec![1],
        rules: vec![true],
        tail_clients: vec![0],
        otlp: vec![false],
        loki_push: vec![false],
        tenants: 100,
        role_share: 5,
        repeat: 1,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--events" => o.events = value.parse().expect("--events N"),
            "--concurrency" => o.concurrency = value.parse().expect("--concurrency C"),
            "--batch" => o.batches = value.split(',').map(|b| b.parse().expect("--batch 1,100")).collect(),
            "--mix" => o.mixes = value.split(',').map(str::to_owned).collect(),
            "--database-url" => o.database_url = value,
            "--redis-url" => o.redis_url = value,
            "--rate" => o.rate = Some(value.parse().expect("--rate R")),
            "--events-file" => o.events_file = Some(value),
            "--nodes" => o.nodes = value.split(',').map(|n| n.parse().expect("--nodes 1,3")).collect(),
            "--rules" => {
                o.rules = value.split(',').map(|r| match r {
                    "on" => true,
                    "off" => false,
                    _ => panic!("--rules on,off"),
                }).collect()
            }
            "--loki-push" => {
                o.loki_push = value.split(',').map(|r| match r {
                    "on" => true,
                    "off" => false,
                    _ => panic!("--loki-push off,on"),
                }).collect()
            }
            "--tail-clients" => o.tail_clients = value.split(',').map(|n| n.parse().expect("--tail-clients 0,100")).collect(),
            "--tenants" => o.tenants = value.parse::<u64>().expect("--tenants T").max(1),
            "--role-share" => o.role_share = value.parse::<u64>().expect("--role-share P").min(100),
            "--repeat" => o.repeat = value.parse::<usize>().expect("--repeat K").max(1),
            "--otlp" => {
                o.otlp = vec![false, true];
                i += 1;
                continue;
            }
            "--peer-work" => {
                o.peer_work = true;
                i += 1;
                continue;
            }
            "--raw-pg" => {
                o.raw_pg = true;
                i += 1;
                continue;
            }
            "--raw-redis" => {
                o.raw_redis = true;
                i += 1;
                continue;
            }
            "--embedded" => {
                o.embedded = true;
                i += 1;
                continue;
            }
            // `cargo bench` passes --bench; ignore flags that are not ours.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

/// A deterministic generator of realistic events.
struct Generator {
    state: u64,
    tenants: u64,
    /// Percent of admin changes that change a role.
    role_share: u64,
}

impl Generator {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn event(&mut self, mix: &str) -> Value {
        let r = self.next();
        let tenant = format!("tenant-{:03}", r % self.tenants);
        let user = format!("user-{}", (r >> 8) % 5000);
        let ip = format!("198.51.{}.{}", (r >> 20) % 256, (r >> 28) % 256);
        let pick = (r >> 36) % 100;
        let kind = match mix {
            "hot" => if pick < 70 { "api" } else { "debug_error" },
            "persisted" => match pick { 0..=49 => "login", 50..=64 => "login_failed", 65..=79 => "admin", 80..=89 => "security", _ => "financial" },
            _ => match pick {
                0..=24 => "login", 25..=34 => "login_failed", 35..=59 => "api", 60..=69 => "admin",
                70..=79 => "security", 80..=89 => "financial", 90..=94 => "error", _ => "debug_error",
            },
        };
        let base = json!({
            "id": Uuid::new_v4(),
            "tenant_id": tenant,
            "user_id": user,
            "username": format!("{user}@example.com"),
            "ip_address": ip,
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
            "request_id": format!("req-{:016x}", r),
            "application": "billing-portal",
            "logger": "app.audit",
        });
        let specific = match kind {
            "login" => json!({"category": "auth", "action": "auth.login", "status": "success", "message": "user logged in", "details": {"method": "password", "mfa": true}}),
            "login_failed" => json!({"category": "auth", "action": "auth.login_failed", "status": "failure", "level": "WARNING", "message": "invalid password", "details": {"attempt": (r >> 40) % 5 + 1}}),
            "api" => json!({"category": "api", "action": "api.request", "status": "success", "message": "GET /v1/invoices 200", "details": {"method": "GET", "path": "/v1/invoices", "status_code": 200, "duration_ms": (r >> 40) % 300}}),
            "admin" if (r >> 52) % 100 < self.role_share => json!({"category": "audit", "action": "user.role_changed", "status": "success", "resource": "user", "resource_id": format!("user-{}", (r >> 44) % 5000), "message": "role changed", "changes": {"before": {"role": "member"}, "after": {"role": "admin"}}}),
            "admin" => json!({"category": "audit", "action": "invoice.updated", "status": "success", "resource": "invoice", "resource_id": format!("inv-{}", (r >> 44) % 5000), "message": "invoice sent", "changes": {"before": {"status": "draft"}, "after": {"status": "sent"}}}),
            "security" => json!({"category": "security", "action": "security.rate_limited", "status": "failure", "level": "WARNING", "message": "rate limit exceeded", "security": {"event_type": "rate_limited", "severity": "medium"}, "details": {"limit": 100, "window_s": 60}}),
            "financial" => json!({"category": "financial", "action": "payment.transfer", "status": "success", "message": "transfer executed", "financial": {"transaction_id": format!("tx-{:x}", r), "amount": format!("{}.{:02}", (r >> 40) % 10000, (r >> 20) % 100), "currency": "EUR", "account_id": format!("acc-{}", (r >> 30) % 1000), "counterparty": "ACME Supplies GmbH"}}),
            "error" => json!({"category": "error", "action": "app.exception", "status": "error", "level": "ERROR", "message": "unhandled exception in invoice export", "details": {"exception": "TimeoutError"}}),
            _ => json!({"category": "error", "action": "app.retry", "status": "error", "level": "INFO", "message": "retrying upstream call", "details": {"attempt": 2}}),
        };
        let mut event = base;
        if let (Some(target), Value::Object(extra)) = (event.as_object_mut(), specific) {
            target.extend(extra);
        }
        event
    }
}

struct Server {
    child: Child,
    address: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// CPU time (user + system) the process has used so far, from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / per_second)
}

/// CPU time of every `postgres` process on this machine (the server, its backends
/// and its background workers).
fn postgres_cpu() -> Duration {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Duration::ZERO };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres"))
        .map(cpu_time)
        .sum()
}

/// Redis's CPU time (user and system), from `INFO cpu`.
fn redis_cpu(connection: Option<&mut redis::Connection>) -> Duration {
    let Some(connection) = connection else { return Duration::ZERO };
    let info: String = redis::cmd("INFO").arg("cpu").query(connection).unwrap_or_default();
    let seconds: f64 = info
        .lines()
        .filter_map(|l| l.strip_prefix("used_cpu_sys:").or_else(|| l.strip_prefix("used_cpu_user:")))
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum();
    Duration::from_secs_f64(seconds)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// A stand-in for Loki's push endpoint: takes every push (reading its body) and
/// answers 204, so that the run measures what pushing costs tierlog.
struct LokiStandIn {
    url: String,
    requests: Arc<std::sync::atomic::AtomicU64>,
}

impl LokiStandIn {
    async fn start() -> anyhow::Result<LokiStandIn> {
        let requests = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = requests.clone();
        let app = axum::Router::new().route(
            "/loki/api/v1/push",
            axum::routing::post(move |_body: axum::body::Bytes| {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                async { axum::http::StatusCode::NO_CONTENT }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/loki/api/v1/push", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(LokiStandIn { url, requests })
    }

    fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }
}

fn metric_value(text: &str, name: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// A batch of events as an OTLP/HTTP log export (protobuf): each event one log
/// record, its message the body and every other field an attribute of its own name
/// (objects as maps), as an application using an OpenTelemetry SDK would send it.
fn otlp_body(events: &[Value]) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue, KeyValueList};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use prost::Message;
    fn any(value: &Value) -> Option<AnyValue> {
        let value = match value {
            Value::Null => return None,
            Value::Bool(b) => any_value::Value::BoolValue(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => any_value::Value::IntValue(i),
                None => any_value::Value::DoubleValue(n.as_f64().unwrap_or_default()),
            },
            Value::String(s) => any_value::Value::StringValue(s.clone()),
            Value::Array(items) => any_value::Value::ArrayValue(ArrayValue { values: items.iter().filter_map(any).collect() }),
            Value::Object(map) => any_value::Value::KvlistValue(KeyValueList { values: attributes(map) }),
        };
        Some(AnyValue { value: Some(value) })
    }
    fn attributes(map: &serde_json::Map<String, Value>) -> Vec<KeyValue> {
        map.iter().filter_map(|(k, v)| Some(KeyValue { key: k.clone(), value: Some(any(v)?), ..Default::default() })).collect()
    }
    let log_records = events
        .iter()
        .map(|event| {
            let mut fields = event.as_object().cloned().unwrap_or_default();
            let body = fields.remove("message").and_then(|m| any(&m));
            LogRecord { body, attributes: attributes(&fields), ..Default::default() }
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs { scope_logs: vec![ScopeLogs { log_records, ..Default::default() }], ..Default::default() }],
    }
    .encode_to_vec()
}

/// One run; returns its events/s.
async fn run(o: &Options, mix: &str, batch: usize, setup: Setup) -> anyhow::Result<f64> {
    let nodes = setup.nodes;
    let db_name = format!("tierlog_bench_{}", Uuid::new_v4().simple());
    let mut admin = if o.embedded { None } else { Some(PgConnection::connect(&o.database_url).await?) };
    if let Some(admin) = admin.as_mut() {
        sqlx::query(&format!("CREATE DATABASE {db_name}")).execute(admin).await?;
    }
    let db_url = format!("{}/{db_name}", o.database_url.rsplit_once('/').map(|(b, _)| b).unwrap_or(&o.database_url));
    let prefix = format!("tierlog-bench-{}", Uuid::new_v4().simple());
    let dir = tempfile::tempdir()?;
    let files_dirs: Vec<std::path::PathBuf> = (0..nodes).map(|n| dir.path().join(format!("files-{n}"))).collect();
    let data_dir = dir.path().join("data");
    anyhow::ensure!(nodes == 1 || !o.embedded, "--nodes above 1 needs Postgres and Redis");
    let seed = tierlog::integrity::checkpoint::Signer::generate_with_seed().1;
    let loki = if setup.loki { Some(LokiStandIn::start().await?) } else { None };
    let mut servers = Vec::new();
    for (node, files_dir) in files_dirs.iter().enumerate() {
        servers.push(start_server(o, &db_url, &prefix, dir.path(), files_dir, &data_dir, &seed, node, setup, loki.as_ref().map(|l| l.url.as_str()))?);
    }
    let client = reqwest::Client::builder().pool_max_idle_per_host(o.concurrency).build()?;
    let started = Instant::now();
    for server in &servers {
        while client.get(format!("{}/healthz", server.address)).send().await.is_err() {
            anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "tierlog did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let server = &servers[0];
    // Live-tail clients, spread over the nodes, each following one tenant (an admin
    // watching their tenant: together they get every event once) and counting.
    let tail_messages = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tails = Vec::new();
    for i in 0..setup.tail {
        let url = format!("{}/audit/stream?tenant_id=tenant-{:03}", servers[i % servers.len()].address, i as u64 % o.tenants);
        let response = client.get(url).bearer_auth(KEY).send().await?;
        anyhow::ensure!(response.status() == 200, "the live tail answered {}", response.status());
        let counted = tail_messages.clone();
        tails.push(tokio::spawn(async move {
            use futures_util::StreamExt;
            let mut body = response.bytes_stream();
            let mut last = 0u8;
            while let Some(Ok(chunk)) = body.next().await {
                let mut n = 0;
                for &b in chunk.iter() {
                    if b == b'\n' && last == b'\n' {
                        n += 1;
                    }
                    last = b;
                }
                counted.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }

    // Generate every body up front so the load generator spends its time sending.
    let mut generator = Generator { state: 0x9E37_79B9_7F4A_7C15 ^ batch as u64 ^ mix.len() as u64, tenants: o.tenants, role_share: o.role_share };
    let events: Vec<Value> = match &o.events_file {
        Some(path) => {
            use std::io::BufRead;
            std::io::BufReader::new(std::fs::File::open(path)?)
                .lines()
                .take(o.events)
                .map(|line| Ok(serde_json::from_str(&line?)?))
                .collect::<anyhow::Result<_>>()?
        }
        None => (0..o.events).map(|_| generator.event(mix)).collect(),
    };
    anyhow::ensure!(events.len() == o.events, "the events file holds fewer than {} events", o.events);
    let bodies: Vec<Vec<u8>> = if setup.otlp {
        events.chunks(batch).map(otlp_body).collect()
    } else {
        events
            .chunks(batch)
            .map(|chunk| if batch == 1 { serde_json::to_vec(&chunk[0]) } else { serde_json::to_vec(chunk) })
            .collect::<Result<_, _>>()?
    };
    let (path, content_type) = if setup.otlp { ("/v1/logs", "application/x-protobuf") } else { ("/audit/events", "application/json") };
    let body_bytes: usize = bodies.iter().map(Vec::len).sum();
    let bodies = Arc::new(bodies);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));

    let cpu = || servers.iter().map(|s| cpu_time(s.child.id())).sum::<Duration>();
    let cpu_before = cpu();
    // Redis's and Postgres's CPU over the same span (the parts share the machine).
    let mut redis_probe = if o.embedded { None } else { redis::Client::open(o.redis_url.as_str())?.get_connection().ok() };
    let (redis_before, pg_before) = (redis_cpu(redis_probe.as_mut()), postgres_cpu());
    let locks = (!o.embedded).then(|| LockSampler::start(&db_url, &db_name));
    let t0 = Instant::now();
    let interval = o.rate.map(|rate| Duration::from_secs_f64(1.0 / rate));
    let mut workers = Vec::new();
    for worker in 0..o.concurrency {
        let client = client.clone();
        let bodies = bodies.clone();
        let next = next.clone();
        let url = format!("{}{path}", servers[worker % servers.len()].address);
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0usize;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                let sent = match interval {
                    Some(every) => {
                        let due = t0 + every * i as u32;
                        tokio::time::sleep_until(due.into()).await;
                        due
                    }
                    None => Instant::now(),
                };
                let response = client
                    .post(&url)
                    .bearer_auth(KEY)
                    .header("content-type", content_type)
                    .body(body.clone())
                    .send()
                    .await;
                match response {
                    Ok(r) if r.status().is_success() => latencies.push(sent.elapsed()),
                    _ => failures += 1,
                }
            }
            (latencies, failures)
        }));
    }
    let mut latencies = Vec::new();
    let mut failures = 0;
    for worker in workers {
        let (mut l, f) = worker.await?;
        latencies.append(&mut l);
        failures += f;
    }
    let acked_in = t0.elapsed();
    let server_cpu = cpu().saturating_sub(cpu_before);
    let redis_used = redis_cpu(redis_probe.as_mut()).saturating_sub(redis_before);
    let pg_used = postgres_cpu().saturating_sub(pg_before);
    let locks = match locks {
        Some(sampler) => Some(sampler.stop().await?),
        None => None,
    };

    for tail in &tails {
        tail.abort();
    }
    let tail_per_client = tail_messages.load(std::sync::atomic::Ordering::Relaxed) / setup.tail.max(1) as u64;

    // The alerts the rules wrote (after the acknowledgements: wait until they settle).
    let alert_sql = "SELECT tenant_id, count(*) FROM security_events WHERE action = 'security.alert' GROUP BY tenant_id";
    let mut alerts: HashMap<String, i64> = HashMap::new();
    if setup.rules {
        let mut previous = -1;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            alerts = if o.embedded {
                let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", data_dir.join("tierlog.db").display())).await?;
                let found = sqlx::query_as::<_, (String, i64)>(alert_sql).fetch_all(&pool).await?;
                pool.close().await;
                found.into_iter().collect()
            } else {
                let pool = sqlx::PgPool::connect(&db_url).await?;
                let found = sqlx::query_as::<_, (String, i64)>(alert_sql).fetch_all(&pool).await?;
                pool.close().await;
                found.into_iter().collect()
            };
            let total: i64 = alerts.values().sum();
            if total == previous {
                break;
            }
            previous = total;
        }
    }
    let alert_total: i64 = alerts.values().sum();

    // Every acknowledged event must be in every tier it belongs to (and every alert).
    let mut settings = Settings::defaults()?;
    if o.peer_work {
        for category in [tierlog::event::Category::Auth, tierlog::event::Category::Audit] {
            if let Some(policy) = settings.categories.get_mut(&category) {
                policy.table = tierlog::config::TableChoice::None;
            }
        }
    }
    let routing = Routing::new(&settings);
    let parser = EventParser::new(Limits::default(), None, chrono::Utc::now());
    let mut expected_rows: HashMap<&str, i64> = HashMap::new();
    let mut hot_lists: HashMap<(String, tierlog::event::Category), i64> = HashMap::new();
    for (i, event) in events.iter().enumerate() {
        let parsed = parser.parse(i, event.clone()).map_err(|e| anyhow::anyhow!("generator made a bad event: {e:?}"))?;
        *hot_lists.entry((parsed.tenant_id.clone(), parsed.category)).or_default() += 1;
        if let Some(table) = routing.table(&parsed) {
            *expected_rows.entry(table.as_str()).or_default() += 1;
        }
    }
    for (tenant, n) in &alerts {
        *hot_lists.entry((tenant.clone(), tierlog::event::Category::Security)).or_default() += n;
    }
    let event_rows = expected_rows.clone();
    *expected_rows.entry("security_events").or_default() += alert_total;
    // Opening a live tail writes one access record (the bench key's: tenant default).
    let opened = setup.tail as i64;
    *expected_rows.entry("audit_logs").or_default() += opened;
    *hot_lists.entry((tierlog::event::DEFAULT_TENANT.to_owned(), tierlog::event::Category::Access)).or_default() += opened;
    for table in ["audit_logs", "security_events", "financial_audit_logs"] {
        let sql = format!("SELECT count(*) FROM {table}");
        let rows: i64 = if o.embedded {
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", data_dir.join("tierlog.db").display())).await?;
            let rows = sqlx::query_scalar(&sql).fetch_one(&pool).await?;
            pool.close().await;
            rows
        } else {
            let pool = sqlx::PgPool::connect(&db_url).await?;
            let rows = sqlx::query_scalar(&sql).fetch_one(&pool).await?;
            pool.close().await;
            rows
        };
        let want = expected_rows.get(table).copied().unwrap_or(0);
        anyhow::ensure!(rows == want, "{table}: {rows} rows, expected {want}");
    }
    let mut keys: Vec<String> = Vec::new();
    let mut redis = None;
    if !o.embedded {
        let mut connection = redis::Client::open(o.redis_url.as_str())?.get_connection()?;
        let in_redis;
        (keys, in_redis) = events_under(&mut connection, &prefix)?;
        // Each list is trimmed to its category's cap.
        let want: i64 = hot_lists.iter().map(|((_, category), n)| (*n).min(settings.redis_max_len(*category) as i64)).sum();
        anyhow::ensure!(in_redis == want, "redis holds {in_redis} events, expected {want}");
        redis = Some(connection);
    }
    let mut lines = 0usize;
    for files_dir in &files_dirs {
        for entry in std::fs::read_dir(files_dir)? {
            lines += std::fs::read(entry?.path())?.iter().filter(|b| **b == b'\n').count();
        }
    }
    anyhow::ensure!(failures == 0, "{failures} requests failed");
    anyhow::ensure!(
        lines == o.events + alert_total as usize + setup.tail,
        "files hold {lines} lines, expected {} events, {alert_total} alerts and {} access records",
        o.events,
        setup.tail
    );

    let rss: u64 = servers.iter().map(|s| peak_rss_kib(s.child.id())).sum();
    // Events detection left out because it fell behind (it never slows ingest).
    let mut skipped = 0u64;
    // With the Loki push: every line pushed (waiting for the last pushes) and none dropped.
    if let Some(loki) = &loki {
        let want = (o.events + alert_total as usize + setup.tail) as u64;
        let waited = Instant::now();
        loop {
            let (mut pushed, mut dropped) = (0, 0);
            for server in &servers {
                let text = client.get(format!("{}/metrics", server.address)).send().await?.text().await?;
                pushed += metric_value(&text, "tierlog_loki_pushed_lines_total");
                dropped += metric_value(&text, "tierlog_loki_dropped_lines_total");
            }
            anyhow::ensure!(dropped == 0, "{dropped} lines were left out of the Loki push");
            if pushed >= want {
                anyhow::ensure!(loki.requests() > 0, "the Loki stand-in got nothing");
                break;
            }
            anyhow::ensure!(waited.elapsed() < Duration::from_secs(60), "only {pushed} of {want} lines reached Loki");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for server in &servers {
        let text = client.get(format!("{}/metrics", server.address)).send().await?.text().await?;
        skipped += text
            .lines()
            .find_map(|l| l.strip_prefix("tierlog_detection_skipped_events_total "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    let expected_rows = event_rows;
    let hot_only = expected_rows.values().all(|rows| *rows == 0);
    let mean_batch = if o.raw_redis && !o.embedded && hot_only && nodes == 1 {
        Some(mean_batch(&client, &server.address).await?)
    } else {
        None
    };
    latencies.sort();
    let persisted: i64 = expected_rows.values().sum();
    println!(
        "{setup} tenants={:<3} mix={mix:<9} batch={batch:<4} conns={:<3} {}events={:<7} persisted={:<7} events/s={:>8.0} persisted_rows/s={:>7.0} MB/s={:>6.1} p50={:>7.2}ms p99={:>7.2}ms peak_rss={:>4}MiB cpu/event={:>5.1}us redis_cpu/event={:>5.1}us pg_cpu/event={:>5.1}us alerts={alert_total} detection_skipped={skipped} {}{}verified={}",
        o.tenants,
        o.concurrency,
        o.rate.map(|r| format!("rate={r:.0}/s ")).unwrap_or_default(),
        o.events,
        persisted,
        o.events as f64 / acked_in.as_secs_f64(),
        persisted as f64 / acked_in.as_secs_f64(),
        body_bytes as f64 / acked_in.as_secs_f64() / 1e6,
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        rss / 1024,
        server_cpu.as_secs_f64() * 1e6 / o.events as f64,
        redis_used.as_secs_f64() * 1e6 / o.events as f64,
        pg_used.as_secs_f64() * 1e6 / o.events as f64,
        if setup.tail > 0 { format!("tail_events/client={tail_per_client} ") } else { String::new() },
        locks.map(|waits| waits.to_string()).unwrap_or_default(),
        if o.embedded { "sqlite,files" } else { "pg,redis,files" },
    );

    drop(servers);
    match (o.raw_pg && !o.embedded && persisted > 0, o.rate) {
        (false, _) => {}
        (true, None) => {
            let rates = raw_insert_rates(&db_url, persisted as usize).await?;
            let heap = rates[0].1;
            for (layout, rate) in &rates {
                println!(
                    "raw-pg    the same {persisted} rows, same lookup indexes, {layout:?}, 2 sessions x 1000-row INSERTs (median of {RAW_ROUNDS}): rows/s={rate:>7.0}  of heap={:.3}  tierlog/raw={:.2}",
                    rate / heap,
                    persisted as f64 / acked_in.as_secs_f64() / rate
                );
            }
        }
        (true, Some(rate)) => {
            // The persisted share of the requests, at the rate they arrived.
            let row_rate = rate * persisted as f64 / o.events as f64;
            let sessions = o.concurrency.min(32);
            let raw = raw_commit_latencies(&db_url, row_rate, sessions).await?;
            println!(
                "raw-pg    the same {persisted} rows, one INSERT and COMMIT each, open loop at {row_rate:.0}/s from {sessions} sessions: p50={:>7.2}ms p99={:>7.2}ms",
                percentile(&raw, 0.50).as_secs_f64() * 1e3,
                percentile(&raw, 0.99).as_secs_f64() * 1e3,
            );
        }
    }
    if let Some(mean_batch) = mean_batch {
        let replay = RawPush { redis_url: &o.redis_url, prefix: &prefix, settings: &settings, batch: mean_batch };
        let rate = replay.rate(&files_dirs[0]).await?;
        println!(
            "raw-redis the same {} events and lines, tierlog's own push (script and pipeline), {mean_batch}-event batches per writer lane from 4 connections: events/s={rate:>8.0}  tierlog/raw={:.2}",
            o.events,
            o.events as f64 / acked_in.as_secs_f64() / rate
        );
    }
    if let (Some(connection), false) = (redis.as_mut(), keys.is_empty()) {
        redis::cmd("DEL").arg(&keys).query::<()>(connection)?;
    }
    if let Some(admin) = admin.as_mut() {
        sqlx::query(&format!("DROP DATABASE {db_name} WITH (FORCE)")).execute(admin).await?;
    }
    Ok(o.events as f64 / acked_in.as_secs_f64())
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The medians of repeated runs, and each node count's paired ratios against the first.
fn summarise(o: &Options, mix: &str, batch: usize, setups: &[Setup], rates: &[Vec<f64>]) {
    let first = &rates[0];
    for (setup, runs) in setups.iter().zip(rates) {
        let shown: Vec<String> = runs.iter().map(|r| format!("{r:.0}")).collect();
        let mut line = format!(
            "summary   {setup} tenants={} mix={mix} batch={batch} runs={} median events/s={:.0} (each: {})",
            o.tenants,
            runs.len(),
            median(runs),
            shown.join(" ")
        );
        if setup != &setups[0] {
            let pairs: Vec<f64> = runs.iter().zip(first).map(|(r, f)| r / f).collect();
            let shown: Vec<String> = pairs.iter().map(|r| format!("{r:.2}")).collect();
            line.push_str(&format!(
                " ratio to {}: median of pairs={:.2} (pairs: {}), of medians={:.2}",
                setups[0],
                median(&pairs),
                shown.join(" "),
                median(runs) / median(first)
            ));
        }
        println!("{line}");
    }
}

/// One `tierlog serve` of a run: node `node` of the deployment.
#[allow(clippy::too_many_arguments)]
fn start_server(
    o: &Options,
    db_url: &str,
    prefix: &str,
    dir: &std::path::Path,
    files_dir: &std::path::Path,
    data_dir: &std::path::Path,
    seed: &str,
    node: usize,
    setup: Setup,
    loki: Option<&str>,
) -> anyhow::Result<Server> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_tierlog"));
    command.env("TIERLOG__DETECTION__ENABLED", if setup.rules { "true" } else { "false" });
    if let Some(url) = loki {
        command.env("LOKI_PUSH_URL", url);
    }
    if o.peer_work {
        command.env("TIERLOG__CATEGORIES__AUTH__TABLE", "none").env("TIERLOG__CATEGORIES__AUDIT__TABLE", "none");
    }
    if o.embedded {
        command.env_remove("DATABASE_URL").env_remove("REDIS_URL").env("TIERLOG__EMBEDDED__DATA_DIR", data_dir);
    } else {
        command.env("DATABASE_URL", db_url).env("REDIS_URL", &o.redis_url);
    }
    let child = command
        .arg("serve")
        .env("TIERLOG__REDIS__KEY_PREFIX", prefix)
        .env("TIERLOG_LISTEN", format!("127.0.0.1:{port}"))
        .env("TIERLOG_BOOTSTRAP_KEY", KEY)
        .env("LOGGING_FILE", files_dir.join("audit.jsonl"))
        .env("TIERLOG__INTEGRITY__SIGNING_KEY", seed)
        .env("TIERLOG__CLUSTER__NODE_NAME", format!("bench-{node}"))
        .env("TIERLOG__SPOOL__PATH", dir.join(format!("spool-{node}")))
        .env("LOGGING_MAX_SIZE_MB", "100")
        .env("LOGGING_BACKUP_COUNT", "100")
        .env("LOGGING_LEVEL", "WARNING")
        .stdout(if std::env::var_os("TIERLOG_BENCH_SERVER_LOG").is_some() { Stdio::inherit() } else { Stdio::null() })
        .spawn()?;
    Ok(Server { child, address: format!("http://127.0.0.1:{port}") })
}


/// Samples, every 10 ms, how many sessions of one database wait on a lock.
struct LockSampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<anyhow::Result<LockWaits>>,
}

/// What the lock sampler saw: the share of samples with a session waiting on a lock,
/// the mean number waiting, and per lock type (`pg_stat_activity.wait_event`: `tuple`
/// and `transactionid` for row locks, `extend` for a table growing, ...) the share of
/// samples in which a session waited on it.
struct LockWaits {
    share: f64,
    waiters: f64,
    by_type: Vec<(String, f64)>,
}

impl std::fmt::Display for LockWaits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let types: Vec<String> = self.by_type.iter().map(|(event, share)| format!("{event}:{share:.3}")).collect();
        write!(f, "lock_wait_share={:.3} lock_waiters={:.2} ", self.share, self.waiters)?;
        if !types.is_empty() {
            write!(f, "lock_waits_by_type={} ", types.join(","))?;
        }
        Ok(())
    }
}

impl LockSampler {
    fn start(db_url: &str, db_name: &str) -> LockSampler {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (url, name, done) = (db_url.to_owned(), db_name.to_owned(), stop.clone());
        let task = tokio::spawn(async move {
            let mut connection = PgConnection::connect(&url).await?;
            let (mut samples, mut waiting, mut waiters) = (0u64, 0u64, 0i64);
            let mut by_type: std::collections::BTreeMap<String, u64> = Default::default();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let now: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT wait_event, count(*) FROM pg_stat_activity
                     WHERE datname = $1 AND wait_event_type = 'Lock' GROUP BY wait_event",
                )
                .bind(&name)
                .fetch_all(&mut connection)
                .await?;
                samples += 1;
                waiting += u64::from(!now.is_empty());
                for (event, count) in now {
                    waiters += count;
                    *by_type.entry(event).or_default() += 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let samples = samples.max(1) as f64;
            Ok(LockWaits {
                share: waiting as f64 / samples,
                waiters: waiters as f64 / samples,
                by_type: by_type.into_iter().map(|(event, n)| (event, n as f64 / samples)).collect(),
            })
        });
        LockSampler { stop, task }
    }

    /// What was seen while the run lasted.
    async fn stop(self) -> anyhow::Result<LockWaits> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await?
    }
}

/// The Redis keys under `prefix`, and how many events their lists hold.
fn events_under(connection: &mut redis::Connection, prefix: &str) -> anyhow::Result<(Vec<String>, i64)> {
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}:*")).query(connection)?;
    let mut events = 0i64;
    for key in keys.iter().filter(|k| k.ends_with(":events")) {
        events += redis::cmd("LLEN").arg(key).query::<i64>(connection)?;
    }
    Ok((keys, events))
}

/// Mean events per batch that tierlog's writers wrote, from its `/metrics`.
async fn mean_batch(client: &reqwest::Client, address: &str) -> anyhow::Result<usize> {
    let text = client.get(format!("{address}/metrics")).bearer_auth(KEY).send().await?.error_for_status()?.text().await?;
    let counter = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse::<f64>().ok()))
            .ok_or_else(|| anyhow::anyhow!("/metrics has no {name}"))
    };
    let batches = counter("tierlog_batches_written_total")?;
    anyhow::ensure!(batches > 0.0, "tierlog wrote no batch");
    Ok((counter("tierlog_events_accepted_total")? / batches).round().max(1.0) as usize)
}

/// The raw limit of the hot tier's own work: the events tierlog wrote, with the very
/// lines it wrote (read back from its files), pushed again into Redis under a fresh
/// prefix by tierlog's own push (the same script, keys and pipeline per batch), with
/// no HTTP, parsing, files or queueing. Batches are cut as tierlog's writers cut them:
/// per writer lane, in file order, of tierlog's mean batch size.
struct RawPush<'a> {
    redis_url: &'a str,
    prefix: &'a str,
    settings: &'a Settings,
    batch: usize,
}

impl RawPush<'_> {
    /// Returns events/s.
    async fn rate(&self, files_dir: &std::path::Path) -> anyhow::Result<f64> {
        use tierlog::tiers::HotTier;
        let mut paths: Vec<std::path::PathBuf> =
            std::fs::read_dir(files_dir)?.map(|entry| entry.map(|e| e.path())).collect::<Result<_, _>>()?;
        paths.sort_by_key(|path| (std::fs::metadata(path).and_then(|m| m.modified()).ok(), path.clone()));
        let writers = std::env::var("TIERLOG__INGEST__WRITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(self.settings.ingest.writers)
            .max(1);
        let mut lanes: Vec<Vec<(tierlog::event::AuditEvent, Vec<u8>)>> = (0..writers).map(|_| Vec::new()).collect();
        for path in paths {
            for line in std::fs::read(path)?.split(|b| *b == b'\n').filter(|line| !line.is_empty()) {
                let event: tierlog::event::AuditEvent = serde_json::from_slice(line)?;
                lanes[tierlog::ingest::lane_of(&event.tenant_id, writers)].push((event, line.to_vec()));
            }
        }
        let total: usize = lanes.iter().map(Vec::len).sum();
        let mut batches: Vec<tierlog::tiers::EncodedBatch> = Vec::new();
        for lane in lanes {
            for chunk in lane.chunks(self.batch) {
                let (events, lines): (Vec<_>, Vec<_>) = chunk.iter().cloned().unzip();
                let batch = tierlog::tiers::EncodedBatch::new(events);
                // Encoded again, each line must be the one tierlog wrote.
                anyhow::ensure!(batch.iter().zip(&lines).all(|((_, encoded), line)| encoded == line.as_slice()), "a line does not re-encode to itself");
                batches.push(batch);
            }
        }
        let mut redis_settings = self.settings.redis.clone();
        redis_settings.url = self.redis_url.to_owned();
        redis_settings.key_prefix = format!("{}-raw", self.prefix);
        redis_settings.timeout_ms = 60_000;
        let mut tiers = Vec::new();
        for _ in 0..4 {
            let tier = Arc::new(tierlog::tiers::redis::RedisHotTier::new(&redis_settings)?);
            tier.ping().await.map_err(|e| anyhow::anyhow!("redis: {e}"))?;
            tiers.push(tier);
        }
        let routing = Routing::new(self.settings);
        let batches = Arc::new(batches);
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for tier in tiers {
            let (routing, batches, next) = (routing.clone(), batches.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(batch) = batches.get(i) else { return Ok::<(), anyhow::Error>(()) };
                    tier.push(&routing.hot_entries(batch)).await.map_err(|e| anyhow::anyhow!("redis: {e}"))?;
                }
            }));
        }
        for task in tasks {
            task.await??;
        }
        let rate = total as f64 / started.elapsed().as_secs_f64();
        let mut connection = redis::Client::open(self.redis_url)?.get_connection()?;
        let (keys, pushed) = events_under(&mut connection, &redis_settings.key_prefix)?;
        if !keys.is_empty() {
            redis::cmd("DEL").arg(&keys).query::<()>(&mut connection)?;
        }
        anyhow::ensure!(pushed == total as i64, "the raw push left {pushed} events in Redis, expected {total}");
        Ok(rate)
    }
}

/// How many times `--raw-pg` inserts into each layout, interleaved; it reports medians.
const RAW_ROUNDS: usize = 7;

/// The table layouts `--raw-pg` inserts into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    /// One heap per table with tierlog's lookup indexes and the keys it had before
    /// time partitions (`PRIMARY KEY (tenant_id, seq)`, `UNIQUE (id, tenant_id)`).
    Heap,
    /// Range-partitioned by `expires_at` with the same partitions as tierlog's tables.
    Partitioned,
    /// Partitioned, and each statement also records the rows' ids in a copy of
    /// `event_ids`, as tierlog's write does (how a retry is recognised across
    /// partitions).
    PartitionedWithIds,
}

impl Layout {
    const ALL: [Layout; 3] = [Layout::Heap, Layout::Partitioned, Layout::PartitionedWithIds];

    fn prefix(self) -> &'static str {
        match self {
            Layout::Heap => "raw_heap",
            Layout::Partitioned => "raw_part",
            Layout::PartitionedWithIds => "raw_ids",
        }
    }
}

/// Empty copies of tierlog's tables (same columns, same indexes) in `layout`, and the
/// statements that insert the rows tierlog stored into them, `per_statement` rows
/// each. Copies made by an earlier call are dropped first.
async fn raw_copies(pool: &sqlx::PgPool, per_statement: usize, layout: Layout) -> anyhow::Result<Vec<(String, String)>> {
    let mut statements: Vec<(String, String)> = Vec::new();
    let prefix = layout.prefix();
    let ids = format!("{prefix}_event_ids");
    sqlx::query(&format!("DROP TABLE IF EXISTS {ids}")).execute(pool).await?;
    if layout == Layout::PartitionedWithIds {
        sqlx::query(&format!("CREATE TABLE {ids} (LIKE event_ids INCLUDING ALL)")).execute(pool).await?;
    }
    for table in ["audit_logs", "security_events", "financial_audit_logs"] {
        let copy = format!("{prefix}_{table}");
        sqlx::query(&format!("DROP TABLE IF EXISTS {copy}")).execute(pool).await?;
        match layout {
            Layout::Heap => {
                // The keys of the tables before time partitions (migrations/0001).
                sqlx::query(&format!("CREATE TABLE {copy} (LIKE {table} INCLUDING ALL)")).execute(pool).await?;
                sqlx::query(&format!(
                    "ALTER TABLE {copy} DROP CONSTRAINT {copy}_pkey, ADD PRIMARY KEY (tenant_id, seq), ADD UNIQUE (id, tenant_id)"
                ))
                .execute(pool)
                .await?;
            }
            Layout::Partitioned | Layout::PartitionedWithIds => {
                sqlx::query(&format!("CREATE TABLE {copy} (LIKE {table} INCLUDING ALL) PARTITION BY RANGE (expires_at)"))
                    .execute(pool)
                    .await?;
                let bounds: Vec<String> = sqlx::query_scalar(
                    "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                     WHERE i.inhparent = $1::regclass ORDER BY c.relname",
                )
                .bind(table)
                .fetch_all(pool)
                .await?;
                for (n, bound) in bounds.iter().enumerate() {
                    sqlx::query(&format!("CREATE TABLE {copy}_{n} PARTITION OF {copy} {bound}")).execute(pool).await?;
                }
            }
        }
        let columns: Vec<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns WHERE table_name = $1 AND is_generated = 'NEVER' ORDER BY ordinal_position",
        )
        .bind(table)
        .fetch_all(pool)
        .await?;
        let list = columns.join(", ");
        let chunks: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT json_agg(t)::text FROM (SELECT {list}, (row_number() OVER (ORDER BY tenant_id, seq) - 1) / {per_statement} AS chunk FROM {table}) t GROUP BY chunk ORDER BY chunk"
        ))
        .fetch_all(pool)
        .await?;
        let insert = match layout {
            Layout::PartitionedWithIds => format!(
                "WITH r AS (SELECT * FROM json_populate_recordset(NULL::{copy}, $1::json)),
                 i AS (INSERT INTO {copy} ({list}) SELECT {list} FROM r)
                 INSERT INTO {ids} (tenant_id, table_name, id) SELECT tenant_id, '{table}', id FROM r"
            ),
            _ => format!("INSERT INTO {copy} ({list}) SELECT {list} FROM json_populate_recordset(NULL::{copy}, $1::json)"),
        };
        statements.extend(chunks.into_iter().map(|chunk| (insert.clone(), chunk)));
    }
    sqlx::query("CHECKPOINT").execute(pool).await?;
    Ok(statements)
}

/// Inserts the rows tierlog stored into empty copies of its tables in each layout,
/// 1,000 rows per statement from two sessions, `RAW_ROUNDS` times interleaved (a round
/// takes seconds: three sittings of three rounds put one layout at 0.93 to 1.05 of
/// another), and
/// returns each layout's median rows/s.
async fn raw_insert_rates(db_url: &str, rows: usize) -> anyhow::Result<Vec<(Layout, f64)>> {
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(3).connect(db_url).await?;
    let mut rates: Vec<(Layout, Vec<f64>)> = Layout::ALL.iter().map(|l| (*l, Vec::new())).collect();
    for _ in 0..RAW_ROUNDS {
        for (layout, runs) in &mut rates {
            let statements = Arc::new(raw_copies(&pool, 1000, *layout).await?);
            let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let started = Instant::now();
            let mut sessions = Vec::new();
            for _ in 0..2 {
                let (pool, statements, next) = (pool.clone(), statements.clone(), next.clone());
                sessions.push(tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((sql, rows)) = statements.get(i) else { return Ok::<(), sqlx::Error>(()) };
                        sqlx::query(sql).bind(rows).execute(&pool).await?;
                    }
                }));
            }
            for session in sessions {
                session.await??;
            }
            runs.push(rows as f64 / started.elapsed().as_secs_f64());
        }
    }
    pool.close().await;
    Ok(rates
        .into_iter()
        .map(|(layout, mut runs)| {
            runs.sort_by(f64::total_cmp);
            (layout, runs[runs.len() / 2])
        })
        .collect())
}

/// The latency of acknowledging each event durably without batching: each row
/// tierlog stored, inserted and committed on its own into an empty copy of its table,
/// open loop at `rate` rows/s from `sessions` sessions (latency counted from each
/// row's scheduled time, as for tierlog's requests). Returns the sorted latencies.
async fn raw_commit_latencies(db_url: &str, rate: f64, sessions: usize) -> anyhow::Result<Vec<Duration>> {
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(sessions as u32 + 1).connect(db_url).await?;
    let statements = Arc::new(raw_copies(&pool, 1, Layout::Heap).await?);
    // Open every session before the clock starts.
    let held: Vec<_> = futures_util::future::try_join_all((0..sessions).map(|_| pool.acquire())).await?;
    drop(held);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let every = Duration::from_secs_f64(1.0 / rate);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..sessions {
        let (pool, statements, next) = (pool.clone(), statements.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((sql, row)) = statements.get(i) else { return Ok::<_, sqlx::Error>(latencies) };
                let due = t0 + every * i as u32;
                tokio::time::sleep_until(due.into()).await;
                sqlx::query(sql).bind(row).execute(&pool).await?;
                latencies.push(due.elapsed());
            }
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.append(&mut task.await??);
    }
    pool.close().await;
    latencies.sort();
    Ok(latencies)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = options();
    println!(
        "# cargo bench --bench ingest -- --events {} --concurrency {} --batch {} --mix {}{}{}{}{}{}{}",
        o.events,
        o.concurrency,
        o.batches.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        o.mixes.join(","),
        if o.embedded { " --embedded" } else { "" },
        o.rate.map(|r| format!(" --rate {r}")).unwrap_or_default(),
        if o.raw_pg { " --raw-pg" } else { "" },
        if o.raw_redis { " --raw-redis" } else { "" },
        o.events_file.as_ref().map(|p| format!(" --events-file {p}")).unwrap_or_default(),
        if o.peer_work { " --peer-work" } else { "" },
    );
    println!(
        "# --nodes {} --rules {} --tail-clients {} --tenants {} --role-share {} --repeat {}",
        o.nodes.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        o.rules.iter().map(|r| if *r { "on" } else { "off" }).collect::<Vec<_>>().join(","),
        o.tail_clients.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        o.tenants,
        o.role_share,
        o.repeat
    );
    let setups = o.setups();
    for mix in &o.mixes {
        for &batch in &o.batches {
            let mut rates = vec![Vec::new(); setups.len()];
            for _ in 0..o.repeat {
                for (i, setup) in setups.iter().enumerate() {
                    rates[i].push(run(&o, mix, batch, *setup).await?);
                }
            }
            if o.repeat > 1 || setups.len() > 1 {
                summarise(&o, mix, batch, &setups, &rates);
            }
        }
    }
    Ok(())
}
