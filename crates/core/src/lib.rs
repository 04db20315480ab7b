//! The collector model shared by every component of `otelcol-multitudes`.
//!
//! The split follows the OpenTelemetry Collector's own:
//!
//! - [`pdata`]: the OTLP data model (the generated `opentelemetry-proto`
//!   types) and small helpers over it;
//! - [`consumer`]: the one trait data flows through, [`consumer::Consumer`],
//!   with the request context that travels beside each batch and the typed
//!   errors receivers turn into OTLP status codes;
//! - [`component`]: component ids, factories and lifecycle, and the
//!   [`component::Host`] a component sees while it runs;
//! - [`config`]: YAML loading with merging, `--set` and `${env:…}` expansion;
//! - [`pipeline`]: the builder that turns a config into a running
//!   [`pipeline::Service`];
//! - [`memory`]: live heap accounting (a counting global allocator) for
//!   memory limits;
//! - [`server`]: the HTTP server the listening components share;
//! - [`task`]: a periodic background task for components;
//! - [`status`]: component health as reported to health extensions;
//! - [`storage`]: the key-value client storage extensions hand out;
//! - [`exporter`]: the one sending path of every exporter (queue, retry,
//!   timeout, counters);
//! - [`tls`]: TLS settings for listening components;
//! - [`telemetry`]: the collector's own logs and Prometheus metrics.
//!
//! `core` knows no concrete component: receivers, processors, exporters and
//! extensions live in their own crates and register a factory.

pub mod batcher;
pub mod component;
pub mod config;
pub mod consumer;
pub mod encoding;
pub mod exporter;
pub mod memory;
pub mod net;
pub mod ottl;
pub mod pdata;
pub mod pipeline;
pub mod server;
pub mod status;
pub mod storage;
pub mod task;
pub mod telemetry;
pub mod tls;

pub use component::{ComponentId, Signal, Stability};
pub use consumer::{Batch, Consumer, ConsumerError, RequestContext};
