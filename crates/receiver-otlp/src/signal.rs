//! What differs between signals, and the one delivery path both transports use.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    Payload
    + prost::Message
    + Default
    + serde::de::DeserializeOwned
    + crate::depth::Rooted
    + crate::json_fast::FastJson
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
    route: Route<T>,
    /// The pipeline [reads the bytes](Consumer::reads_received) it is
    /// handed: protobuf requests go to it undecoded.
    undecoded: bool,
    accepted: Counter,
    refused: Counter,
}

/// A pipeline takes the signal, or none does.
enum Route<T> {
    Pipeline(Arc<dyn Consumer<T>>),
    /// No pipeline takes it: requests are answered OK (an SDK that gets an
    /// error for one signal may drop the others: Gemini CLI aborts its
    /// final flush) and their items discarded, counted and warned about.
    Discard {
        discarded: Counter,
        last_warned: Arc<AtomicU64>,
        receiver: String,
    },
}

/// How often the "no pipeline takes ..." warning repeats, per signal.
const DISCARD_WARN_EVERY: Duration = Duration::from_secs(600);

/// When each signal's discard warning last went out (Unix seconds, 0 for
/// never), shared by the transports of one receiver.
#[derive(Default)]
pub(crate) struct DiscardWarnings {
    metrics: Arc<AtomicU64>,
    logs: Arc<AtomicU64>,
    traces: Arc<AtomicU64>,
}

/// Names and help texts of one signal's receiver counters (the Go names).
struct CounterNames {
    accepted: (&'static str, &'static str),
    refused: (&'static str, &'static str),
    discarded: (&'static str, &'static str),
}

fn counter_names(items: &str) -> CounterNames {
    match items {
        "metric_points" => CounterNames {
            accepted: ("otelcol_receiver_accepted_metric_points", "Metric points accepted by the receiver and handed to the pipeline."),
            refused: ("otelcol_receiver_refused_metric_points", "Metric points that could not be pushed into the pipeline."),
            discarded: ("otelcol_receiver_discarded_metric_points", "Metric points received and discarded because no pipeline of the receiver takes metrics."),
        },
        "log_records" => CounterNames {
            accepted: ("otelcol_receiver_accepted_log_records", "Log records accepted by the receiver and handed to the pipeline."),
            refused: ("otelcol_receiver_refused_log_records", "Log records that could not be pushed into the pipeline."),
            discarded: ("otelcol_receiver_discarded_log_records", "Log records received and discarded because no pipeline of the receiver takes logs."),
        },
        _ => CounterNames {
            accepted: ("otelcol_receiver_accepted_spans", "Spans accepted by the receiver and handed to the pipeline."),
            refused: ("otelcol_receiver_refused_spans", "Spans that could not be pushed into the pipeline."),
            discarded: ("otelcol_receiver_discarded_spans", "Spans received and discarded because no pipeline of the receiver takes traces."),
        },
    }
}

impl<T: OtlpSignal> Sink<T> {
    fn new(
        settings: &CreateSettings,
        consumer: Option<Arc<dyn Consumer<T>>>,
        last_warned: &Arc<AtomicU64>,
        id: &str,
        transport: &str,
    ) -> Self {
        let labels = [("receiver", id), ("transport", transport)];
        let names = counter_names(T::ITEMS);
        let accepted = settings
            .metrics
            .counter(names.accepted.0, names.accepted.1, &labels);
        let refused = settings
            .metrics
            .counter(names.refused.0, names.refused.1, &labels);
        let route = match consumer {
            Some(c) => Route::Pipeline(c),
            None => Route::Discard {
                discarded: settings
                    .metrics
                    .counter(names.discarded.0, names.discarded.1, &labels),
                last_warned: last_warned.clone(),
                receiver: id.to_string(),
            },
        };
        let undecoded = matches!(&route, Route::Pipeline(c) if c.reads_received());
        Self {
            route,
            undecoded,
            accepted,
            refused,
        }
    }

    /// Whether protobuf requests go to the pipeline undecoded (see
    /// [`Sink::deliver`]).
    pub(crate) fn takes_undecoded(&self) -> bool {
        self.undecoded
    }

    /// Hands a request to the pipeline: `data` decoded, with `received`,
    /// the protobuf bytes it was decoded from, when there were any; or,
    /// when the sink [takes them undecoded](Sink::takes_undecoded), `data`
    /// left empty beside the bytes. `items` is the request's count either
    /// way. An empty request is answered without entering the pipeline.
    /// Items the pipeline rejected while taking the rest are counted
    /// refused and logged, and come back for the answer's partial success.
    pub(crate) async fn deliver(
        &self,
        data: T,
        items: usize,
        context: RequestContext,
        received: Option<bytes::Bytes>,
    ) -> Result<Delivered, ConsumerError> {
        let items = items as u64;
        if items == 0 {
            return Ok(Delivered::default());
        }
        let consumer = match &self.route {
            Route::Pipeline(c) => c,
            Route::Discard {
                discarded,
                last_warned,
                receiver,
            } => {
                discarded.add(items);
                warn_discard::<T>(last_warned, receiver, items);
                return Ok(Delivered::default());
            }
        };
        let rejections = context.rejected.clone();
        match consumer
            .consume(Batch {
                data,
                context,
                received,
            })
            .await
        {
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

/// Warns that `items` of `T` were discarded, at most once per
/// [`DISCARD_WARN_EVERY`] per signal and receiver.
fn warn_discard<T: OtlpSignal>(last_warned: &AtomicU64, receiver: &str, items: u64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = last_warned.load(Ordering::Relaxed);
    let due = last == 0 || now.saturating_sub(last) >= DISCARD_WARN_EVERY.as_secs();
    if due
        && last_warned
            .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let signal = T::SIGNAL;
        tracing::warn!(
            receiver,
            signal = %signal,
            items,
            "discarding {signal} received by `{receiver}`: no pipeline takes {signal} from this receiver \
             (answered OK so that senders keep sending their other signals; counted in otelcol_receiver_discarded_{}). \
             To keep them, add a `{signal}` pipeline with `receivers: [{receiver}]`. Repeats at most every 10 minutes.",
            T::ITEMS
        );
    }
}

/// The sinks of the three signals: each goes to its pipeline, or is
/// discarded (counted) when no pipeline of this receiver takes it.
pub(crate) struct Sinks {
    pub metrics: Arc<Sink<Metrics>>,
    pub logs: Arc<Sink<Logs>>,
    pub traces: Arc<Sink<Traces>>,
}

impl Sinks {
    pub(crate) fn new(
        settings: &CreateSettings,
        next: &SignalConsumers,
        warnings: &DiscardWarnings,
        id: &str,
        transport: &str,
    ) -> Self {
        Self {
            metrics: Arc::new(Sink::new(
                settings,
                next.metrics.clone(),
                &warnings.metrics,
                id,
                transport,
            )),
            logs: Arc::new(Sink::new(
                settings,
                next.logs.clone(),
                &warnings.logs,
                id,
                transport,
            )),
            traces: Arc::new(Sink::new(
                settings,
                next.traces.clone(),
                &warnings.traces,
                id,
                transport,
            )),
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
