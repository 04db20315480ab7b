//! What differs between signals, and the one delivery path both transports use.

use std::sync::Arc;

use otelcol_core::component::{CreateSettings, SignalConsumers};
use otelcol_core::consumer::{Batch, Consumer, ConsumerError, RequestContext};
use otelcol_core::pdata::proto::collector::{
    logs::v1::ExportLogsPartialSuccess, metrics::v1::ExportMetricsPartialSuccess,
    trace::v1::ExportTracePartialSuccess,
};
use otelcol_core::pdata::{
    ExportLogsServiceResponse, ExportMetricsServiceResponse, ExportTraceServiceResponse, Logs,
    Metrics, Payload, Traces,
};
use otelcol_core::telemetry::Counter;

/// A signal as the receiver sees it: its wire types and counter names.
pub(crate) trait OtlpSignal:
    Payload + prost::Message + Default + serde::de::DeserializeOwned
{
    /// The export response message.
    type Response: prost::Message + Default + serde::Serialize + Send + 'static;
    /// Suffix of the Go counter names: `metric_points`, `log_records`, `spans`.
    const ITEMS: &'static str;
    /// The OTLP/JSON name of the partial-success count field.
    const REJECTED_FIELD: &'static str;
    /// The response for an accepted request, with a partial success when
    /// items were rejected.
    fn response(outcome: &Delivered) -> Self::Response;
}

impl OtlpSignal for Metrics {
    type Response = ExportMetricsServiceResponse;
    const ITEMS: &'static str = "metric_points";
    const REJECTED_FIELD: &'static str = "rejectedDataPoints";
    fn response(o: &Delivered) -> Self::Response {
        ExportMetricsServiceResponse {
            partial_success: o.partial().map(|(n, m)| ExportMetricsPartialSuccess {
                rejected_data_points: n,
                error_message: m,
            }),
        }
    }
}
impl OtlpSignal for Logs {
    type Response = ExportLogsServiceResponse;
    const ITEMS: &'static str = "log_records";
    const REJECTED_FIELD: &'static str = "rejectedLogRecords";
    fn response(o: &Delivered) -> Self::Response {
        ExportLogsServiceResponse {
            partial_success: o.partial().map(|(n, m)| ExportLogsPartialSuccess {
                rejected_log_records: n,
                error_message: m,
            }),
        }
    }
}
impl OtlpSignal for Traces {
    type Response = ExportTraceServiceResponse;
    const ITEMS: &'static str = "spans";
    const REJECTED_FIELD: &'static str = "rejectedSpans";
    fn response(o: &Delivered) -> Self::Response {
        ExportTraceServiceResponse {
            partial_success: o.partial().map(|(n, m)| ExportTracePartialSuccess {
                rejected_spans: n,
                error_message: m,
            }),
        }
    }
}

/// What the pipeline did with an accepted request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Delivered {
    /// Items the pipeline dropped for good while taking the rest.
    pub rejected: u64,
    /// Why, when `rejected > 0`.
    pub message: Option<String>,
}

impl Delivered {
    /// `(rejected, error_message)` for a partial-success answer, if any.
    fn partial(&self) -> Option<(i64, String)> {
        (self.rejected > 0).then(|| {
            (
                i64::try_from(self.rejected).unwrap_or(i64::MAX),
                self.message.clone().unwrap_or_default(),
            )
        })
    }

    /// The OTLP/JSON body of the answer: `{}` or the partial success, with
    /// the count as a decimal string as protobuf JSON writes 64-bit integers.
    pub(crate) fn json_body<T: OtlpSignal>(&self) -> Vec<u8> {
        match self.partial() {
            None => b"{}".to_vec(),
            Some((n, message)) => {
                let mut partial = serde_json::Map::new();
                partial.insert(T::REJECTED_FIELD.into(), n.to_string().into());
                partial.insert("errorMessage".into(), message.into());
                serde_json::json!({ "partialSuccess": partial })
                    .to_string()
                    .into_bytes()
            }
        }
    }
}

/// Where one signal goes from one transport, with its counters.
pub(crate) struct Sink<T> {
    consumer: Arc<dyn Consumer<T>>,
    accepted: Counter,
    refused: Counter,
}

impl<T: OtlpSignal> Sink<T> {
    fn new(
        settings: &CreateSettings,
        consumer: Arc<dyn Consumer<T>>,
        id: &str,
        transport: &str,
    ) -> Self {
        let labels = [("receiver", id), ("transport", transport)];
        let (accepted, refused) = match T::ITEMS {
            "metric_points" => (
                settings.metrics.counter(
                    "otelcol_receiver_accepted_metric_points",
                    "Metric points accepted by the receiver and handed to the pipeline.",
                    &labels,
                ),
                settings.metrics.counter(
                    "otelcol_receiver_refused_metric_points",
                    "Metric points that could not be pushed into the pipeline.",
                    &labels,
                ),
            ),
            "log_records" => (
                settings.metrics.counter(
                    "otelcol_receiver_accepted_log_records",
                    "Log records accepted by the receiver and handed to the pipeline.",
                    &labels,
                ),
                settings.metrics.counter(
                    "otelcol_receiver_refused_log_records",
                    "Log records that could not be pushed into the pipeline.",
                    &labels,
                ),
            ),
            _ => (
                settings.metrics.counter(
                    "otelcol_receiver_accepted_spans",
                    "Spans accepted by the receiver and handed to the pipeline.",
                    &labels,
                ),
                settings.metrics.counter(
                    "otelcol_receiver_refused_spans",
                    "Spans that could not be pushed into the pipeline.",
                    &labels,
                ),
            ),
        };
        Self {
            consumer,
            accepted,
            refused,
        }
    }

    /// Hands a decoded request to the pipeline. An empty request is answered
    /// without entering it. Items the pipeline rejected while taking the
    /// rest are counted refused and logged, and come back for the answer's
    /// partial success.
    pub(crate) async fn deliver(
        &self,
        data: T,
        context: RequestContext,
    ) -> Result<Delivered, ConsumerError> {
        let items = data.item_count() as u64;
        if items == 0 {
            return Ok(Delivered::default());
        }
        let rejections = context.rejected.clone();
        match self.consumer.consume(Batch { data, context }).await {
            Ok(()) => {
                let rejected = rejections.items().min(items);
                let message = rejections.message();
                self.accepted.add(items - rejected);
                if rejected > 0 {
                    self.refused.add(rejected);
                    tracing::debug!(rejected, items, signal = %T::SIGNAL, reason = message.as_deref().unwrap_or(""), "answered a partial success");
                }
                Ok(Delivered { rejected, message })
            }
            Err(e) => {
                self.refused.add(items);
                tracing::debug!(error = %e, items, signal = %T::SIGNAL, "pipeline refused a request");
                Err(e)
            }
        }
    }
}

/// The sinks of the signals this receiver's pipelines carry.
pub(crate) struct Sinks {
    pub metrics: Option<Arc<Sink<Metrics>>>,
    pub logs: Option<Arc<Sink<Logs>>>,
    pub traces: Option<Arc<Sink<Traces>>>,
}

impl Sinks {
    pub(crate) fn new(
        settings: &CreateSettings,
        next: &SignalConsumers,
        id: &str,
        transport: &str,
    ) -> Self {
        Self {
            metrics: next
                .metrics
                .clone()
                .map(|c| Arc::new(Sink::new(settings, c, id, transport))),
            logs: next
                .logs
                .clone()
                .map(|c| Arc::new(Sink::new(settings, c, id, transport))),
            traces: next
                .traces
                .clone()
                .map(|c| Arc::new(Sink::new(settings, c, id, transport))),
        }
    }
}

/// The request headers worth keeping: lower-case names, text values only.
pub(crate) fn header_pairs(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_string(), v.to_string()))
        })
        .collect()
}
