//! Encoding extensions: `otlp_encoding` (the Go contrib
//! `otlpencodingextension`), which writes batches as OTLP protobuf
//! (`protocol: otlp_proto`, the default) or as the Go collector's
//! OTLP/JSON (`protocol: otlp_json`). An object exporter uses it when its
//! `encoding` key names it:
//!
//! ```yaml
//! extensions:
//!   otlp_encoding/json: {protocol: otlp_json}
//! exporters:
//!   awss3: {encoding: otlp_encoding/json, s3uploader: {s3_bucket: b}}
//! service:
//!   extensions: [otlp_encoding/json]
//! ```
//!
//! ```
//! use otelcol_core::encoding::Encoding;
//! use otelcol_extension_encoding::{OtlpEncoding, OtlpEncodingConfig, Protocol};
//! let e = OtlpEncoding::new(OtlpEncodingConfig { protocol: Protocol::OtlpJson });
//! let json = e.encode_metrics(&Default::default()).unwrap();
//! assert_eq!(json, b"{}");
//! assert_eq!(e.file_extension(), "json");
//! ```

use std::sync::Arc;

use otelcol_core::component::{
    ComponentError, CreateSettings, Extension, ExtensionFactory, Factories, Factory, Lifecycle,
};
use otelcol_core::config::{decode, ConfigError, RawConfig};
use otelcol_core::encoding::{Encoding, EncodingError};
use otelcol_core::pdata::{json, Logs, Metrics, Traces};
use otelcol_core::{Signal, Stability};
use prost::Message;
use serde::{Deserialize, Serialize};

/// `extensions.otlp_encoding`, the Go extension's one key.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpEncodingConfig {
    /// `otlp_proto` (default) or `otlp_json`.
    pub protocol: Protocol,
}

/// The wire form `otlp_encoding` writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// The OTLP export request as protobuf (`.binpb`).
    #[default]
    OtlpProto,
    /// The export request as the Go collector's OTLP/JSON (`.json`).
    OtlpJson,
}

/// The `otlp_encoding` extension.
#[derive(Debug)]
pub struct OtlpEncoding {
    config: OtlpEncodingConfig,
}

impl OtlpEncoding {
    /// An encoding writing `config.protocol`.
    pub fn new(config: OtlpEncodingConfig) -> Self {
        Self { config }
    }

    fn encode<T: Message>(&self, data: &T, to_json: fn(&T) -> String) -> Vec<u8> {
        match self.config.protocol {
            Protocol::OtlpProto => data.encode_to_vec(),
            Protocol::OtlpJson => to_json(data).into_bytes(),
        }
    }
}

impl Encoding for OtlpEncoding {
    fn encode_metrics(&self, data: &Metrics) -> Result<Vec<u8>, EncodingError> {
        Ok(self.encode(data, json::metrics))
    }
    fn encode_logs(&self, data: &Logs) -> Result<Vec<u8>, EncodingError> {
        Ok(self.encode(data, json::logs))
    }
    fn encode_traces(&self, data: &Traces) -> Result<Vec<u8>, EncodingError> {
        Ok(self.encode(data, json::traces))
    }
    fn file_extension(&self) -> &str {
        match self.config.protocol {
            Protocol::OtlpProto => "binpb",
            Protocol::OtlpJson => "json",
        }
    }
    fn content_type(&self) -> &str {
        match self.config.protocol {
            Protocol::OtlpProto => "application/x-protobuf",
            Protocol::OtlpJson => "application/json",
        }
    }
}

impl Lifecycle for OtlpEncoding {}

impl Extension for OtlpEncoding {
    fn encoding(self: Arc<Self>) -> Option<Arc<dyn Encoding>> {
        Some(self)
    }
}

/// The factory for type `otlp_encoding`.
#[derive(Clone, Copy, Debug, Default)]
pub struct OtlpEncodingFactory;

impl Factory for OtlpEncodingFactory {
    fn type_name(&self) -> &'static str {
        "otlp_encoding"
    }
    fn stability(&self) -> Stability {
        Stability::Beta
    }
    fn signals(&self) -> &'static [Signal] {
        &[]
    }
    fn validate(&self, config: &RawConfig) -> Result<(), ConfigError> {
        decode::<OtlpEncodingConfig>(config).map(|_| ())
    }
}

impl ExtensionFactory for OtlpEncodingFactory {
    fn create(
        &self,
        _: CreateSettings,
        config: &RawConfig,
    ) -> Result<Arc<dyn Extension>, ComponentError> {
        Ok(Arc::new(OtlpEncoding::new(decode(config)?)))
    }
}

/// Adds this crate's component types to `factories`: the entry point a
/// distribution (`cargo xtask dist`) calls for every component crate.
pub fn register(factories: Factories) -> Factories {
    factories.extension(OtlpEncodingFactory)
}
