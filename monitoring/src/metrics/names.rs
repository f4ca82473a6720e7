//! Every metric this crate records: name, kind, labels and help text, in one table (the
//! Prometheus `# HELP` lines, the docs and the Grafana dashboard's test are checked against it).

/// What kind of series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution (seconds), with the buckets of [`SECONDS_BUCKETS`].
    Histogram,
}

/// One metric.
#[derive(Debug, Clone, Copy)]
pub struct MetricInfo {
    /// Full name.
    pub name: &'static str,
    /// Kind.
    pub kind: Kind,
    /// Its labels.
    pub labels: &'static [&'static str],
    /// What it counts.
    pub help: &'static str,
}

/// Upper bounds of histogram buckets, in seconds.
pub const SECONDS_BUCKETS: [f64; 17] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];

macro_rules! metrics_table {
    ($( $(#[$doc:meta])* $id:ident = $name:literal, $kind:ident, [$($label:literal),*], $help:literal; )*) => {
        $( $(#[$doc])* pub const $id: &str = $name; )*
        /// Every metric, in the order of the docs.
        pub const METRICS: &[MetricInfo] = &[
            $( MetricInfo { name: $name, kind: Kind::$kind, labels: &[$($label),*], help: $help }, )*
        ];
    };
}

metrics_table! {
    /// Executions finished, by status, language and backend (`none` when nothing ran).
    RUNS = "vana_sandbox_runs_total", Counter, ["status", "language", "backend", "tenant"],
        "Executions finished, by status, language, backend (none: nothing ran) and tenant";
    /// From `execute` to the result, for executions that were admitted.
    RUN_DURATION = "vana_sandbox_run_duration_seconds", Histogram, ["language", "backend"],
        "Seconds from execute to the result (admitted executions: queue, start-up, compile, run)";
    /// Wall-clock time of each step.
    PHASE_DURATION = "vana_sandbox_phase_duration_seconds", Histogram, ["phase"],
        "Seconds of each step (compile, run)";
    /// Sandbox start-up: creating the instance and staging the files.
    STARTUP = "vana_sandbox_startup_seconds", Histogram, ["backend"],
        "Seconds from asking the backend for an instance to the files being in place";
    /// Time waited for a slot.
    QUEUE_WAIT = "vana_sandbox_queue_wait_seconds", Histogram, [],
        "Seconds an execution waited for a slot (zero when one was free)";
    /// Executions waiting for a slot.
    QUEUE_DEPTH = "vana_sandbox_queue_depth", Gauge, [],
        "Executions waiting for a slot";
    /// Places in the queue.
    QUEUE_CAPACITY = "vana_sandbox_queue_capacity", Gauge, [],
        "Places in the queue (max_queue)";
    /// Executions holding a slot.
    ACTIVE_RUNS = "vana_sandbox_active_runs", Gauge, [],
        "Executions holding a slot";
    /// Slots in all.
    CONCURRENCY = "vana_sandbox_concurrency_limit", Gauge, [],
        "Slots in all (max_concurrency)";
    /// Requests refused because the queue was full.
    QUEUE_REJECTIONS = "vana_sandbox_queue_rejections_total", Counter, ["tenant"],
        "Requests refused at once because the queue was full";
    /// Executions whose caller went away before the result.
    CANCELLED = "vana_sandbox_runs_cancelled_total", Counter, ["tenant"],
        "Executions dropped by their caller before they finished";
    /// Compile-cache lookups.
    COMPILE_CACHE = "vana_sandbox_compile_cache_lookups_total", Counter, ["language", "result"],
        "Compile-cache lookups by result (hit, miss)";
    /// Limits hit.
    LIMIT_HITS = "vana_sandbox_limit_hits_total", Counter, ["limit", "tenant"],
        "Limits hit (timeout, memory, output, processes)";
    /// Security events.
    SECURITY_EVENTS = "vana_sandbox_security_events_total", Counter, ["kind", "source", "tenant"],
        "Security events by kind and reporter (sandbox, program)";
    /// Sessions open now.
    ACTIVE_SESSIONS = "vana_sandbox_active_sessions", Gauge, [],
        "Sessions open now";
    /// Sessions opened.
    SESSIONS_OPENED = "vana_sandbox_sessions_opened_total", Counter, ["backend", "tenant"],
        "Sessions opened, by backend";
    /// Sessions closed, by why.
    SESSIONS_CLOSED = "vana_sandbox_sessions_closed_total", Counter, ["reason", "tenant"],
        "Sessions closed, by reason (closed, idle_timeout, lifetime, dropped)";
    /// Ready instances in a warm pool.
    POOL_SIZE = "vana_sandbox_warm_pool_size", Gauge, ["backend"],
        "Ready instances in the warm pool";
    /// Warm-pool lookups.
    POOL_LOOKUPS = "vana_sandbox_warm_pool_lookups_total", Counter, ["backend", "result"],
        "Warm-pool lookups by result (hit: a ready instance was taken, miss: one was created)";
    /// Egress decisions of the network proxy, by verdict and (when denied) reason.
    NETWORK_DECISIONS = "vana_sandbox_network_decisions_total", Counter, ["verdict", "reason", "tenant"],
        "Egress decisions of the proxy by verdict (allowed, denied) and reason (none when allowed)";
    /// Bytes through the egress proxy, each way.
    NETWORK_BYTES = "vana_sandbox_network_bytes_total", Counter, ["direction", "tenant"],
        "Bytes through the egress proxy (up: sandbox to target, down: target to sandbox)";
    /// Threat findings.
    FINDINGS = "vana_sandbox_threat_findings_total", Counter, ["rule", "severity", "tenant"],
        "Findings of the threat detector by rule and severity";
    /// Signals the threat detector could not take (its queue was full).
    THREAT_DROPPED = "vana_sandbox_threat_signals_dropped_total", Counter, [],
        "Events the threat detector dropped because its queue was full";
    /// Alerts delivered to the sinks.
    ALERTS = "vana_sandbox_alerts_total", Counter, ["rule", "severity"],
        "Alerts sent to the sinks (after deduplication and rate limiting)";
    /// Occurrences folded into an earlier alert.
    ALERTS_SUPPRESSED = "vana_sandbox_alerts_suppressed_total", Counter, [],
        "Occurrences folded into an alert already sent (deduplication)";
    /// Alerts not sent.
    ALERTS_DROPPED = "vana_sandbox_alerts_dropped_total", Counter, ["reason"],
        "Alerts not sent (rate_limited, queue_full)";
    /// Deliveries to each sink.
    ALERT_DELIVERIES = "vana_sandbox_alert_deliveries_total", Counter, ["sink", "result"],
        "Deliveries to each alert sink (ok, failed after retries, dropped: its queue was full)";
    /// Audit lines written.
    AUDIT_RECORDS = "vana_sandbox_audit_records_total", Counter, [],
        "Audit lines written";
    /// Audit records not written.
    AUDIT_DROPPED = "vana_sandbox_audit_dropped_total", Counter, ["reason"],
        "Audit records dropped (queue_full); each drop is also recorded in the log itself";
    /// Failed audit writes.
    AUDIT_WRITE_ERRORS = "vana_sandbox_audit_write_errors_total", Counter, [],
        "Failed audit writes, opens and syncs";
    /// HTTP requests answered by the server (`vana-sandbox serve`).
    HTTP_REQUESTS = "vana_sandbox_http_requests_total", Counter, ["route", "code", "tenant"],
        "HTTP requests answered by the server, by route, status code and tenant (empty: not authenticated)";
    /// Time to answer an HTTP request (to the end of the body for streams).
    HTTP_DURATION = "vana_sandbox_http_request_duration_seconds", Histogram, ["route"],
        "Seconds from an HTTP request's head to the end of its answer";
    /// Open HTTP connections.
    HTTP_CONNECTIONS = "vana_sandbox_http_connections", Gauge, [],
        "HTTP connections open now";
    /// Requests refused by a tenant's quota.
    QUOTA_REJECTIONS = "vana_sandbox_quota_rejections_total", Counter, ["tenant", "quota"],
        "Requests refused by a tenant's quota (concurrent_runs, sessions, runs_per_minute, cpu_seconds_per_hour)";
    /// CPU seconds a tenant's runs used in the last hour.
    TENANT_CPU = "vana_sandbox_tenant_cpu_seconds_last_hour", Gauge, ["tenant"],
        "CPU seconds the tenant's runs used in the last hour (what its cpu_seconds_per_hour quota counts)";
}

/// The table row of `name`.
pub fn info(name: &str) -> Option<&'static MetricInfo> {
    METRICS.iter().find(|m| m.name == name)
}
