//! The hot tier on a real Redis Cluster: three masters and three replicas of the
//! machine's `redis-server` on loopback ports, joined with `redis-cli --cluster
//! create`. Every hot-tier operation works on it, a configuration that does not match
//! the server is refused at start, and killing a master under load fails no request.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use tempfile::TempDir;
use tierlog::event::Category;
use tierlog::tiers::redis::events_key;

use crate::helpers::{event, free_ports, redis_url, TestApp, TestDb, TestRedis, KEY};
use crate::load::{readiness, verify_ok, Load};

/// One `redis-server --cluster-enabled yes`.
struct ClusterNode {
    port: u16,
    child: Option<Child>,
}

/// A six-node Redis Cluster (three masters, one replica each), stopped on drop.
pub struct RedisCluster {
    nodes: Vec<ClusterNode>,
    _dir: TempDir,
}

fn redis_cli(args: &[&str]) -> std::process::Output {
    Command::new("redis-cli").args(args).output().expect("redis-cli must be installed (scripts/test.sh installs redis)")
}

impl RedisCluster {
    /// Starts six nodes on free ports (their bus ports too) and joins them.
    pub fn start() -> RedisCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut nodes = Vec::new();
        let ports = free_ports(12);
        for pair in ports.chunks(2) {
            let (port, bus) = (pair[0], pair[1]);
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--cluster-port", &bus.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000", "--save", "", "--appendonly", "no"])
                .arg("--cluster-config-file")
                .arg(dir.path().join(format!("nodes-{port}.conf")))
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (scripts/test.sh installs it)");
            nodes.push(ClusterNode { port, child: Some(child) });
        }
        let cluster = RedisCluster { nodes, _dir: dir };
        for node in &cluster.nodes {
            cluster.wait_for(Duration::from_secs(10), || cluster.ask(node.port, &["PING"]).trim() == "PONG");
        }
        let addresses: Vec<String> = cluster.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addresses.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "1", "--cluster-yes"]);
        let created = redis_cli(&args);
        assert!(created.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&created.stdout));
        cluster.wait_healthy(Duration::from_secs(30));
        cluster
    }

    fn ask(&self, port: u16, args: &[&str]) -> String {
        let mut all = vec!["-p".to_owned(), port.to_string()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        String::from_utf8_lossy(&redis_cli(&all).stdout).into_owned()
    }

    fn wait_for(&self, timeout: Duration, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !check() {
            assert!(Instant::now() < deadline, "the Redis Cluster did not get there in {timeout:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn live(&self) -> impl Iterator<Item = &ClusterNode> {
        self.nodes.iter().filter(|n| n.child.is_some())
    }

    /// Waits until every live node says the cluster is ok, every slot is served and
    /// every replica is in sync with its master.
    pub fn wait_healthy(&self, timeout: Duration) {
        self.wait_for(timeout, || {
            self.live().all(|node| {
                let info = self.ask(node.port, &["CLUSTER", "INFO"]);
                let replication = self.ask(node.port, &["INFO", "replication"]);
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && (replication.contains("role:master") || replication.contains("master_link_status:up"))
            })
        });
    }

    /// Seed URLs of every node, comma-separated (what REDIS_URL holds).
    pub fn urls(&self) -> String {
        self.nodes.iter().map(|n| format!("redis://127.0.0.1:{}", n.port)).collect::<Vec<_>>().join(",")
    }

    /// The port of the master serving `key` now.
    pub fn master_of(&self, key: &str) -> u16 {
        let node = self.live().next().expect("a live node");
        let slot: u16 = self.ask(node.port, &["CLUSTER", "KEYSLOT", key]).trim().parse().expect("slot");
        let nodes = self.ask(node.port, &["CLUSTER", "NODES"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            for range in &fields[8..] {
                let (low, high) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(low), Ok(high)) = (low.parse::<u16>(), high.parse::<u16>()) {
                    if (low..=high).contains(&slot) {
                        let address = fields[1].split('@').next().expect("address");
                        return address.rsplit_once(':').expect("port").1.parse().expect("port");
                    }
                }
            }
        }
        panic!("no master serves slot {slot}:\n{nodes}");
    }

    /// Number of keys each live master holds under `prefix`.
    pub fn keys_per_master(&self, prefix: &str) -> Vec<usize> {
        self.live()
            .filter(|n| self.ask(n.port, &["INFO", "replication"]).contains("role:master"))
            .map(|n| self.ask(n.port, &["--scan", "--pattern", &format!("{prefix}:*")]).lines().count())
            .collect()
    }

    /// SIGKILLs the node on `port`.
    pub fn kill(&mut self, port: u16) {
        let node = self.nodes.iter_mut().find(|n| n.port == port).expect("a node of this cluster");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The lines of one hot-tier list, read from the cluster.
    pub fn list(&self, prefix: &str, tenant: &str, category: Category) -> Vec<Value> {
        let key = events_key(prefix, tenant, category);
        let port = self.master_of(&key);
        self.ask(port, &["LRANGE", &key, "0", "-1"])
            .lines()
            .filter(|line| !line.is_empty())
            .map(|line| serde_json::from_str(line).expect("json line in redis"))
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

async fn start_cluster() -> RedisCluster {
    tokio::task::spawn_blocking(RedisCluster::start).await.expect("cluster starts")
}

async fn app_on(cluster: &RedisCluster, configure: impl FnOnce(&mut tierlog::config::Settings)) -> TestApp {
    TestApp::spawn_on(TestRedis::new(cluster.urls()), |s| {
        s.redis.cluster = true;
        configure(s);
    })
    .await
}

async fn get(app: &TestApp, path: &str) -> Value {
    let (status, body) = app.send_json(Method::GET, path, KEY, None).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hot_tier_operation_works_on_a_redis_cluster() {
    let cluster = start_cluster().await;
    let app = app_on(&cluster, |s| {
        s.rate_limit.enabled = true;
        s.rate_limit.requests_per_second = 1000.0;
        s.rate_limit.burst = 1000;
    })
    .await;
    let tenants: Vec<String> = (0..24).map(|i| format!("tenant-{i}")).collect();
    let mut batch = Vec::new();
    for tenant in &tenants {
        for category in ["auth", "api", "security"] {
            batch.push(event(category, tenant));
        }
    }
    let mut subject = event("audit", "tenant-3");
    subject["user_id"] = json!("u-42");
    subject["email"] = json!("dana@example.com");
    batch.push(subject);
    assert_eq!(app.post_events(&json!(batch)).await.status(), 200);

    // The keys are spread over the masters, a tenant's in one slot.
    let spread = cluster.keys_per_master(&app.redis.prefix);
    assert_eq!(spread.len(), 3, "{spread:?}");
    assert!(spread.iter().filter(|n| **n > 0).count() >= 2, "tenants land on several masters: {spread:?}");
    for tenant in &tenants {
        assert_eq!(cluster.list(&app.redis.prefix, tenant, Category::Auth).len(), 1, "{tenant}");
    }

    let one = get(&app, "/audit/redis?tenant_id=tenant-7&category=auth").await;
    assert_eq!(one["items"].as_array().expect("items").len(), 1, "{one}");
    // Every tenant: keys found by SCAN on each master.
    let all = get(&app, "/audit/redis?category=api&limit=1000").await;
    let seen: std::collections::BTreeSet<&str> =
        all["items"].as_array().expect("items").iter().filter_map(|i| i["tenant_id"].as_str()).collect();
    assert_eq!(seen.len(), tenants.len(), "{all}");
    let combined = get(&app, "/audit/combined?tenant_id=tenant-5").await;
    assert_eq!(combined["partial"], false, "{combined}");
    assert!(combined["items"].as_array().expect("items").len() >= 3, "{combined}");

    // Erasure rewrites the hot lists in the subject's slot.
    let (status, receipt) = app.send_json(Method::POST, "/audit/subjects/u-42/erase?tenant_id=tenant-3", KEY, None).await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["redis_entries"], 1, "{receipt}");
    let audit = cluster.list(&app.redis.prefix, "tenant-3", Category::Audit);
    assert!(audit.iter().all(|i| i["email"].is_null() && i["user_id"] != "u-42"), "{audit:?}");

    let ready = readiness(&app.client, &app.address).await;
    assert_eq!(ready["redis"]["status"], "up", "{ready}");
    let metrics = app.client.get(format!("{}/metrics", app.address)).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("tierlog_rate_limit_local_total 0"), "rate limits were checked in the cluster");
    assert!(metrics.contains("tierlog_redis_misses_total 0"), "no miss on a healthy cluster");
    verify_ok(&app.client, &app.address).await;
    app.stop().await;
}

/// Two nodes on one Redis Cluster: a client of either follows both nodes' events,
/// and the nodes count rule windows together (each group's keys in its own slot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_tail_and_rule_windows_span_nodes_on_a_redis_cluster() {
    let cluster = start_cluster().await;
    let a = app_on(&cluster, |_| {}).await;
    let b = TestApp::spawn_on(TestRedis { url: cluster.urls(), prefix: a.redis.prefix.clone() }, |s| s.redis.cluster = true).await;
    let mut on_a = crate::stream::Follower::open(&a, "", KEY, None).await;
    // The subscription is in place once an event sent to b reaches a's client.
    let mut heard = false;
    for _ in 0..50 {
        assert_eq!(b.post_events(&event("audit", "acme")).await.status(), 200);
        if on_a.next(Duration::from_millis(200)).await.is_some() {
            heard = true;
            break;
        }
    }
    assert!(heard, "node a never heard of node b's events over the cluster");
    while on_a.next(Duration::from_millis(300)).await.is_some() {}
    let sent = event("auth", "acme");
    assert_eq!(b.post_events(&sent).await.status(), 200);
    let got = on_a.take(1).await;
    assert_eq!(got[0].id.as_deref(), sent["id"].as_str());

    // Twelve users of several tenants (so several slots), each failing three times
    // through a and twice through b: one alert per user.
    let now = chrono::Utc::now();
    let failure = |tenant: &str, user: &str, second: i64| json!({"category": "auth", "tenant_id": tenant, "status": "failure",
        "action": "auth.login_failed", "user_id": user, "timestamp": (now + chrono::Duration::seconds(second)).to_rfc3339()});
    let users: Vec<(String, String)> = (0..12).map(|i| (format!("tenant-{}", i % 4), format!("user-{i}"))).collect();
    let through_a: Vec<Value> = users.iter().flat_map(|(t, u)| (0..3).map(move |s| (t, u, s))).map(|(t, u, s)| failure(t, u, s)).collect();
    let through_b: Vec<Value> = users.iter().flat_map(|(t, u)| (3..5).map(move |s| (t, u, s))).map(|(t, u, s)| failure(t, u, s)).collect();
    assert_eq!(a.post_events(&json!(through_a)).await.status(), 200);
    assert_eq!(b.post_events(&json!(through_b)).await.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut alerted = std::collections::BTreeSet::new();
    while alerted.len() < users.len() && Instant::now() < deadline {
        alerted.clear();
        for app in [&a, &b] {
            for tenant in ["tenant-0", "tenant-1", "tenant-2", "tenant-3"] {
                for alert in crate::detection::alerts(app, tenant, "failed-logins-per-user").await {
                    assert_eq!(alert["details"]["count"], 5, "{alert}");
                    assert!(alerted.insert(alert["user_id"].as_str().unwrap().to_owned()), "one alert per user: {alert}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(alerted.len(), users.len(), "{alerted:?}");
    let spread = cluster.keys_per_master(&a.redis.prefix);
    assert!(spread.iter().filter(|n| **n > 0).count() >= 2, "rule windows land on several masters: {spread:?}");
    b.stop().await;
    a.stop().await;
}

/// Runs `tierlog serve` expecting it to refuse to start; returns what it printed.
pub fn refused_start(env: &[(&str, &str)], dir: &Path) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tierlog"));
    command
        .arg("serve")
        .env("TIERLOG_LISTEN", "127.0.0.1:0")
        .env("TIERLOG_BOOTSTRAP_KEY", KEY)
        .env("LOGGING_FILE", dir.join("audit.jsonl"))
        .env("TIERLOG__INTEGRITY__SIGNING_KEY_FILE", dir.join("signing.key"))
        .env("TIERLOG__SPOOL__PATH", dir.join("spool"))
        .env("TIERLOG__EMBEDDED__DATA_DIR", dir.join("data"))
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("tierlog starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(!status.success(), "tierlog must refuse to start");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tierlog started with a configuration it must refuse: {env:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("output");
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_is_not_what_redis_cluster_says_is_refused_at_start() {
    let cluster = start_cluster().await;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().expect("dir");
    let plain = redis_url();
    let said = tokio::task::block_in_place(|| {
        refused_start(&[("DATABASE_URL", &db.url), ("REDIS_URL", &plain), ("REDIS_CLUSTER", "true")], dir.path())
    });
    assert!(said.contains("redis.cluster") && said.contains("not a Redis Cluster"), "{said}");
    let urls = cluster.urls();
    let first = urls.split(',').next().expect("a node").to_owned();
    let said = tokio::task::block_in_place(|| refused_start(&[("DATABASE_URL", &db.url), ("REDIS_URL", &first)], dir.path()));
    assert!(said.contains("REDIS_CLUSTER=true") && said.contains("names a Redis Cluster node"), "{said}");
    let said = tokio::task::block_in_place(|| refused_start(&[("DATABASE_URL", &db.url), ("REDIS_URL", &urls)], dir.path()));
    assert!(said.contains("redis.url (REDIS_URL)") && said.contains("several"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_load_fails_no_request_and_misses_only_its_failover() {
    let mut cluster = start_cluster().await;
    let app = app_on(&cluster, |s| {
        s.redis.timeout_ms = 300;
        s.redis.retry_interval_ms = 200;
    })
    .await;
    let prefix = app.redis.prefix.clone();
    let hot_count = |cluster: &RedisCluster| -> usize {
        crate::load::TENANTS
            .iter()
            .flat_map(|t| Category::ALL.iter().map(move |c| (t, c)))
            .map(|(t, c)| cluster.list(&prefix, t, *c).len())
            .sum()
    };

    // Before: everything acknowledged is in the hot tier.
    let before = Load::start(&app.address, 4, 10);
    before.progress(400, Duration::from_secs(30)).await;
    let before = before.finish().await;
    assert_eq!(before.refusals, 0);
    assert_eq!(hot_count(&cluster), before.acked.len());

    // During: the master of one tenant's slot dies; its replica is promoted.
    let during = Load::start(&app.address, 4, 10);
    during.progress(200, Duration::from_secs(30)).await;
    let victim = cluster.master_of(&events_key(&prefix, "acme", Category::Auth));
    let killed_at = Instant::now();
    tokio::task::block_in_place(|| cluster.kill(victim));
    tokio::task::block_in_place(|| cluster.wait_healthy(Duration::from_secs(30)));
    let failover = killed_at.elapsed();
    assert_ne!(cluster.master_of(&events_key(&prefix, "acme", Category::Auth)), victim, "a replica took over");
    // Until the node's client has found the new master.
    during.progress(400, Duration::from_secs(30)).await;
    let during = during.finish().await;
    assert_eq!(during.refusals, 0, "no ingest request failed while a master died");
    let misses = tierlog::telemetry::Counters::get(&app.counters.redis_misses);
    let in_hot = hot_count(&cluster);
    let missing = before.acked.len() + during.acked.len() - in_hot;
    assert!(misses > 0, "the failover's misses are counted");
    assert!(missing as u64 <= misses, "{missing} events missing from the hot tier, {misses} misses counted");

    // After: every event is in the hot tier again, and reads work.
    let after = Load::start(&app.address, 4, 10);
    after.progress(400, Duration::from_secs(30)).await;
    let after = after.finish().await;
    assert_eq!(after.refusals, 0);
    assert_eq!(tierlog::telemetry::Counters::get(&app.counters.redis_misses), misses, "no miss after the failover");
    assert_eq!(hot_count(&cluster), in_hot + after.acked.len());
    let hot = get(&app, "/audit/redis?tenant_id=acme&category=auth&limit=5").await;
    assert_eq!(hot["items"].as_array().expect("items").len(), 5, "{hot}");
    eprintln!("failover took {failover:?}; {misses} events missed the hot tier");
    app.stop().await;
}
