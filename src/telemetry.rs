//! tierlog's own logs (JSON lines on stdout through `tracing`) and its counters.

use std::sync::atomic::{AtomicU64, Ordering};

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber: `RUST_LOG` if set, else `default_filter`.
pub fn init(default_filter: &str, format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stdout);
    // A second call (tests building several apps) keeps the first subscriber.
    let _ = match format {
        "pretty" => builder.try_init(),
        _ => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
}

/// Counters of one running service, rendered at `/metrics` and read by tests.
#[derive(Debug, Default)]
pub struct Counters {
    /// Events acknowledged to clients.
    pub events_accepted: AtomicU64,
    /// Request bodies' bytes of acknowledged requests.
    pub bytes_accepted: AtomicU64,
    /// Batches written by the pipeline.
    pub batches_written: AtomicU64,
    /// Batches whose durable write failed (their requests got 503).
    pub batches_failed: AtomicU64,
    /// Events the hot tier missed (Redis down or slow).
    pub redis_misses: AtomicU64,
    /// Requests refused because the queue was full.
    pub queue_full: AtomicU64,
    /// Events waiting in the queue or being written.
    pub queue_depth: AtomicU64,
    /// Rows written to Postgres.
    pub rows_persisted: AtomicU64,
    /// Lines written to the files.
    pub lines_written: AtomicU64,
}

impl Counters {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads `counter`.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// The counters in the Prometheus text format.
    pub fn render_prometheus(&self) -> String {
        let rows: [(&str, &str, &str, &AtomicU64); 9] = [
            ("tierlog_events_accepted_total", "counter", "Events acknowledged to clients.", &self.events_accepted),
            ("tierlog_ingest_bytes_total", "counter", "Body bytes of acknowledged requests.", &self.bytes_accepted),
            ("tierlog_batches_written_total", "counter", "Batches written by the pipeline.", &self.batches_written),
            ("tierlog_batches_failed_total", "counter", "Batches whose durable write failed.", &self.batches_failed),
            ("tierlog_redis_misses_total", "counter", "Events the Redis hot tier missed.", &self.redis_misses),
            ("tierlog_queue_full_total", "counter", "Requests refused with 503 because the queue was full.", &self.queue_full),
            ("tierlog_queue_depth", "gauge", "Events queued or being written.", &self.queue_depth),
            ("tierlog_rows_persisted_total", "counter", "Rows inserted into Postgres (retries excluded).", &self.rows_persisted),
            ("tierlog_file_lines_total", "counter", "Lines appended to the JSON files.", &self.lines_written),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}\n", Counters::get(value)));
        }
        out
    }
}
