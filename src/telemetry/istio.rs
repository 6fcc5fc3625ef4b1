//! Istio's four standard request metrics: their names, labels, default buckets, and the
//! response body wrapper that records a request when its response ends.

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

    /// The four series of one label set (looked up once; recording then touches only them).
    pub(crate) fn series(&self, labels: &RequestLabels) -> Series {
        Series {
            requests: self.requests.get_or_create(labels).clone(),
            duration: self.duration.get_or_create(labels).clone(),
            request_bytes: self.request_bytes.get_or_create(labels).clone(),
            response_bytes: self.response_bytes.get_or_create(labels).clone(),
        }
    }
}

/// The series of the four metrics for one label set: handles that update the registry's
/// values (clones share them).
#[derive(Debug, Clone)]
pub(crate) struct Series {
    requests: Counter,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

impl Series {
    /// Records one request.
    pub(crate) fn record(&self, millis: f64, request_bytes: u64, response_bytes: u64) {
        self.requests.inc();
        self.duration.observe(millis);
        self.request_bytes.observe(request_bytes as f64);
        self.response_bytes.observe(response_bytes as f64);
    }
}

/// The request's `content-length` (0 without one or when it does not parse), as Istio's
/// `istio_request_bytes` counts a request in this mesh.
pub(crate) fn request_bytes(headers: &http::HeaderMap) -> u64 {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A request being measured: recorded once, when the response body it wraps ends or drops.
pub(crate) struct Measured {
    series: Arc<Series>,
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
        Measured::of(Arc::new(metrics.series(&labels)), started, request_bytes)
    }

    /// A request recorded in `series` (already resolved, e.g. from a cache).
    pub(crate) fn of(series: Arc<Series>, started: Instant, request_bytes: u64) -> Self {
        Measured {
            series,
            started,
            request_bytes,
        }
    }

    /// Records the request now, with `response_bytes` sent (a response without a body to
    /// wrap).
    pub(crate) fn record_now(self, response_bytes: u64) {
        let millis = self.started.elapsed().as_secs_f64() * 1000.0;
        self.series
            .record(millis, self.request_bytes, response_bytes);
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
            m.record_now(self.sent);
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
        // Nothing is counted before the body ends (the series exists, at 0).
        assert_eq!(
            value_of(&text(&registry), "istio_requests_total{", "200"),
            Some("0")
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
