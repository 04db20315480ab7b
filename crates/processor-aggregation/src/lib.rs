//! The `aggregation` processor: raw per-request metrics in, per-user totals
//! per time window out, so only totals leave the network.
//!
//! The rules are those of `shared/spec/aggregation.md`:
//!
//! 1. a point's window is chosen by its own timestamp (epoch-aligned windows
//!    of `aggregation_interval`; a point stamped more than `max_future_skew`
//!    ahead counts at arrival time);
//! 2. delta sums are added;
//! 3. cumulative sums are turned into deltas per input stream; a stream is
//!    told apart by client token, user key (wherever found, header
//!    included), input resource, scope, metric name and kind, every point
//!    attribute and the start time, so two processes of one user are two
//!    streams and a sender restart is a new stream. A lower value is a
//!    reset. The first point of a stream counts in full only if it started
//!    at or after the collector, `now - stream_ttl` and any stream forgotten
//!    for room (`max_streams`), else it sets the baseline: a returning
//!    stream is never counted twice. A point not newer than the stream's
//!    last is stale (dropped, counted) but keeps the stream alive; the time
//!    a stream keeps is capped at `now + max_future_skew`, so one point
//!    stamped in the future cannot make every later point look stale;
//! 4. non-monotonic sums: delta ones are added; cumulative ones are gauges
//!    in effect: each stream's last value, combined across the streams of a
//!    series by the `gauge` policy, emitted as a gauge;
//! 5. gauges combine by `gauge` (`sum`, `last`, `min`, `max`, `mean`); an
//!    emitted gauge is kept one more window, so a late point re-emits the
//!    whole window (a replacement, never an extra delta);
//! 6. histograms merge count, sum (none if any point had none), min, max
//!    and, while bounds agree, buckets; cumulative ones are turned into
//!    deltas first (min and max of a difference are unknown and left out);
//!    exponential histograms merge at a scale chosen before adding, so no
//!    intermediate holds more than 160 buckets a side. Points whose numbers
//!    are not finite, whose counts do not add up, whose bounds are not
//!    increasing or whose exponential indexes cannot be represented are
//!    refused as invalid (counted), as is a point whose total would
//!    overflow: nothing wraps, nothing non-finite is emitted;
//! 7. summaries are dropped and counted;
//! 8. one output series per (client token, output resource, metric name,
//!    kind, unit, window, user key, kept point attributes); the output
//!    resource keeps only `resource_attributes` (by default service name,
//!    namespace and version, deployment environment, organization id) and
//!    the user key, so process ids, host names, command lines and session
//!    ids never leave and never split a user's totals;
//! 9. output is delta, start = window start, time = window end, doubles, the
//!    user key written on every point, scope [`SCOPE_NAME`];
//! 10. points for an already emitted window are emitted again at the next
//!     tick (additive kinds as extra deltas), and counted as late;
//! 11. shutdown flushes every open window, the current one included;
//! 12. a request that would open more series than `max_series` leaves room
//!     for is refused whole and retryably, so the sender's retry is not a
//!     duplicate; totals refused downstream are offered again only to the
//!     branches that refused, and count against `max_series` meanwhile.
//!
//! Emission takes every closed series in one step and cuts them, in series
//! order, into pieces of [`PIECE_SERIES`]; each piece is built and sent
//! before the next, and stays in the engine until every branch took it.
//!
//! With `storage` (a `file_storage` extension) every change of the engine is
//! first written to a log (group commit: one `fsync` for every request that
//! arrived meanwhile), applied only once durable, and answered then; a
//! snapshot of the whole engine ([`Engine::snapshot`], [`Engine::restore`])
//! bounds the log. After a crash the state is rebuilt before the receivers
//! open, and a window's totals go out again under the idempotency key they
//! had. See the crate README, "Durability".
//!
//! The [`Engine`] is usable alone, with time driven by the caller:
//!
//! ```
//! use otelcol_core::consumer::RequestContext;
//! use otelcol_processor_aggregation::{AggregationConfig, Engine};
//!
//! let request: otelcol_core::pdata::Metrics = serde_json::from_str(r#"{"resourceMetrics": [{
//!     "scopeMetrics": [{"metrics": [{"name": "claude_code.cost.usage", "unit": "USD",
//!       "sum": {"aggregationTemporality": 1, "isMonotonic": true, "dataPoints": [
//!         {"timeUnixNano": "1795255210000000000", "asDouble": 0.25,
//!          "attributes": [{"key": "user.email", "value": {"stringValue": "ana@example.com"}}]},
//!         {"timeUnixNano": "1795255220000000000", "asDouble": 0.5,
//!          "attributes": [{"key": "user.email", "value": {"stringValue": "ana@example.com"}}]}
//!       ]}}]}]}]}"#).unwrap();
//!
//! let config = AggregationConfig {
//!     aggregation_interval: std::time::Duration::from_secs(300),
//!     ..Default::default()
//! };
//! let now = 1_795_255_230_000_000_000; // 2026-11-21T10:00:30Z
//! let mut engine = Engine::new(config, 0).unwrap();
//! let outcome = engine.add(&request, &RequestContext::default(), now).unwrap();
//! assert_eq!(outcome.accepted, 2);
//!
//! // The 10:00–10:05 window closes at 10:05:30 (grace 30 s).
//! assert!(engine.take_closed(now).is_empty());
//! let batches = engine.take_closed(now + 300_000_000_000);
//! let metric = &batches[0].data.resource_metrics[0].scope_metrics[0].metrics[0];
//! let Some(otelcol_core::pdata::proto::metrics::v1::metric::Data::Sum(sum)) = &metric.data else { panic!() };
//! assert_eq!(sum.data_points[0].value, Some(
//!     otelcol_core::pdata::proto::metrics::v1::number_data_point::Value::AsDouble(0.75)));
//!
//! // The same request as protobuf bytes, as a receiver has it: read in
//! // place (no prost tree), with the same outcome.
//! use prost::Message;
//! let bytes = request.encode_to_vec();
//! assert!(otelcol_processor_aggregation::reads_in_place(&bytes));
//! let mut other = Engine::new(engine.config().clone(), 0).unwrap();
//! assert_eq!(other.add_encoded(&bytes, &RequestContext::default(), now).unwrap(), outcome);
//! ```

mod codec;
pub mod config;
mod durable;
mod emission;
mod engine;
mod exp;
mod heads;
mod intern;
mod layout;
mod log_thread;
mod output;
mod packed;
mod processor;
mod series;
mod shard;
mod snapshot;
mod stream;
pub mod value;
mod view;

pub use config::{AggregationConfig, GaugePolicy, Lookup, MissingKey, ResourceAttributes};
pub use durable::{DurableError, Recovery, FORMAT_VERSION};
pub use emission::{Piece, PIECE_SERIES};
pub use engine::{AddError, AddOutcome, Dropped, Engine, PointTrace, Prepared};
pub use output::{OutKind, SCOPE_NAME};
pub use processor::{
    redact, AggregationProcessor, AggregationProcessorFactory, FLOW_WINDOW_POINTS,
};
pub use series::Closed;
pub use shard::{auto_shards, ShardedEngine, MAX_SHARDS};
pub use snapshot::{RestoreError, TakenSnapshot, SNAPSHOT_VERSION};
pub use view::reads_in_place;

/// Adds this crate's component types to `factories`: the entry point a
/// distribution (`cargo xtask dist`) calls for every component crate.
pub fn register(
    factories: otelcol_core::component::Factories,
) -> otelcol_core::component::Factories {
    factories.processor(AggregationProcessorFactory)
}
