//! Schemathesis (PyPI) against `/openapi.json` of the running binary: generated
//! valid and invalid requests to every operation, checked for server errors,
//! undocumented status codes, responses that break their schema, wrong content
//! types and headers, invalid data accepted, and endpoints that ignore auth.
//!
//! Left out: `positive_data_acceptance`. tierlog refuses some values the published
//! schema does not rule out (the length and character rules of text filters and
//! event fields are described in prose, not all as JSON Schema), and refusing them
//! with a 400 is the intended behaviour.

use std::process::Command;

use crate::helpers::{redis_url, ServerProcess, TestDb, TestRedis, KEY};

fn schemathesis() -> std::path::PathBuf {
    let path = std::env::var("TIERLOG_TEST_SCHEMATHESIS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/venv/bin/st"));
    assert!(
        path.is_file(),
        "{} is missing: run scripts/test.sh (it installs schemathesis into .tools/venv), or set TIERLOG_TEST_SCHEMATHESIS",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let st = schemathesis();
    let db = TestDb::create().await;
    let redis = TestRedis::new(redis_url());
    let dir = tempfile::tempdir().expect("dir");
    let server = ServerProcess::start(&db, &redis, dir.path(), &[]);
    let work = tempfile::tempdir().expect("work dir");
    let schema = format!("{}/openapi.json", server.address);
    let output = tokio::task::spawn_blocking(move || {
        Command::new(st)
            .current_dir(work.path())
            .env("NO_COLOR", "1")
            .args(["run", &schema, "--header", &format!("Authorization: Bearer {KEY}")])
            .args(["--checks", "all", "--exclude-checks", "positive_data_acceptance"])
            .args(["--phases", "examples,coverage,fuzzing", "--max-examples", "20", "--workers", "2"])
            .args(["--seed", "20261123", "--request-timeout", "20"])
            .output()
            .expect("schemathesis runs")
    })
    .await
    .expect("schemathesis task");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "schemathesis failed:\n{report}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(report.contains("Tested: 25"), "every operation was exercised:\n{report}");
    drop(server);
}
