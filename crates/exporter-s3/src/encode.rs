//! Turning one batch into the bytes of one object.

use std::io::Write;

use otelcol_core::encoding::Encoding;

use crate::config::{Compression, Marshaler};
use crate::push::Layout;
use crate::signal::Signal;

/// Why a batch could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The Parquet writer failed.
    #[error(transparent)]
    Parquet(#[from] crate::parquet::ParquetError),
    /// The marshaler has no form for this signal.
    #[error("the {marshaler} marshaler does not write {signal}")]
    Unsupported {
        /// The marshaler's config name.
        marshaler: &'static str,
        /// The signal.
        signal: &'static str,
    },
    /// The encoding extension failed.
    #[error("encoding extension: {0}")]
    Encoding(#[from] otelcol_core::encoding::EncodingError),
    /// A resource lacks an attribute the marshaler needs.
    #[error("the sumo_ic marshaler needs resource attribute {attribute}, which a resource of the batch lacks")]
    MissingAttribute {
        /// The attribute.
        attribute: &'static str,
    },
    /// Compression failed.
    #[error("{0} compression: {1}")]
    Compress(&'static str, std::io::Error),
}

/// An encoded object: its bytes, the file name's extension (with any
/// compression suffix) and the content headers.
#[derive(Debug)]
pub struct Encoded {
    /// The object's bytes.
    pub bytes: Vec<u8>,
    /// `json`, `binpb` or `parquet`, plus `.gz` / `.zst` when compressed.
    pub extension: String,
    /// `Content-Type`.
    pub content_type: String,
    /// `Content-Encoding` (`gzip` or `zstd`), if the whole object is compressed.
    pub content_encoding: Option<&'static str>,
}

/// Whether `marshaler` can write signal `T` (checked when an exporter is built).
pub fn supports<T: Signal>(marshaler: Marshaler) -> Result<(), EncodeError> {
    let supported = match marshaler {
        Marshaler::OtlpJson | Marshaler::OtlpProto => true,
        Marshaler::Parquet => T::PARQUET,
        Marshaler::SumoIc | Marshaler::Body => T::KIND == otelcol_core::Signal::Logs,
    };
    if supported {
        Ok(())
    } else {
        Err(EncodeError::Unsupported {
            marshaler: marshaler.name(),
            signal: T::NAME,
        })
    }
}

/// Encodes `data` as `layout` says: with the encoding extension when one
/// is configured (resolved at start), else with the marshaler. Parquet
/// compresses inside the file (the codec of its column chunks), the
/// others compress the whole object. `layout.file_extension` replaces the
/// natural extension.
pub fn encode<T: Signal>(
    data: &T,
    layout: &Layout,
    encoding: Option<&dyn Encoding>,
) -> Result<Encoded, EncodeError> {
    let marshaler = layout.marshaler;
    let named = |natural: &str| layout.file_extension.clone().unwrap_or(natural.to_string());
    let (raw, ext, content_type) = match (encoding, marshaler) {
        (Some(e), _) => (
            data.encode_with(e)?,
            named(e.file_extension()),
            e.content_type().to_string(),
        ),
        (None, Marshaler::Parquet) => {
            return Ok(Encoded {
                bytes: data.to_parquet(&layout.user_attributes, layout.compression)?,
                extension: named("parquet"),
                content_type: "application/vnd.apache.parquet".into(),
                content_encoding: None,
            });
        }
        (None, Marshaler::OtlpJson) => (
            data.to_json().into_bytes(),
            named("json"),
            "application/json".into(),
        ),
        (None, Marshaler::OtlpProto) => (
            data.encode_to_vec(),
            named("binpb"),
            "application/x-protobuf".into(),
        ),
        (None, Marshaler::SumoIc | Marshaler::Body) => {
            let logs = data.as_logs().ok_or(EncodeError::Unsupported {
                marshaler: marshaler.name(),
                signal: T::NAME,
            })?;
            if marshaler == Marshaler::Body {
                (
                    crate::lines::body(logs),
                    named("txt"),
                    "text/plain; charset=utf-8".into(),
                )
            } else {
                (
                    crate::lines::sumo_ic(logs)?,
                    named("json"),
                    "application/json".into(),
                )
            }
        }
    };
    let (bytes, suffix, content_encoding) = match layout.compression {
        Compression::None => (raw, "", None),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&raw)
                .and_then(|_| e.finish())
                .map(|b| (b, ".gz", Some("gzip")))
                .map_err(|err| EncodeError::Compress("gzip", err))?
        }
        Compression::Zstd => zstd::bulk::compress(&raw, 3)
            .map(|b| (b, ".zst", Some("zstd")))
            .map_err(|err| EncodeError::Compress("zstd", err))?,
    };
    Ok(Encoded {
        bytes,
        extension: format!("{ext}{suffix}"),
        content_type,
        content_encoding,
    })
}
