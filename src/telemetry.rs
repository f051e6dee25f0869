//! tierlog's own logs (JSON lines on standard error through `tracing`) and its counters.

use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{Histogram, Key, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber: `RUST_LOG` if set, else `default_filter`.
pub fn init(default_filter: &str, format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Standard error: a command's standard output carries its results only.
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second call (tests building several apps) keeps the first subscriber.
    let _ = match format {
        "pretty" => builder.try_init(),
        _ => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
}

/// Labelled metrics and histograms of one running service, on a recorder of its own
/// (not the process-global one), so several services in one process stay apart.
pub struct Metrics {
    recorder: PrometheusRecorder,
    /// Events per written batch.
    pub batch_events: Histogram,
}

/// The tiers whose writes are timed and counted.
#[derive(Debug, Clone, Copy)]
pub enum Tier {
    Postgres,
    Files,
    Redis,
    Spool,
}

impl Tier {
    fn as_str(self) -> &'static str {
        match self {
            Tier::Postgres => "postgres",
            Tier::Files => "files",
            Tier::Redis => "redis",
            Tier::Spool => "spool",
        }
    }
}

static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

impl Default for Metrics {
    fn default() -> Metrics {
        let seconds = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
        let sizes = [1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full("tierlog_batch_events".into()), &sizes))
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        recorder.describe_histogram("tierlog_batch_events".into(), None, "Events per batch written.".into());
        recorder.describe_histogram("tierlog_tier_write_seconds".into(), Some(Unit::Seconds), "Time to write a batch to a tier.".into());
        recorder.describe_counter("tierlog_tier_errors_total".into(), None, "Batch writes a tier failed.".into());
        recorder.describe_histogram("tierlog_query_seconds".into(), Some(Unit::Seconds), "Time to answer a read endpoint.".into());
        recorder.describe_counter("tierlog_events_by_category_total".into(), None, "Events acknowledged, by category.".into());
        recorder.describe_gauge(
            "tierlog_partition_default_rows".into(),
            None,
            "Rows in an event table's default partition: no time partition covers their expiry (should be 0).".into(),
        );
        let batch_events = recorder.register_histogram(&Key::from_name("tierlog_batch_events"), &METADATA);
        let metrics = Metrics { recorder, batch_events };
        // Present from the start, so dashboards and alerts see zeros, not gaps.
        for tier in [Tier::Postgres, Tier::Files, Tier::Redis] {
            let _ = metrics.tier_errors(tier);
            let _ = metrics.tier_write(tier);
        }
        metrics
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    fn labelled(name: &'static str, label: &'static str, value: &'static str) -> Key {
        Key::from_parts(name, vec![Label::new(label, value)])
    }

    /// The write-time histogram of `tier`.
    pub fn tier_write(&self, tier: Tier) -> Histogram {
        self.recorder.register_histogram(&Metrics::labelled("tierlog_tier_write_seconds", "tier", tier.as_str()), &METADATA)
    }

    /// The error counter of `tier`.
    pub fn tier_errors(&self, tier: Tier) -> metrics::Counter {
        self.recorder.register_counter(&Metrics::labelled("tierlog_tier_errors_total", "tier", tier.as_str()), &METADATA)
    }

    /// The latency histogram of a read endpoint (its route, e.g. `/audit/logs`).
    pub fn query(&self, endpoint: &str) -> Histogram {
        let key = Key::from_parts("tierlog_query_seconds", vec![Label::new("endpoint", endpoint.to_owned())]);
        self.recorder.register_histogram(&key, &METADATA)
    }

    /// The acknowledged-events counter of `category`.
    pub fn category(&self, category: &'static str) -> metrics::Counter {
        self.recorder.register_counter(&Metrics::labelled("tierlog_events_by_category_total", "category", category), &METADATA)
    }

    /// The rows in `table`'s default time partition (rows no partition covers).
    pub fn partition_default_rows(&self, table: &'static str) -> metrics::Gauge {
        self.recorder.register_gauge(&Metrics::labelled("tierlog_partition_default_rows", "table", table), &METADATA)
    }

    /// Everything in the Prometheus text format.
    pub fn render(&self) -> String {
        self.recorder.handle().render()
    }
}

/// Counters of one running service, rendered at `/metrics` and read by tests.
#[derive(Debug, Default)]
pub struct Counters {
    /// Labelled metrics and histograms.
    pub metrics: Metrics,
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
    /// Events appended to the spool while Postgres was unreachable.
    pub events_spooled: AtomicU64,
    /// Spooled events replayed into Postgres.
    pub events_replayed: AtomicU64,
    /// Background runs this node made while holding the lease.
    pub checkpoint_runs: AtomicU64,
    pub retention_runs: AtomicU64,
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
        let rows: [(&str, &str, &str, &AtomicU64); 13] = [
            ("tierlog_events_accepted_total", "counter", "Events acknowledged to clients.", &self.events_accepted),
            ("tierlog_ingest_bytes_total", "counter", "Body bytes of acknowledged requests.", &self.bytes_accepted),
            ("tierlog_batches_written_total", "counter", "Batches written by the pipeline.", &self.batches_written),
            ("tierlog_batches_failed_total", "counter", "Batches whose durable write failed.", &self.batches_failed),
            ("tierlog_redis_misses_total", "counter", "Events the Redis hot tier missed.", &self.redis_misses),
            ("tierlog_queue_full_total", "counter", "Requests refused with 503 because the queue was full.", &self.queue_full),
            ("tierlog_queue_depth", "gauge", "Events queued or being written.", &self.queue_depth),
            ("tierlog_rows_persisted_total", "counter", "Rows inserted into Postgres (retries excluded).", &self.rows_persisted),
            ("tierlog_file_lines_total", "counter", "Lines appended to the JSON files.", &self.lines_written),
            ("tierlog_spooled_events_total", "counter", "Events spooled while Postgres was unreachable.", &self.events_spooled),
            ("tierlog_replayed_events_total", "counter", "Spooled events replayed into Postgres.", &self.events_replayed),
            ("tierlog_checkpoint_runs_total", "counter", "Periodic checkpoint runs made by this node (the lease holder).", &self.checkpoint_runs),
            ("tierlog_retention_runs_total", "counter", "Background retention runs made by this node (the lease holder).", &self.retention_runs),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}\n", Counters::get(value)));
        }
        out.push_str(&self.metrics.render());
        out
    }
}
