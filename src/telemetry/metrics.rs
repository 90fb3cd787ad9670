//! Prometheus metrics: what `/metrics` on the admin listener serves.
//!
//! Label values are all from small fixed sets (route class, decision,
//! reason code, status code, result), never paths, tokens or addresses, so
//! the series count stays bounded whatever the traffic. The registry lives
//! for the whole process and survives config reloads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;

use crate::rewrite::RewriteStats;
use crate::route::RouteClass;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub class: &'static str,
    pub decision: &'static str,
    pub reason: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// Why audit events were lost: the queue to `audit.file` was full.
pub const QUEUE_FULL: ReasonLabels = ReasonLabels {
    reason: "queue_full",
};
/// Why audit events were lost: writing them failed.
pub const WRITE_FAILED: ReasonLabels = ReasonLabels {
    reason: "write_failed",
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HashLabels {
    pub hash: String,
}

/// Exposes the rewriter's own counters (kept in the rewrite rules, so the
/// hot path touches one atomic, not a label lookup) at scrape time.
#[derive(Debug)]
struct RewriteCollector(Arc<RewriteStats>);

impl Collector for RewriteCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        for (name, help, value) in [
            (
                "rewrite_bodies",
                "Response bodies streamed through the URL rewriter",
                &s.bodies_rewritten,
            ),
            (
                "rewrite_body_matches",
                "Public origins replaced in response bodies",
                &s.body_matches,
            ),
            (
                "rewrite_headers",
                "Response header values rewritten to the private origin",
                &s.headers_rewritten,
            ),
            (
                "rewrite_unknown_encoding",
                "Rewritable bodies passed through untouched because of an unknown Content-Encoding",
                &s.bodies_unknown_encoding,
            ),
        ] {
            let counter = ConstCounter::new(value.load(Ordering::Relaxed));
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub upstream_seconds: Family<ClassLabels, Histogram>,
    pub response_bytes: Family<ClassLabels, Counter>,
    pub active_connections: Gauge,
    /// Idle HTTP/1.1 connections holding no hyper buffers.
    pub parked_connections: Gauge,
    pub connections: Counter,
    pub reloads: Family<ResultLabels, Counter>,
    pub config_info: Family<HashLabels, Gauge>,
    pub config_loaded: Gauge<f64, AtomicU64>,
    pub tls_expiry: Gauge<f64, AtomicU64>,
    pub crl_next_update: Gauge<f64, AtomicU64>,
    /// Shared with every rewrite rule set the gateway builds.
    pub rewrite_stats: Arc<RewriteStats>,
    pub rate_limited: Family<ClassLabels, Counter>,
    /// Audit events `audit.file` did not get, by reason.
    pub audit_lost: Family<ReasonLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sharegate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by route class, decision, reason and status",
            requests.clone(),
        );
        let upstream_seconds = Family::<ClassLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.5, 12))
        });
        registry.register(
            "upstream_response_seconds",
            "Time from forwarding a request to the upstream's response headers",
            upstream_seconds.clone(),
        );
        let response_bytes = Family::<ClassLabels, Counter>::default();
        registry.register(
            "response_bytes",
            "Response body bytes sent to clients",
            response_bytes.clone(),
        );
        let active_connections = Gauge::default();
        registry.register(
            "active_connections",
            "Client connections currently open",
            active_connections.clone(),
        );
        let parked_connections = Gauge::default();
        registry.register(
            "parked_connections",
            "Idle HTTP/1.1 keep-alive connections whose buffers were given back",
            parked_connections.clone(),
        );
        let connections = Counter::default();
        registry.register(
            "connections",
            "Client connections accepted",
            connections.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Config reloads by result (success, failure)",
            reloads.clone(),
        );
        let config_info = Family::<HashLabels, Gauge>::default();
        registry.register(
            "config_info",
            "The config in force, by the SHA-256 prefix of its files (value 1)",
            config_info.clone(),
        );
        let config_loaded = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "config_loaded_timestamp_seconds",
            "When the config in force was loaded (Unix time)",
            config_loaded.clone(),
        );
        let tls_expiry = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the listener's TLS certificate expires (Unix time; 0 without TLS)",
            tls_expiry.clone(),
        );
        let crl_next_update = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "client_crl_next_update_timestamp_seconds",
            "The earliest nextUpdate of the client_crl CRLs in force (Unix time; 0 without them): past it, the client certificates that CRL speaks for are refused",
            crl_next_update.clone(),
        );
        let rewrite_stats = Arc::new(RewriteStats::default());
        registry.register_collector(Box::new(RewriteCollector(rewrite_stats.clone())));
        let rate_limited = Family::<ClassLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused by the per-client rate limit",
            rate_limited.clone(),
        );
        let audit_lost = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "audit_events_lost",
            "Audit events not written to audit.file (queue_full: the disk fell behind; write_failed)",
            audit_lost.clone(),
        );
        // Counters whose labels come from a fixed set start at 0 for each:
        // a series that first appears at 1 shows no `increase()` in
        // Prometheus, so the first lost audit event, refused reload or
        // throttled client would slip past an alert on it.
        for result in ["success", "failure"] {
            reloads.get_or_create(&ResultLabels { result }).inc_by(0);
        }
        for reason in [&QUEUE_FULL, &WRITE_FAILED] {
            audit_lost.get_or_create(reason).inc_by(0);
        }
        for class in RouteClass::PUBLIC {
            rate_limited
                .get_or_create(&ClassLabels {
                    class: class.name(),
                })
                .inc_by(0);
        }
        Metrics {
            registry,
            requests,
            upstream_seconds,
            response_bytes,
            active_connections,
            parked_connections,
            connections,
            reloads,
            config_info,
            config_loaded,
            tls_expiry,
            crl_next_update,
            rewrite_stats,
            rate_limited,
            audit_lost,
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Records the config now in force.
    pub fn config_loaded(&self, hash: &str) {
        self.config_info.clear();
        self.config_info
            .get_or_create(&HashLabels {
                hash: hash.to_owned(),
            })
            .set(1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.config_loaded.set(now);
    }
}
