//! What differs between signals, and the one delivery path both transports use.

use std::sync::Arc;

use otelcol_core::component::{CreateSettings, SignalConsumers};
use otelcol_core::consumer::{Batch, Consumer, ConsumerError, RequestContext};
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
}

impl OtlpSignal for Metrics {
    type Response = ExportMetricsServiceResponse;
    const ITEMS: &'static str = "metric_points";
}
impl OtlpSignal for Logs {
    type Response = ExportLogsServiceResponse;
    const ITEMS: &'static str = "log_records";
}
impl OtlpSignal for Traces {
    type Response = ExportTraceServiceResponse;
    const ITEMS: &'static str = "spans";
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
    /// without entering it.
    pub(crate) async fn deliver(
        &self,
        data: T,
        context: RequestContext,
    ) -> Result<(), ConsumerError> {
        let items = data.item_count() as u64;
        if items == 0 {
            return Ok(());
        }
        match self.consumer.consume(Batch { data, context }).await {
            Ok(()) => {
                self.accepted.add(items);
                Ok(())
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
