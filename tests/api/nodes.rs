//! Several `tierlog serve` processes on one Postgres and Redis behave as one: one
//! signing identity, revocations and rate limits across nodes, background work on one
//! node with failover, and a node killed under load loses nothing acknowledged.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::PgPool;
use tempfile::TempDir;
use tierlog::integrity::checkpoint::Signer;
use uuid::Uuid;

use crate::helpers::{event, file_lines_in, redis_url, RedisProcess, ServerProcess, TestDb, TestRedis, KEY};
use crate::load::{readiness, verify_ok, Load, PERSISTED};
use crate::redis_cluster::refused_start;

/// `n` nodes on `db` and `redis`, each with its own directory (files, spool), all
/// given one signing key unless `env` names one.
fn start_nodes(n: usize, db: &TestDb, redis: &TestRedis, env: &[(&str, &str)]) -> (Vec<ServerProcess>, Vec<TempDir>) {
    let dirs: Vec<TempDir> = (0..n).map(|_| tempfile::tempdir().expect("dir")).collect();
    let (_, seed) = Signer::generate_with_seed();
    let nodes = dirs
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            let name = format!("node-{i}");
            let mut all: Vec<(&str, &str)> = vec![("TIERLOG__CLUSTER__NODE_NAME", &name), ("TIERLOG__INTEGRITY__SIGNING_KEY", &seed)];
            all.extend_from_slice(env);
            ServerProcess::start(db, redis, dir.path(), &all)
        })
        .collect();
    (nodes, dirs)
}

fn sigkill(node: &mut ServerProcess) {
    let pid = i32::try_from(node.child.id()).expect("pid");
    // SAFETY: kill(2) with a pid we spawned and a valid signal number.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let _ = node.child.wait();
}

async fn send(client: &reqwest::Client, method: reqwest::Method, url: String, key: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = client.request(method, url).bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn tierlog_cli(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tierlog"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .output()
        .expect("tierlog runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_from_any_node_verify_everywhere_and_a_foreign_or_rotated_key_does_not_sign() {
    let db = TestDb::create().await;
    let redis = TestRedis::new(redis_url());
    let (old, old_seed) = Signer::generate_with_seed();
    let shared = [("TIERLOG__INTEGRITY__SIGNING_KEY", old_seed.as_str())];
    let (nodes, _dirs) = tokio::task::block_in_place(|| start_nodes(3, &db, &redis, &shared));
    let client = reqwest::Client::new();
    for (i, node) in nodes.iter().enumerate() {
        for tenant in ["acme", "globex"] {
            let batch = json!([event("auth", tenant), event("security", tenant)]);
            assert_eq!(send(&client, reqwest::Method::POST, format!("{}/audit/events", node.address), KEY, Some(batch)).await.0, 200);
            let (status, made) =
                send(&client, reqwest::Method::POST, format!("{}/audit/checkpoints?tenant_id={tenant}", node.address), KEY, None).await;
            assert_eq!(status, 200, "node {i}: {made}");
            assert_eq!(made["key_id"], old.public().id(), "{made}");
        }
    }
    for node in &nodes {
        let report = send(&client, reqwest::Method::GET, format!("{}/audit/verify", node.address), KEY, None).await.1;
        assert_eq!(report["ok"], true, "checkpoints of every node verify on {}: {report}", node.address);
        let ready = readiness(&client, &node.address).await;
        assert_eq!(ready["signing"]["state"], "signing", "{ready}");
    }
    // Offline, with nothing but the one public key.
    let public = old.public().to_base64();
    let (ok, said) = tierlog_cli(&["verify", "--public-key", &public], &[("DATABASE_URL", &db.url)]);
    assert!(ok && said.contains("ok      acme audit_logs") && said.contains("ok      globex security_events"), "{said}");

    // A node given another key refuses to start, naming the setting.
    let dir = tempfile::tempdir().expect("dir");
    let (_, foreign_seed) = Signer::generate_with_seed();
    let said = tokio::task::block_in_place(|| {
        refused_start(
            &[("DATABASE_URL", &db.url), ("REDIS_URL", &redis.url), ("TIERLOG__INTEGRITY__SIGNING_KEY", &foreign_seed)],
            dir.path(),
        )
    });
    assert!(said.contains("integrity.signing_key") && said.contains("not the deployment's current key"), "{said}");

    // Rotation: the new key is promoted; nodes still holding the old one stop signing.
    let (new, new_seed) = Signer::generate_with_seed();
    let (ok, said) = tierlog_cli(&["signing-key", "promote", "--public-key", &new.public().to_base64()], &[("DATABASE_URL", &db.url)]);
    assert!(ok && said.contains(&format!("retired: {}", old.public().id())), "{said}");
    let (status, refusal) =
        send(&client, reqwest::Method::POST, format!("{}/audit/checkpoints", nodes[0].address), KEY, None).await;
    assert_eq!((status, refusal["error"]["code"].as_str()), (503, Some("not_signing")), "{refusal}");
    let ready = readiness(&client, &nodes[0].address).await;
    assert_eq!(ready["signing"]["state"], "not_signing", "{ready}");
    assert_eq!(ready["signing"]["deployment_key_id"], new.public().id(), "{ready}");
    // Nor does the command line sign with it (archive manifests of export-chain).
    let out = tempfile::tempdir().expect("dir");
    let out_dir = out.path().display().to_string();
    let (ok, said) = tierlog_cli(
        &["export-chain", "--tenant", "acme", "--out", &out_dir],
        &[("DATABASE_URL", &db.url), ("TIERLOG__INTEGRITY__SIGNING_KEY", &old_seed)],
    );
    assert!(!ok && said.contains("integrity.signing_key"), "{said}");
    // Ingest goes on on the stale node.
    let batch = json!([event("auth", "acme")]);
    assert_eq!(send(&client, reqwest::Method::POST, format!("{}/audit/events", nodes[0].address), KEY, Some(batch)).await.0, 200);
    let renewed_dir = tempfile::tempdir().expect("dir");
    let renewed = tokio::task::block_in_place(|| {
        ServerProcess::start(&db, &redis, renewed_dir.path(), &[("TIERLOG__INTEGRITY__SIGNING_KEY", new_seed.as_str())])
    });
    let (status, made) = send(&client, reqwest::Method::POST, format!("{}/audit/checkpoints", renewed.address), KEY, None).await;
    assert_eq!(status, 200, "{made}");
    assert_eq!(made["key_id"], new.public().id());
    assert!(!made["checkpoints"].as_array().expect("made").is_empty(), "{made}");
    for address in nodes.iter().map(|n| &n.address).chain([&renewed.address]) {
        let report = send(&client, reqwest::Method::GET, format!("{address}/audit/verify"), KEY, None).await.1;
        assert_eq!(report["ok"], true, "old and new checkpoints verify on {address}: {report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_on_one_node_is_refused_on_every_node_within_a_second() {
    let db = TestDb::create().await;
    let redis = TestRedis::new(redis_url());
    let (nodes, _dirs) = tokio::task::block_in_place(|| start_nodes(3, &db, &redis, &[]));
    let client = reqwest::Client::new();
    let (status, created) = send(
        &client,
        reqwest::Method::POST,
        format!("{}/audit/keys", nodes[0].address),
        KEY,
        Some(json!({"name": "writer", "tenant_id": "acme", "permissions": ["events.write"]})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let (id, secret) = (created["key"]["id"].as_str().expect("id").to_owned(), created["secret"].as_str().expect("secret").to_owned());
    // Every node has verified (and cached) the key.
    for node in &nodes {
        let batch = json!([event("auth", "acme")]);
        assert_eq!(send(&client, reqwest::Method::POST, format!("{}/audit/events", node.address), &secret, Some(batch)).await.0, 200);
    }
    let (status, _) = send(&client, reqwest::Method::DELETE, format!("{}/audit/keys/{id}", nodes[0].address), KEY, None).await;
    assert_eq!(status, 200);
    let revoked_at = Instant::now();
    for node in &nodes[1..] {
        loop {
            let batch = json!([event("auth", "acme")]);
            let status = send(&client, reqwest::Method::POST, format!("{}/audit/events", node.address), &secret, Some(batch)).await.0;
            if status == 401 {
                break;
            }
            assert_eq!(status, 200);
            assert!(revoked_at.elapsed() < Duration::from_secs(1), "{} still takes the revoked key", node.address);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    eprintln!("revocation reached every node in {:?}", revoked_at.elapsed());
}

async fn metric(client: &reqwest::Client, address: &str, name: &str) -> u64 {
    let text = client.get(format!("{address}/metrics")).send().await.expect("metrics").text().await.expect("text");
    text.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in /metrics of {address}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_has_one_rate_budget_across_nodes_and_one_per_node_while_redis_is_down() {
    let db = TestDb::create().await;
    let mut private = tokio::task::spawn_blocking(RedisProcess::start).await.expect("redis");
    let redis = TestRedis::new(private.url());
    let limits = [
        ("TIERLOG__RATE_LIMIT__ENABLED", "true"),
        ("TIERLOG__RATE_LIMIT__REQUESTS_PER_SECOND", "0.05"),
        ("TIERLOG__RATE_LIMIT__BURST", "4"),
        ("TIERLOG__REDIS__TIMEOUT_MS", "200"),
    ];
    let (nodes, _dirs) = tokio::task::block_in_place(|| start_nodes(2, &db, &redis, &limits));
    let client = reqwest::Client::new();
    let status_at = |node: usize| {
        let (client, url) = (client.clone(), format!("{}/audit/events", nodes[node].address));
        async move { send(&client, reqwest::Method::POST, url, KEY, Some(json!([event("api", "acme")]))).await.0 }
    };
    // The burst of 4 is shared: two requests on each node spend it.
    for node in [0, 1, 0, 1] {
        assert_eq!(status_at(node).await, 200);
    }
    assert_eq!(status_at(0).await, 429, "the budget is spent across nodes");
    assert_eq!(status_at(1).await, 429);
    assert_eq!(metric(&client, &nodes[0].address, "tierlog_rate_limit_local_total").await, 0);

    // Redis gone: each node limits on its own.
    tokio::task::block_in_place(|| private.kill());
    for node in [0, 1] {
        let mut passed = 0;
        for _ in 0..6 {
            if status_at(node).await == 200 {
                passed += 1;
            }
        }
        assert_eq!(passed, 4, "node {node} lets its own burst through while Redis is down");
        assert!(metric(&client, &nodes[node].address, "tierlog_rate_limit_local_total").await >= 6);
    }
}

/// Which node holds the background lease, as every live node reports it.
async fn holders(client: &reqwest::Client, nodes: &[&ServerProcess]) -> Vec<String> {
    let mut seen = Vec::new();
    for node in nodes {
        let ready = readiness(client, &node.address).await;
        seen.push(ready["background"]["holder"].as_str().unwrap_or("").to_owned());
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_work_runs_on_one_node_at_a_time_and_moves_when_it_dies() {
    let db = TestDb::create().await;
    let redis = TestRedis::new(redis_url());
    let env = [
        ("TIERLOG__CLUSTER__LEASE_SECONDS", "2"),
        ("TIERLOG__INTEGRITY__CHECKPOINT_INTERVAL_SECONDS", "1"),
        ("TIERLOG__RETENTION__INTERVAL_SECONDS", "1"),
    ];
    let (mut nodes, _dirs) = tokio::task::block_in_place(|| start_nodes(3, &db, &redis, &env));
    let client = reqwest::Client::new();
    let watch = Duration::from_secs(6);
    tokio::time::sleep(watch).await;
    let mut runs = Vec::new();
    for node in &nodes {
        let checkpoints = metric(&client, &node.address, "tierlog_checkpoint_runs_total").await;
        let retention = metric(&client, &node.address, "tierlog_retention_runs_total").await;
        runs.push((checkpoints, retention));
    }
    let working: Vec<usize> = (0..3).filter(|i| runs[*i] != (0, 0)).collect();
    assert_eq!(working.len(), 1, "one node does the background work: {runs:?}");
    let holder = working[0];
    let (checkpoints, retention) = runs[holder];
    // One run per one-second interval over the watch (the first comes after one).
    for made in [checkpoints, retention] {
        assert!((4..=6).contains(&made), "one run per interval: {runs:?}");
    }
    let named = holders(&client, &nodes.iter().collect::<Vec<_>>()).await;
    assert!(named.iter().all(|h| *h == format!("node-{holder}")), "{named:?}");

    // The holder dies; another node takes over within the lease and one renewal.
    sigkill(&mut nodes[holder]);
    let died = Instant::now();
    let survivors: Vec<&ServerProcess> = nodes.iter().enumerate().filter(|(i, _)| *i != holder).map(|(_, n)| n).collect();
    let new_holder = loop {
        let named = holders(&client, &survivors).await;
        if named[0] == named[1] && named[0] != format!("node-{holder}") && !named[0].is_empty() {
            break named[0].clone();
        }
        assert!(died.elapsed() < Duration::from_secs(4), "the lease moved within 2 s + one renewal: {named:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("{new_holder} took the background work {:?} after node-{holder} died", died.elapsed());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut moved = Vec::new();
    for node in &survivors {
        moved.push(metric(&client, &node.address, "tierlog_checkpoint_runs_total").await);
    }
    assert_eq!(moved.iter().filter(|n| **n > 0).count(), 1, "one survivor works: {moved:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_under_load_across_three_loses_nothing_acknowledged() {
    let db = TestDb::create().await;
    let redis = TestRedis::new(redis_url());
    let (mut nodes, dirs) = tokio::task::block_in_place(|| start_nodes(3, &db, &redis, &[]));
    let addresses: Vec<String> = nodes.iter().map(|n| n.address.clone()).collect();
    let load = Load::start_across(&addresses, 6, 10, KEY, &crate::load::TENANTS);
    load.progress(600, Duration::from_secs(30)).await;
    // Each node extends its own writer shard's chains.
    let mut shards = Vec::new();
    for address in &addresses {
        shards.push(readiness(&reqwest::Client::new(), address).await["writer_shard"].as_i64());
    }
    shards.sort();
    assert_eq!(shards, [Some(0), Some(1), Some(2)]);
    sigkill(&mut nodes[1]);
    load.progress(600, Duration::from_secs(30)).await;
    let outcome = load.finish().await;

    let pool = PgPool::connect(&db.url).await.expect("pool");
    let dirs: Vec<&Path> = dirs.iter().map(TempDir::path).collect();
    // Postgres: each acknowledged event exactly once (retries carry the same id).
    let mut stored: HashMap<Uuid, i64> = HashMap::new();
    for table in ["audit_logs", "security_events", "financial_audit_logs"] {
        let rows: Vec<(Uuid, i64)> =
            sqlx::query_as(&format!("SELECT id, count(*) FROM {table} GROUP BY id")).fetch_all(&pool).await.expect("ids");
        for (id, count) in rows {
            *stored.entry(id).or_default() += count;
        }
    }
    let id = |e: &Value| Uuid::parse_str(e["id"].as_str().expect("id")).expect("uuid");
    for event in outcome.acked.iter().filter(|e| PERSISTED.contains(&e["category"].as_str().unwrap_or(""))) {
        assert_eq!(stored.get(&id(event)), Some(&1), "{} in Postgres exactly once", event["id"]);
    }
    // Files: every acknowledged event in the files of the node that acknowledged it.
    // A batch the killed node never answered was retried on another node; what the
    // killed node wrote of it before dying is the only thing in two nodes' files.
    let mut lines: HashMap<Uuid, usize> = HashMap::new();
    for line in dirs.iter().flat_map(|dir| file_lines_in(dir)) {
        *lines.entry(id(&line)).or_default() += 1;
    }
    let on_killed: std::collections::HashSet<Uuid> = file_lines_in(dirs[1]).iter().map(id).collect();
    for event in &outcome.acked {
        let copies = lines.get(&id(event)).copied().unwrap_or(0);
        assert!(copies >= 1, "{} is in the files", event["id"]);
        assert!(copies == 1 || (copies == 2 && on_killed.contains(&id(event))), "{} is in {copies} files", event["id"]);
    }
    let doubled = lines.values().filter(|n| **n > 1).count();
    assert!(doubled <= 6 * 10, "at most the killed node's in-flight batches are doubled: {doubled}");
    let survivor = &nodes[0].address;
    verify_ok(&reqwest::Client::new(), survivor).await;
    // The survivors' own files hold each event at most once.
    for dir in [dirs[0], dirs[2]] {
        let mut seen = std::collections::HashSet::new();
        assert!(file_lines_in(dir).iter().all(|line| seen.insert(id(line))), "no duplicate within one node's files");
    }
}

/// A network namespace joined to the host by two veth pairs: one carrying only
/// Postgres traffic, one carrying the rest (HTTP, Redis). Taking the first down cuts a
/// node in the namespace off from Postgres alone. Removed on drop.
struct Netns {
    name: String,
    postgres_link: String,
    /// Host and namespace ends of the Postgres link.
    postgres_host: String,
    /// Host and namespace ends of the other link.
    app_host: String,
    app_inside: String,
}

fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("ip (iproute2) must be installed; scripts/test.sh installs it");
    assert!(
        output.status.success(),
        "ip {args:?}: {} (network namespaces need root: run the tests as root, as scripts/test.sh in CI does)",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Netns {
    fn create() -> Netns {
        let tag = &Uuid::new_v4().simple().to_string()[..6];
        // A /24 per link, from the test's own random octet.
        let octet = 16 + u8::from_str_radix(&tag[..2], 16).expect("hex") % 200;
        let name = format!("tl-{tag}");
        let (postgres_link, app_link) = (format!("tlp{tag}"), format!("tla{tag}"));
        let postgres_host = format!("10.{octet}.1.1");
        let (app_host, app_inside) = (format!("10.{octet}.2.1"), format!("10.{octet}.2.2"));
        ip(&["netns", "add", &name]);
        let net = Netns { name: name.clone(), postgres_link: postgres_link.clone(), postgres_host: postgres_host.clone(), app_host: app_host.clone(), app_inside: app_inside.clone() };
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        for (link, host, inside) in [(&postgres_link, &postgres_host, format!("10.{octet}.1.2")), (&app_link, &app_host, app_inside.clone())] {
            let peer = format!("{link}n");
            ip(&["link", "add", link, "type", "veth", "peer", "name", &peer]);
            ip(&["link", "set", &peer, "netns", &name]);
            ip(&["addr", "add", &format!("{host}/24"), "dev", link]);
            ip(&["link", "set", link, "up"]);
            ip(&["-n", &name, "addr", "add", &format!("{inside}/24"), "dev", &peer]);
            ip(&["-n", &name, "link", "set", &peer, "up"]);
        }
        net
    }

    fn set_postgres_link(&self, up: bool) {
        ip(&["link", "set", &self.postgres_link, if up { "up" } else { "down" }]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // The namespace's ends go with it, and their host peers with them.
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_postgres_spools_and_replays_into_the_same_chains() {
    let net = tokio::task::spawn_blocking(Netns::create).await.expect("namespace");
    let (postgres_host, app_host) = (net.postgres_host.clone(), net.app_host.clone());
    let postgres = tokio::task::spawn_blocking(move || crate::helpers::PostgresProcess::start_listening(&[&postgres_host]))
        .await
        .expect("postgres");
    let db = TestDb::create_on(&postgres.admin_url()).await;
    let redis_port = crate::helpers::free_port();
    let redis_server = tokio::task::spawn_blocking(move || RedisProcess::start_bound(redis_port, &["127.0.0.1", &app_host]))
        .await
        .expect("redis");
    let redis = TestRedis::new(redis_server.url());
    let (_, seed) = Signer::generate_with_seed();
    let env = [
        ("TIERLOG__INTEGRITY__SIGNING_KEY", seed.as_str()),
        ("TIERLOG__POSTGRES__WRITE_TIMEOUT_MS", "1000"),
        ("TIERLOG__POSTGRES__CONNECT_TIMEOUT_MS", "500"),
        ("TIERLOG__SPOOL__RETRY_INTERVAL_MS", "100"),
    ];
    let dirs: Vec<TempDir> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let mut nodes: Vec<ServerProcess> =
        (0..2).map(|i| tokio::task::block_in_place(|| ServerProcess::start(&db, &redis, dirs[i].path(), &env))).collect();
    let inside_db = db.url.replace("127.0.0.1", &net.postgres_host);
    let inside_redis = redis.url.replace("127.0.0.1", &net.app_host);
    let listen = format!("{}:0", net.app_inside);
    let mut inside_env = env.to_vec();
    inside_env.extend([("DATABASE_URL", inside_db.as_str()), ("REDIS_URL", inside_redis.as_str()), ("TIERLOG_LISTEN", listen.as_str())]);
    let cut_node =
        tokio::task::block_in_place(|| ServerProcess::start_in_netns(&net.name, &db, &redis, dirs[2].path(), &inside_env));
    let client = reqwest::Client::new();
    assert_eq!(readiness(&client, &cut_node.address).await["postgres"]["status"], "up");
    nodes.push(cut_node);

    let addresses: Vec<String> = nodes.iter().map(|n| n.address.clone()).collect();
    let load = Load::start_across(&addresses, 6, 10, KEY, &crate::load::TENANTS);
    load.progress(300, Duration::from_secs(30)).await;
    tokio::task::block_in_place(|| net.set_postgres_link(false));
    let cut_at = Instant::now();
    load.progress(600, Duration::from_secs(60)).await;
    // The cut node spools and answers; the others write to Postgres.
    let spooled = loop {
        let ready = readiness(&client, &nodes[2].address).await;
        if ready["spool"]["pending_events"].as_u64().unwrap_or(0) > 0 {
            break ready;
        }
        assert!(cut_at.elapsed() < Duration::from_secs(20), "the cut node spools: {ready}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(spooled["status"], "degraded", "{spooled}");
    // The others write on into Postgres while the link is still cut: a transaction
    // the cut node left holding chain heads is ended by Postgres within half the
    // write timeout, so a batch of theirs waiting on it may at worst be spooled, and
    // replayed, while the cut lasts.
    for node in &nodes[..2] {
        loop {
            let ready = readiness(&client, &node.address).await;
            assert_eq!(ready["postgres"]["status"], "up", "{ready}");
            if ready["spool"]["pending_events"] == 0 {
                break;
            }
            assert!(cut_at.elapsed() < Duration::from_secs(20), "{} writes to Postgres during the cut: {ready}", node.address);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The load goes on meanwhile; the node's own count must move (waiting for some
        // events acknowledged by any node would leave this one no time of its own).
        let before = metric(&client, &node.address, "tierlog_rows_persisted_total").await;
        let asked = Instant::now();
        while metric(&client, &node.address, "tierlog_rows_persisted_total").await <= before {
            assert!(asked.elapsed() < Duration::from_secs(20), "{} persists during the cut", node.address);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    load.progress(300, Duration::from_secs(60)).await;
    tokio::task::block_in_place(|| net.set_postgres_link(true));
    load.progress(300, Duration::from_secs(60)).await;
    let outcome = load.finish().await;
    let restored = Instant::now();
    loop {
        let ready = readiness(&client, &nodes[2].address).await;
        if ready["status"] == "ready" && ready["spool"]["pending_events"] == 0 {
            break;
        }
        assert!(restored.elapsed() < Duration::from_secs(60), "the spool replays once the link is back: {ready}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let spooled_events = metric(&client, &nodes[2].address, "tierlog_spooled_events_total").await;
    assert!(spooled_events > 0);
    assert_eq!(metric(&client, &nodes[2].address, "tierlog_replayed_events_total").await, spooled_events);

    let pool = PgPool::connect(&db.url).await.expect("pool");
    let dirs: Vec<&Path> = dirs.iter().map(TempDir::path).collect();
    crate::load::assert_exactly_once(&pool, &dirs, &outcome.acked).await;
    for node in &nodes {
        verify_ok(&client, &node.address).await;
    }
    let (ok, said) = tierlog_cli(&["verify"], &[("DATABASE_URL", &db.url), ("TIERLOG__INTEGRITY__SIGNING_KEY", &seed)]);
    assert!(ok, "tierlog verify: {said}");
    eprintln!("{spooled_events} events spooled by the cut node and replayed; {} acknowledged in all", outcome.acked.len());
    drop(redis_server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_holding_chain_heads_does_not_stall_the_others() {
    let db = TestDb::create().await;
    let redis = TestRedis::new(redis_url());
    // One tenant: every batch of both nodes extends the same chains.
    let env = [("TIERLOG__POSTGRES__WRITE_TIMEOUT_MS", "2000"), ("TIERLOG__SPOOL__RETRY_INTERVAL_MS", "100")];
    let (nodes, dirs) = tokio::task::block_in_place(|| start_nodes(2, &db, &redis, &env));
    let client = reqwest::Client::new();
    static ONE: [&str; 1] = ["acme"];
    let frozen_load = Load::start_across(&[nodes[0].address.clone()], 3, 20, KEY, &ONE);
    let live_load = Load::start_across(&[nodes[1].address.clone()], 3, 20, KEY, &ONE);
    live_load.progress(200, Duration::from_secs(30)).await;
    let pid = i32::try_from(nodes[0].child.id()).expect("pid");
    for round in 0..4 {
        frozen_load.progress(40, Duration::from_secs(30)).await;
        // Frozen (as by a VM pause) while it most likely holds chain heads mid-write.
        // SAFETY: kill(2) with a pid we spawned and a valid signal number.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        let frozen_at = Instant::now();
        let before = metric(&client, &nodes[1].address, "tierlog_rows_persisted_total").await;
        // The live node persists again within the write timeout (Postgres ends the
        // frozen node's transaction after half of it), and its spool, if it had to
        // use it meanwhile, drains while the other is still frozen.
        loop {
            let persisted = metric(&client, &nodes[1].address, "tierlog_rows_persisted_total").await;
            let pending = readiness(&client, &nodes[1].address).await["spool"]["pending_events"].as_u64().unwrap_or(0);
            if persisted > before + 40 && pending == 0 {
                break;
            }
            assert!(frozen_at.elapsed() < Duration::from_secs(6), "round {round}: the live node is stalled by the frozen one");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    }
    let mut acked = frozen_load.finish().await.acked;
    acked.extend(live_load.finish().await.acked);
    for node in &nodes {
        let ready = Instant::now();
        while readiness(&client, &node.address).await["spool"]["pending_events"] != 0 {
            assert!(ready.elapsed() < Duration::from_secs(30), "{} drains its spool", node.address);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let pool = PgPool::connect(&db.url).await.expect("pool");
    let dirs: Vec<&Path> = dirs.iter().map(TempDir::path).collect();
    crate::load::assert_exactly_once(&pool, &dirs, &acked).await;
    verify_ok(&client, &nodes[1].address).await;
}
