//! The test harness: every test gets the real service on port 0 with its own
//! database, its own Redis key prefix and its own directory, all removed afterwards.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::CONTENT_TYPE;
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};
use tempfile::TempDir;
use tierlog::app::Application;
use tierlog::config::Settings;
use tierlog::event::Category;
use tierlog::telemetry::Counters;
use tierlog::tiers::redis::events_key;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// The bootstrap key every test app accepts.
pub const KEY: &str = "test-bootstrap-key-0123456789";

/// Server the per-test databases are created on.
pub fn admin_database_url() -> String {
    std::env::var("TIERLOG_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Redis the tests use, each under its own key prefix.
pub fn redis_url() -> String {
    std::env::var("TIERLOG_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn with_database(url: &str, database: &str) -> String {
    let (base, _) = url.rsplit_once('/').unwrap_or((url, ""));
    format!("{base}/{database}")
}

/// A database of its own, dropped (with its connections) when the test ends.
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        TestDb::create_on(&admin_database_url()).await
    }

    /// A database on the server of `admin` (a URL of a database there).
    pub async fn create_on(admin: &str) -> TestDb {
        let name = format!("tierlog_test_{}", Uuid::new_v4().simple());
        let admin = admin.to_owned();
        let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!("cannot reach Postgres at {admin} ({e}); run scripts/test.sh, which starts it")
        });
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create database");
        TestDb { url: with_database(&admin, &name), name, admin }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin = self.admin.clone();
        // Drop runs outside any async context we can await in: use a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await;
                }
            });
        })
        .join();
    }
}

/// A Redis key prefix of its own; its keys are deleted when the test ends.
pub struct TestRedis {
    pub url: String,
    pub prefix: String,
}

impl TestRedis {
    pub fn new(url: String) -> TestRedis {
        TestRedis { url, prefix: format!("tierlog-test-{}", Uuid::new_v4().simple()) }
    }

    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url.as_str())
            .and_then(|c| c.get_connection())
            .unwrap_or_else(|e| panic!("cannot reach Redis at {} ({e}); run scripts/test.sh, which starts it", self.url))
    }

    /// The hot-tier list of one tenant and category, newest first.
    pub fn list(&self, tenant: &str, category: Category) -> Vec<Value> {
        let raw: Vec<String> = redis::cmd("LRANGE")
            .arg(events_key(&self.prefix, tenant, category))
            .arg(0)
            .arg(-1)
            .query(&mut self.connection())
            .expect("lrange");
        raw.iter().map(|line| serde_json::from_str(line).expect("json line in redis")).collect()
    }

    /// Every key under this prefix.
    pub fn keys(&self) -> Vec<String> {
        redis::cmd("KEYS").arg(format!("{}:*", self.prefix)).query(&mut self.connection()).unwrap_or_default()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        if let Ok(mut conn) = redis::Client::open(self.url.as_str()).and_then(|c| c.get_connection()) {
            let keys: Vec<String> =
                redis::cmd("KEYS").arg(format!("{}:*", self.prefix)).query(&mut conn).unwrap_or_default();
            if !keys.is_empty() {
                let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut conn);
            }
        }
    }
}

/// Settings pointing at this test's database, Redis prefix and directory.
pub fn test_settings(db: &TestDb, redis: &TestRedis, dir: &TempDir) -> Settings {
    let mut settings = Settings::defaults().expect("built-in defaults");
    settings.server.listen = "127.0.0.1:0".into();
    settings.server.bootstrap_key = KEY.into();
    settings.postgres.url = db.url.clone();
    settings.postgres.max_connections = 4;
    settings.redis.url = redis.url.clone();
    // Several seed URLs: a Redis Cluster's.
    settings.redis.cluster = redis.url.contains(',');
    settings.redis.key_prefix = redis.prefix.clone();
    settings.redis.retry_interval_ms = 100;
    settings.files.path = dir.path().join("audit.jsonl");
    settings.integrity.signing_key_file = dir.path().join("signing.key");
    settings.retention.archive_path = dir.path().join("archive");
    // Rows leave at their expiry, row by row: the tests move the clock by days past
    // an expiry, not to the end of its time partition. `partitions.rs` tests the
    // default, partitions dropped whole.
    settings.retention.exact_expiry = true;
    settings.spool.path = dir.path().join("spool");
    settings.validate().expect("test settings are valid");
    settings
}

/// A running service and everything it writes to.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub counters: Arc<Counters>,
    pub pool: PgPool,
    pub redis: TestRedis,
    pub dir: TempDir,
    /// The service's clock: moving it forward makes retention see the future.
    pub clock: tierlog::clock::Clock,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    pub db: TestDb,
}

impl TestApp {
    /// The service with test settings.
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(|_| {}).await
    }

    /// The service with test settings changed by `configure`.
    pub async fn spawn_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
        TestApp::spawn_on(TestRedis::new(redis_url()), configure).await
    }

    /// The service using `redis` for its hot tier.
    pub async fn spawn_on(redis: TestRedis, configure: impl FnOnce(&mut Settings)) -> TestApp {
        TestApp::spawn_on_database(TestDb::create().await, redis, configure).await
    }

    /// The service on `db` and `redis`.
    pub async fn spawn_on_database(db: TestDb, redis: TestRedis, configure: impl FnOnce(&mut Settings)) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut settings = test_settings(&db, &redis, &dir);
        configure(&mut settings);
        let app = Application::build(settings).await.expect("app builds");
        let address = format!("http://{}", app.local_addr().expect("addr"));
        let counters = app.counters();
        let clock = app.clock();
        let (shutdown, stop) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async {
            let _ = stop.await;
        }));
        let pool = PgPool::connect(&db.url).await.expect("test pool");
        TestApp {
            address,
            client: reqwest::Client::new(),
            counters,
            pool,
            redis,
            dir,
            clock,
            shutdown: Some(shutdown),
            server: Some(server),
            db,
        }
    }

    /// Posts `body` as JSON with the bootstrap key.
    pub async fn post_events(&self, body: &Value) -> reqwest::Response {
        self.post_raw("application/json", serde_json::to_vec(body).expect("json"), Some(KEY)).await
    }

    /// Posts raw bytes with a content type and an optional key.
    pub async fn post_raw(&self, content_type: &str, body: Vec<u8>, key: Option<&str>) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("{}/audit/events", self.address))
            .header(CONTENT_TYPE, content_type)
            .body(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send().await.expect("request sent")
    }

    /// Sends a request with `key` (and a JSON body) and returns the status and the
    /// JSON answer (`null` when the body is not JSON).
    pub async fn send_json(&self, method: reqwest::Method, path: &str, key: &str, body: Option<&Value>) -> (u16, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.address)).bearer_auth(key);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Runs `sql` with the append-only triggers bypassed, as an attacker with
    /// database access could.
    pub async fn tamper(&self, sql: &str) {
        let mut tx = self.pool.begin().await.expect("tx");
        sqlx::query("SET LOCAL tierlog.maintenance = 'on'").execute(&mut *tx).await.expect("maintenance");
        sqlx::query(sql).execute(&mut *tx).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        tx.commit().await.expect("commit");
    }

    /// Verifies every chain through the API and returns the report.
    pub async fn verify_all(&self) -> Value {
        let (status, body) = self.send_json(reqwest::Method::GET, "/audit/verify", KEY, None).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Rows of `table` for `tenant`.
    pub async fn count_rows(&self, table: &str, tenant: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE tenant_id = $1"))
            .bind(tenant)
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }

    /// Rows of every event table.
    pub async fn count_all_rows(&self) -> i64 {
        sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM audit_logs) + (SELECT count(*) FROM security_events)
                  + (SELECT count(*) FROM financial_audit_logs)",
        )
        .fetch_one(&self.pool)
        .await
        .expect("count")
    }

    /// Every line of every file the service wrote, oldest file first.
    pub fn file_lines(&self) -> Vec<Value> {
        file_lines_in(self.dir.path())
    }

    /// Shuts the service down gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server stopped cleanly");
        }
    }
}

/// Every line of the tierlog files in `dir`, files in name (= sequence) order.
pub fn file_lines_in(dir: &std::path::Path) -> Vec<Value> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    paths.sort();
    paths
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .expect("read file")
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).expect("each line is JSON"))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// An event of `category` for `tenant` with a fresh id.
pub fn event(category: &str, tenant: &str) -> Value {
    serde_json::json!({
        "id": Uuid::new_v4(),
        "category": category,
        "tenant_id": tenant,
        "action": format!("{category}.test"),
        "status": "success",
        "user_id": "u-1",
        "username": "alice",
        "ip_address": "203.0.113.7",
        "message": "test event",
        "details": {"n": 1},
    })
}

/// A private redis-server on a free loopback port, killed on drop.
pub struct RedisProcess {
    pub port: u16,
    child: Option<Child>,
}

impl RedisProcess {
    pub fn start_on(port: u16) -> RedisProcess {
        RedisProcess::start_bound(port, &["127.0.0.1"])
    }

    /// A server on `port` of each of `addresses`.
    pub fn start_bound(port: u16, addresses: &[&str]) -> RedisProcess {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", &addresses.join(" "), "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        let process = RedisProcess { port, child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let ready = redis::Client::open(process.url().as_str())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if ready.is_ok() {
                return process;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("private redis-server did not start on port {port}");
    }

    pub fn start() -> RedisProcess {
        RedisProcess::start_on(free_port())
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct ports free on loopback, below the kernel's ephemeral range (from
/// 32768), so no outgoing connection of a test running alongside is handed one
/// between this call and the server that binds it. Each is held until all are
/// picked, so none is returned twice.
pub fn free_ports(n: usize) -> Vec<u16> {
    let mut held = Vec::new();
    while held.len() < n {
        let port = 20_000 + (Uuid::new_v4().as_u128() % 12_000) as u16;
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push((port, listener));
        }
    }
    held.into_iter().map(|(port, _)| port).collect()
}

/// Polls `check` until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}

/// The real `tierlog serve` binary in a process of its own, on a port it picks.
pub struct ServerProcess {
    pub child: Child,
    pub address: String,
    /// Everything the process wrote to stdout and stderr so far.
    output: Arc<std::sync::Mutex<String>>,
}

impl ServerProcess {
    /// Starts the binary on `db`, `redis` and `dir`, with extra environment.
    pub fn start(db: &TestDb, redis: &TestRedis, dir: &std::path::Path, env: &[(&str, &str)]) -> ServerProcess {
        ServerProcess::launch(db, redis, dir, env, None, None)
    }

    /// Like [`ServerProcess::start`], inside the network namespace `netns` (`env`
    /// then names the URLs and listen address reachable from there).
    pub fn start_in_netns(netns: &str, db: &TestDb, redis: &TestRedis, dir: &std::path::Path, env: &[(&str, &str)]) -> ServerProcess {
        ServerProcess::launch(db, redis, dir, env, None, Some(netns))
    }

    /// Like [`ServerProcess::start`], with the kernel refusing writes beyond
    /// `file_bytes` in any one file (RLIMIT_FSIZE: `EFBIG`, as a full disk would).
    pub fn start_limited(db: &TestDb, redis: &TestRedis, dir: &std::path::Path, env: &[(&str, &str)], file_bytes: u64) -> ServerProcess {
        ServerProcess::launch(db, redis, dir, env, Some(file_bytes), None)
    }

    fn launch(
        db: &TestDb,
        redis: &TestRedis,
        dir: &std::path::Path,
        env: &[(&str, &str)],
        file_bytes: Option<u64>,
        netns: Option<&str>,
    ) -> ServerProcess {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let mut command = match netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns, env!("CARGO_BIN_EXE_tierlog")]);
                command
            }
            None => Command::new(env!("CARGO_BIN_EXE_tierlog")),
        };
        command
            .arg("serve")
            .env("DATABASE_URL", &db.url)
            .env("REDIS_URL", &redis.url)
            .env("TIERLOG__REDIS__KEY_PREFIX", &redis.prefix)
            .env("TIERLOG_LISTEN", "127.0.0.1:0")
            .env("TIERLOG_BOOTSTRAP_KEY", KEY)
            .env("LOGGING_FILE", dir.join("audit.jsonl"))
            .env("TIERLOG__INTEGRITY__SIGNING_KEY_FILE", dir.join("signing.key"))
            .env("TIERLOG__SPOOL__PATH", dir.join("spool"))
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        if let Some(limit) = file_bytes {
            // SAFETY: only async-signal-safe calls (signal, setrlimit) between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    // Past the limit write(2) fails with EFBIG instead of killing the process.
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    let rlimit = libc::rlimit { rlim_cur: limit, rlim_max: libc::RLIM_INFINITY };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &rlimit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command.spawn().expect("tierlog binary starts");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let output = Arc::new(std::sync::Mutex::new(String::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel::<String>();
        // Both streams are kept; the logs (standard error) are echoed and say where
        // the server listens.
        let follow = |stream: Box<dyn std::io::Read + Send>, echo: bool| {
            let (kept, addr_tx) = (output.clone(), addr_tx.clone());
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Ok(log) = serde_json::from_str::<Value>(&line) {
                        if let Some(listen) = log["listen"].as_str() {
                            let _ = addr_tx.send(listen.to_owned());
                        }
                    }
                    if echo {
                        eprintln!("{line}");
                    }
                    let mut all = kept.lock().expect("output");
                    all.push_str(&line);
                    all.push('\n');
                }
            });
        };
        follow(Box::new(stdout), false);
        follow(Box::new(stderr), true);
        let address = addr_rx.recv_timeout(Duration::from_secs(30)).expect("tierlog logs its address");
        ServerProcess { child, address: format!("http://{address}"), output }
    }

    /// What the process wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        self.output.lock().expect("output").clone()
    }

    /// Lifts the file size limit of [`ServerProcess::start_limited`].
    pub fn lift_file_size_limit(&self) {
        let rlimit = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: prlimit(2) on a child we spawned, with a valid new limit and no old one.
        let done = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &rlimit, std::ptr::null_mut()) };
        assert_eq!(done, 0, "prlimit: {}", std::io::Error::last_os_error());
    }

    /// The process's peak resident memory so far, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_owned))
            .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
            .unwrap_or(0)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private PostgreSQL cluster on a free loopback port (initdb, pg_ctl), for tests
/// that stop and restart the database. Stopped and removed on drop.
pub struct PostgresProcess {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    _dir: TempDir,
}

/// The directory of the PostgreSQL server programs: `initdb` on the PATH, or the
/// newest `/usr/lib/postgresql/*/bin` (where Debian puts them).
fn postgres_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
    {
        // Where the link on the PATH leads: the other server programs
        // (pg_basebackup) are there.
        return std::fs::canonicalize(dir.join("initdb")).ok().and_then(|p| p.parent().map(PathBuf::from)).unwrap_or(dir);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    found.sort_by_key(|p| p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok()));
    found.pop().unwrap_or_else(|| {
        panic!("the fault tests start a private PostgreSQL and need its server programs (initdb, pg_ctl); run scripts/test.sh, which installs them (apt-get install postgresql)")
    })
}

impl PostgresProcess {
    /// Creates a cluster (trust auth, user `postgres`) and starts it.
    pub fn start() -> PostgresProcess {
        PostgresProcess::start_listening(&[])
    }

    /// Like [`PostgresProcess::start`], also listening (trust auth) on `addresses`.
    pub fn start_listening(addresses: &[&str]) -> PostgresProcess {
        let bin = postgres_bin_dir();
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let port = free_port();
        if PostgresProcess::as_root() {
            // initdb and postgres refuse to run as root: the cluster belongs to `postgres`.
            let status = Command::new("chown").args(["postgres:", &dir.path().display().to_string()]).status().expect("chown");
            assert!(status.success(), "chown of the cluster directory to postgres");
        }
        let process = PostgresProcess { port, bin, data, _dir: dir };
        let data = process.data.display().to_string();
        process.run("initdb", &["-D", &data, "--auth=trust", "-U", "postgres", "-E", "UTF8", "--no-sync"]);
        let listen: Vec<&str> = std::iter::once("127.0.0.1").chain(addresses.iter().copied()).collect();
        let conf = format!(
            "listen_addresses = '{}'\nport = {port}\nunix_socket_directories = '{}'\nmax_connections = 50\n",
            listen.join(","),
            process.data.display()
        );
        let mut hba = std::fs::OpenOptions::new().append(true).open(process.data.join("pg_hba.conf")).expect("hba");
        for address in addresses {
            std::io::Write::write_all(&mut hba, format!("host all all {address}/24 trust\n").as_bytes()).expect("write hba");
        }
        let mut file = std::fs::OpenOptions::new().append(true).open(process.data.join("postgresql.conf")).expect("conf");
        std::io::Write::write_all(&mut file, conf.as_bytes()).expect("write conf");
        process.resume();
        process
    }

    /// A streaming replica of `primary`: `pg_basebackup -R` of it into a cluster of
    /// its own on another loopback port, started as a hot standby.
    pub fn standby_of(primary: &PostgresProcess) -> PostgresProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        if PostgresProcess::as_root() {
            let status = Command::new("chown").args(["postgres:", &dir.path().display().to_string()]).status().expect("chown");
            assert!(status.success(), "chown of the standby's directory to postgres");
        }
        let standby = PostgresProcess { port: free_port(), bin: primary.bin.clone(), data: dir.path().join("data"), _dir: dir };
        let data = standby.data.display().to_string();
        let from = primary.port.to_string();
        standby.run("pg_basebackup", &["-h", "127.0.0.1", "-p", &from, "-U", "postgres", "-D", &data, "-R", "-X", "stream", "-c", "fast", "--no-sync"]);
        let conf = format!(
            "port = {}\nunix_socket_directories = '{data}'\nlisten_addresses = '127.0.0.1'\nhot_standby = on\n",
            standby.port
        );
        let mut file = std::fs::OpenOptions::new().append(true).open(standby.data.join("postgresql.conf")).expect("conf");
        std::io::Write::write_all(&mut file, conf.as_bytes()).expect("write conf");
        standby.resume();
        standby
    }

    fn as_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    /// `program` of the server's, run as the cluster's owner.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if PostgresProcess::as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&path);
            command
        } else {
            Command::new(&path)
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let output = self.command(program).args(args).output().unwrap_or_else(|e| panic!("{program} runs: {e}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts the server and waits until it accepts connections.
    pub fn resume(&self) {
        let data = self.data.display().to_string();
        let log = self.data.join("server.log").display().to_string();
        self.run("pg_ctl", &["-D", &data, "-l", &log, "-w", "-t", "60", "start"]);
    }

    /// Stops the server: `fast` (clean shutdown) or `immediate` (like a crash).
    pub fn halt(&self, mode: &str) {
        let data = self.data.display().to_string();
        self.run("pg_ctl", &["-D", &data, "-m", mode, "-w", "stop"]);
    }

    /// A URL of the `postgres` database, to create test databases from.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PostgresProcess {
    fn drop(&mut self) {
        let data = self.data.display().to_string();
        let _ = self.command("pg_ctl").args(["-D", &data, "-m", "immediate", "-w", "stop"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}
