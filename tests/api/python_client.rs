//! The Python client (`clients/python`) under pytest, against this tierlog with its
//! real Postgres, Redis and files: the tests (clients/python/tests) check each event
//! in all three.

use std::process::Command;

use tierlog::event::Category;

use crate::helpers::{TestApp, KEY};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_passes_its_tests_against_a_running_tierlog() {
    let python = std::env::var("TIERLOG_TEST_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/venv/bin/python"));
    assert!(python.is_file(), "{} is missing: run scripts/test.sh (it installs pytest into .tools/venv)", python.display());
    let app = TestApp::spawn_with(|s| s.detection.enabled = false).await;
    // The Redis key of a tenant's category, with stand-ins the tests replace.
    let key = tierlog::tiers::redis::events_key(&app.redis.prefix, "@TENANT@", Category::Auth);
    let (head, tail) = key.rsplit_once("auth").expect("the category is in the key");
    let key = format!("{head}@CATEGORY@{tail}");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python");
    let mut command = Command::new(python);
    command
        .current_dir(&root)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"])
        // The working tree's client, whatever is installed.
        .env("PYTHONPATH", root.join("src"))
        .env("TIERLOG_URL", &app.address)
        .env("TIERLOG_KEY", KEY)
        .env("TIERLOG_DATABASE_URL", &app.db.url)
        .env("TIERLOG_REDIS_URL", &app.redis.url)
        .env("TIERLOG_REDIS_EVENTS_KEY", key)
        .env("TIERLOG_FILES_DIR", app.dir.path());
    let output = tokio::task::spawn_blocking(move || command.output().expect("pytest runs")).await.expect("pytest task");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "pytest failed:\n{report}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(report.contains(" passed") && !report.contains("skipped"), "pytest ran every test:\n{report}");
    app.stop().await;
}
