//! Turning one batch into the bytes of one object.

use std::io::Write;

use crate::config::{Compression, Marshaler};
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
    pub content_type: &'static str,
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

/// Encodes `data`. Parquet compresses inside the file (the codec of its
/// column chunks), the other marshalers compress the whole object.
pub fn encode<T: Signal>(
    data: &T,
    marshaler: Marshaler,
    compression: Compression,
    user_attributes: &[String],
) -> Result<Encoded, EncodeError> {
    let (raw, ext, content_type) = match marshaler {
        Marshaler::OtlpJson => (data.to_json().into_bytes(), "json", "application/json"),
        Marshaler::OtlpProto => (data.encode_to_vec(), "binpb", "application/x-protobuf"),
        Marshaler::SumoIc | Marshaler::Body => {
            let logs = data.as_logs().ok_or(EncodeError::Unsupported {
                marshaler: marshaler.name(),
                signal: T::NAME,
            })?;
            if marshaler == Marshaler::Body {
                (crate::lines::body(logs), "txt", "text/plain; charset=utf-8")
            } else {
                (crate::lines::sumo_ic(logs)?, "json", "application/json")
            }
        }
        Marshaler::Parquet => {
            return Ok(Encoded {
                bytes: data.to_parquet(user_attributes, compression)?,
                extension: "parquet".into(),
                content_type: "application/vnd.apache.parquet",
                content_encoding: None,
            });
        }
    };
    let (bytes, suffix, encoding) = match compression {
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
        content_encoding: encoding,
    })
}
