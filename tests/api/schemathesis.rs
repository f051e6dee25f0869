//! Schemathesis (PyPI) against `/openapi.json` of the running binary, with every
//! check: generated valid and invalid requests to every operation, checked for server
//! errors, undocumented status codes, responses that break their schema, wrong content
//! types and headers, invalid data accepted, endpoints that ignore auth, and valid data
//! refused.
//!
//! Two runs. The first runs every check but the acceptance of valid data, in every
//! phase. The second checks that valid data is accepted, on generated (fuzzed) cases,
//! with `tests/tools/schemathesis_hooks.py`, which teaches the generator the few rules
//! JSON Schema cannot state (a timestamp not ahead of now, a cursor the server issued,
//! exact numbers inside free-form objects). Schemathesis applies such hooks to fuzzed
//! cases only, so the coverage phase's boundary values (a cursor "0", a key that
//! expired in 2000) are judged by every other check but not by this one.

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
    let hooks = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools");
    let run = move |checks: &[&str], phases: &str, examples: &str| {
        Command::new(&st)
            .current_dir(work.path())
            .env("NO_COLOR", "1")
            .env("PYTHONPATH", &hooks)
            .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
            .args(["run", &schema, "--header", &format!("Authorization: Bearer {KEY}")])
            // The live tail never ends, so a client reading whole bodies cannot test it;
            // tests/api/stream.rs does.
            .args(["--exclude-path", "/audit/stream"])
            .args(checks)
            .args(["--phases", phases, "--max-examples", examples, "--workers", "2"])
            .args(["--seed", "20261123", "--request-timeout", "20"])
            .output()
            .expect("schemathesis runs")
    };
    let outputs = tokio::task::spawn_blocking(move || {
        let others = run(&["--checks", "all", "--exclude-checks", "positive_data_acceptance"], "examples,coverage,fuzzing", "20");
        let acceptance = run(&["--checks", "positive_data_acceptance"], "fuzzing", "40");
        [others, acceptance]
    })
    .await
    .expect("schemathesis task");
    for output in outputs {
        let report = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "schemathesis failed:\n{report}\n{}", String::from_utf8_lossy(&output.stderr));
        assert!(report.contains("Tested: 39"), "every operation was exercised:\n{report}");
    }
    drop(server);
}
