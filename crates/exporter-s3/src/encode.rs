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
    if marshaler == Marshaler::Parquet && !T::PARQUET {
        return Err(EncodeError::Unsupported {
            marshaler: "parquet",
            signal: T::NAME,
        });
    }
    Ok(())
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
