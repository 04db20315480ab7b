//! Encoding extensions: a component that turns a batch into bytes in a
//! format of its own (the Go collector's `plog.Marshaler` and friends, as
//! offered by its encoding extensions). Exporters that write whole objects
//! (`awss3`, `googlecloudstorage`) use one when their `encoding` key names
//! it (see [`crate::component::Host::encoding`]).

use crate::pdata::{Logs, Metrics, Traces};

/// Why a batch could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EncodingError(pub String);

/// Turns batches into bytes.
pub trait Encoding: Send + Sync {
    /// Metrics as one object's bytes.
    fn encode_metrics(&self, data: &Metrics) -> Result<Vec<u8>, EncodingError>;
    /// Logs as one object's bytes.
    fn encode_logs(&self, data: &Logs) -> Result<Vec<u8>, EncodingError>;
    /// Traces as one object's bytes.
    fn encode_traces(&self, data: &Traces) -> Result<Vec<u8>, EncodingError>;
    /// The file name extension of what it writes, without the dot (`binpb`).
    fn file_extension(&self) -> &str;
    /// The media type of what it writes.
    fn content_type(&self) -> &str;
}
