//! Istio's standard request metrics (feature `metrics`), on the prometheus-client `Registry`
//! given to [`MeshBuilder::metrics`](crate::MeshBuilder::metrics).
//!
//! Recorded by the inbound stack ([`Mesh::inbound`](crate::Mesh::inbound)) outermost, so
//! requests that authentication or authorization answer (401, 403) are counted too, with
//! `reporter="destination"`, as an Istio sidecar's inbound listener reports them:
//!
//! - `istio_requests_total` (counter);
//! - `istio_request_duration_milliseconds` (histogram, Istio's default buckets), from the
//!   request's arrival until its response body has ended;
//! - `istio_request_bytes` (histogram; the request's `content-length`, 0 without one);
//! - `istio_response_bytes` (histogram; the response body bytes sent).
//!
//! Labels: `reporter`, `source_workload` (`unknown`: Istio learns it by metadata exchange,
//! which an in-process mesh does not do), `source_workload_namespace` and `source_principal`
//! (from the peer's SPIFFE ID under mutual TLS, else `unknown`), `destination_service` (the
//! request's host), `destination_service_name` (its first label), `destination_workload` (this
//! workload's `app` label), `destination_workload_namespace`, `destination_principal` (this
//! workload's SPIFFE ID), `request_protocol` (`http` / `grpc`), `response_code`,
//! `response_flags` (Envoy's, `-` for none) and `connection_security_policy` (`mutual_tls` /
//! `none`). A request is recorded once, when its response body ends or is dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::body::MeshBody;
use crate::error::BoxError;

/// Istio's default buckets for `istio_request_duration_milliseconds`.
const DURATION_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Istio's default buckets for the byte-size histograms (powers of ten up to 1 GB).
const BYTES_BUCKETS: [f64; 10] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// One label set of Istio's request metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) reporter: &'static str,
    pub(crate) source_workload: String,
    pub(crate) source_workload_namespace: String,
    pub(crate) source_principal: String,
    pub(crate) destination_service: String,
    pub(crate) destination_service_name: String,
    pub(crate) destination_workload: String,
    pub(crate) destination_workload_namespace: String,
    pub(crate) destination_principal: String,
    pub(crate) request_protocol: &'static str,
    pub(crate) response_code: u16,
    pub(crate) response_flags: String,
    pub(crate) connection_security_policy: &'static str,
}

type HistogramFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

fn bytes_histogram() -> Histogram {
    Histogram::new(BYTES_BUCKETS)
}

/// Handles to Istio's request metrics (cheap to clone; updates are atomic).
#[derive(Debug, Clone)]
pub(crate) struct IstioMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily,
    request_bytes: HistogramFamily,
    response_bytes: HistogramFamily,
}

impl IstioMetrics {
    /// Registers the four metrics in `registry` under Istio's names (no prefix).
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let metrics = IstioMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            request_bytes: Family::new_with_constructor(bytes_histogram),
            response_bytes: Family::new_with_constructor(bytes_histogram),
        };
        registry.register(
            "istio_requests",
            "Requests, by source, destination, response code and flags (Istio standard metric)",
            metrics.requests.clone(),
        );
        registry.register(
            "istio_request_duration_milliseconds",
            "Request duration until the response ended, in milliseconds (Istio standard metric)",
            metrics.duration.clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Request body sizes, in bytes (Istio standard metric)",
            metrics.request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Response body sizes, in bytes (Istio standard metric)",
            metrics.response_bytes.clone(),
        );
        metrics
    }

    fn record(&self, labels: &RequestLabels, millis: f64, request_bytes: u64, response_bytes: u64) {
        self.requests.get_or_create(labels).inc();
        self.duration.get_or_create(labels).observe(millis);
        self.request_bytes
            .get_or_create(labels)
            .observe(request_bytes as f64);
        self.response_bytes
            .get_or_create(labels)
            .observe(response_bytes as f64);
    }
}

/// A request being measured: recorded once, when the response body it wraps ends or drops.
pub(crate) struct Measured {
    metrics: IstioMetrics,
    labels: RequestLabels,
    started: Instant,
    request_bytes: u64,
}

impl Measured {
    pub(crate) fn new(
        metrics: IstioMetrics,
        labels: RequestLabels,
        started: Instant,
        request_bytes: u64,
    ) -> Self {
        Measured {
            metrics,
            labels,
            started,
            request_bytes,
        }
    }

    /// Wraps the response body so the request is recorded when it ends.
    pub(crate) fn body(self, inner: MeshBody) -> MeshBody {
        crate::body::boxed(MeasuredBody {
            inner,
            sent: 0,
            done: Some(self),
        })
    }
}

struct MeasuredBody {
    inner: MeshBody,
    sent: u64,
    done: Option<Measured>,
}

impl MeasuredBody {
    fn finish(&mut self) {
        if let Some(m) = self.done.take() {
            let millis = m.started.elapsed().as_secs_f64() * 1000.0;
            m.metrics
                .record(&m.labels, millis, m.request_bytes, self.sent);
        }
    }
}

impl Drop for MeasuredBody {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Body for MeasuredBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.sent += data.len() as u64;
                }
                if self.inner.is_end_stream() {
                    self.finish();
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Who this workload is, for the `destination_*` labels of inbound requests.
#[derive(Debug, Clone)]
pub(crate) struct LocalWorkload {
    pub(crate) workload: String,
    pub(crate) namespace: String,
}

impl LocalWorkload {
    pub(crate) fn of(settings: &crate::mesh::MeshSettings) -> Arc<Self> {
        Arc::new(LocalWorkload {
            workload: settings
                .source
                .labels
                .get("app")
                .cloned()
                .unwrap_or_else(|| "unknown".to_string()),
            namespace: settings.source.namespace.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use prometheus_client::encoding::text::encode;

    fn labels(code: u16) -> RequestLabels {
        RequestLabels {
            reporter: "destination",
            source_workload: "unknown".into(),
            source_workload_namespace: "default".into(),
            source_principal: "spiffe://cluster.local/ns/default/sa/a".into(),
            destination_service: "b".into(),
            destination_service_name: "b".into(),
            destination_workload: "b".into(),
            destination_workload_namespace: "default".into(),
            destination_principal: "unknown".into(),
            request_protocol: "http",
            response_code: code,
            response_flags: "-".into(),
            connection_security_policy: "mutual_tls",
        }
    }

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        encode(&mut out, registry).expect("encodes");
        out
    }

    fn value_of<'a>(text: &'a str, prefix: &str, code: &str) -> Option<&'a str> {
        text.lines()
            .find(|l| l.starts_with(prefix) && l.contains(&format!("response_code=\"{code}\"")))
            .and_then(|l| l.rsplit(' ').next())
    }

    #[tokio::test]
    async fn a_request_is_recorded_once_when_its_body_ends_with_the_bytes_sent() {
        let mut registry = Registry::default();
        let metrics = IstioMetrics::register(&mut registry);
        let m = Measured::new(metrics.clone(), labels(200), Instant::now(), 7);
        let body = m.body(crate::body::full("hello"));
        // Nothing is recorded before the body ends.
        assert_eq!(
            value_of(&text(&registry), "istio_requests_total{", "200"),
            None
        );
        let bytes = body.collect().await.expect("collects").to_bytes();
        assert_eq!(bytes.as_ref(), b"hello");
        let t = text(&registry);
        assert_eq!(value_of(&t, "istio_requests_total{", "200"), Some("1"));
        assert_eq!(
            value_of(&t, "istio_response_bytes_sum{", "200"),
            Some("5.0")
        );
        assert_eq!(value_of(&t, "istio_request_bytes_sum{", "200"), Some("7.0"));
    }

    #[test]
    fn a_response_dropped_unread_is_still_recorded_once() {
        let mut registry = Registry::default();
        let metrics = IstioMetrics::register(&mut registry);
        let m = Measured::new(metrics, labels(503), Instant::now(), 0);
        drop(m.body(crate::body::full("never read")));
        let t = text(&registry);
        assert_eq!(value_of(&t, "istio_requests_total{", "503"), Some("1"));
        assert_eq!(
            value_of(&t, "istio_response_bytes_sum{", "503"),
            Some("0.0")
        );
    }
}
