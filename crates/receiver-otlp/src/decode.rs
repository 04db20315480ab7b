//! Turning a request body into a batch: decompression under a size limit,
//! then protobuf or OTLP/JSON.

use std::borrow::Cow;
use std::io::Read;

use otelcol_core::pdata::Payload;
use prost::Message;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::depth::{self, Rooted};
use crate::json_fast::FastJson;

/// Why a body could not be decoded. Every variant is the client's fault
/// (HTTP 400, gRPC InvalidArgument).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// `Content-Encoding` names an algorithm this receiver does not accept.
    #[error("unsupported Content-Encoding `{0}`")]
    UnsupportedEncoding(String),
    /// The body is larger than `max_request_body_size`, on the wire or once decompressed.
    #[error("request body too large: more than {limit} bytes{}", if *.decompressed { " after decompression" } else { "" })]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
        /// Whether the limit was passed while decompressing.
        decompressed: bool,
    },
    /// The compressed stream is corrupt.
    #[error("cannot decompress the {encoding} body: {message}")]
    Decompress {
        /// The encoding.
        encoding: &'static str,
        /// What the decoder said.
        message: String,
    },
    /// Not a valid protobuf message.
    #[error("cannot decode the protobuf body: {0}")]
    Protobuf(String),
    /// Not valid OTLP/JSON.
    #[error("cannot decode the JSON body: {0}")]
    Json(String),
}

/// A supported `Content-Encoding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// No compression.
    Identity,
    /// `gzip`.
    Gzip,
    /// `zstd`.
    Zstd,
    /// `deflate` (zlib-wrapped, as HTTP means it; raw deflate is accepted too).
    Deflate,
    /// `snappy` (block format, or framed when the body starts with the stream identifier).
    Snappy,
    /// `x-snappy-framed`.
    SnappyFramed,
    /// `lz4` (frame format).
    Lz4,
}

impl Encoding {
    /// Parses a `Content-Encoding` value (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "" | "identity" => Self::Identity,
            "gzip" | "x-gzip" => Self::Gzip,
            "zstd" => Self::Zstd,
            "deflate" | "zlib" => Self::Deflate,
            "snappy" => Self::Snappy,
            "x-snappy-framed" => Self::SnappyFramed,
            "lz4" => Self::Lz4,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
            Self::Deflate => "deflate",
            Self::Snappy => "snappy",
            Self::SnappyFramed => "x-snappy-framed",
            Self::Lz4 => "lz4",
        }
    }
}

const SNAPPY_STREAM_ID: &[u8] = b"\xff\x06\x00\x00sNaPpY";

/// Reads at most `limit` bytes from `reader`; more is an error, so a small
/// compressed bomb never grows past the limit in memory.
fn read_limited(reader: impl Read, encoding: Encoding, limit: u64) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    reader
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Decompress {
            encoding: encoding.name(),
            message: e.to_string(),
        })?;
    if out.len() as u64 > limit {
        return Err(DecodeError::TooLarge {
            limit,
            decompressed: true,
        });
    }
    Ok(out)
}

/// Decompresses `body` per `encoding`, refusing output above `limit` bytes;
/// an identity body is borrowed, not copied.
pub fn decompress(
    body: &[u8],
    encoding: Encoding,
    limit: u64,
) -> Result<Cow<'_, [u8]>, DecodeError> {
    let bad = |message: String| DecodeError::Decompress {
        encoding: encoding.name(),
        message,
    };
    let out = match encoding {
        Encoding::Identity => return Ok(Cow::Borrowed(body)),
        Encoding::Gzip => read_limited(flate2::read::MultiGzDecoder::new(body), encoding, limit),
        Encoding::Zstd => {
            let decoder = zstd::stream::read::Decoder::new(body).map_err(|e| bad(e.to_string()))?;
            read_limited(decoder, encoding, limit)
        }
        Encoding::Deflate => {
            match read_limited(flate2::read::ZlibDecoder::new(body), encoding, limit) {
                Err(DecodeError::Decompress { .. }) => {
                    read_limited(flate2::read::DeflateDecoder::new(body), encoding, limit)
                }
                other => other,
            }
        }
        Encoding::Snappy if !body.starts_with(SNAPPY_STREAM_ID) => {
            let len = snap::raw::decompress_len(body).map_err(|e| bad(e.to_string()))?;
            if len as u64 > limit {
                return Err(DecodeError::TooLarge {
                    limit,
                    decompressed: true,
                });
            }
            snap::raw::Decoder::new()
                .decompress_vec(body)
                .map_err(|e| bad(e.to_string()))
        }
        Encoding::Snappy | Encoding::SnappyFramed => {
            read_limited(snap::read::FrameDecoder::new(body), encoding, limit)
        }
        Encoding::Lz4 => read_limited(lz4_flex::frame::FrameDecoder::new(body), encoding, limit),
    };
    out.map(Cow::Owned)
}

/// Decodes a protobuf export request, after checking its `AnyValue`
/// nesting ([`crate::depth`]: prost itself runs without a depth limit).
pub fn decode_proto<T: Message + Default + Rooted>(body: &[u8]) -> Result<T, DecodeError> {
    depth::check_proto(body, T::ROOT).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
    T::decode(body).map_err(|e| DecodeError::Protobuf(e.to_string()))
}

/// Counts a protobuf export request's items on the wire, without
/// decoding or checking it: for a pipeline that reads the bytes itself,
/// which checks their nesting before anything recursive reads them and
/// answers what does not decode (the aggregation processor).
pub fn count_proto<T: Payload>(body: &[u8]) -> usize {
    T::count_encoded(body)
}

/// Decodes an OTLP/JSON body, accepting what the OTLP/JSON and proto3 JSON
/// rules allow beyond the generated serde code (see [`crate::json`]), after
/// checking its nesting ([`crate::depth`]: serde_json itself runs without
/// its 128-level limit). Metrics try the one-pass fast path first
/// ([`crate::json_fast`]), which gives the same result where it applies; it
/// needs no nesting check (its structs nest a fixed dozen levels, and the
/// parts it skips are parsed under serde_json's own 128-level limit).
pub fn decode_json<T: DeserializeOwned + FastJson>(body: &[u8]) -> Result<T, DecodeError> {
    if let Some(fast) = T::fast_json(body) {
        return Ok(fast);
    }
    depth::check_json(body).map_err(|e| DecodeError::Json(e.to_string()))?;
    decode_json_general(body)
}

/// The general OTLP/JSON path alone (a `serde_json::Value` tree rewritten by
/// [`crate::json`], then the generated serde code), without the nesting
/// check: what [`decode_json`] falls back to, and what the fast path is
/// compared with.
pub fn decode_json_general<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    let mut reader = serde_json::Deserializer::from_slice(body);
    reader.disable_recursion_limit();
    let mut value = serde_json::Value::deserialize(&mut reader)
        .map_err(|e| DecodeError::Json(e.to_string()))?;
    reader.end().map_err(|e| DecodeError::Json(e.to_string()))?;
    crate::json::normalize(&mut value).map_err(DecodeError::Json)?;
    serde_json::from_value(value).map_err(|e| DecodeError::Json(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn every_encoding_round_trips() {
        let data = b"hello otlp hello otlp hello otlp".repeat(10);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&data).unwrap();
        let mut d = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        d.write_all(&data).unwrap();
        let mut framed = snap::write::FrameEncoder::new(Vec::new());
        framed.write_all(&data).unwrap();
        let framed = framed.into_inner().unwrap();
        let cases: Vec<(Encoding, Vec<u8>)> = vec![
            (Encoding::Identity, data.clone()),
            (Encoding::Gzip, gzip(&data)),
            (Encoding::Zstd, zstd::encode_all(&data[..], 3).unwrap()),
            (Encoding::Deflate, z.finish().unwrap()),
            (Encoding::Deflate, d.finish().unwrap()),
            (
                Encoding::Snappy,
                snap::raw::Encoder::new().compress_vec(&data).unwrap(),
            ),
            (Encoding::Snappy, framed.clone()),
            (Encoding::SnappyFramed, framed),
            (Encoding::Lz4, {
                let mut w = lz4_flex::frame::FrameEncoder::new(Vec::new());
                w.write_all(&data).unwrap();
                w.finish().unwrap()
            }),
        ];
        for (enc, body) in cases {
            assert_eq!(
                *decompress(&body, enc, 1 << 20).unwrap(),
                data[..],
                "{enc:?}"
            );
        }
    }

    #[test]
    fn bombs_stop_at_the_limit() {
        let bomb = gzip(&vec![0u8; 50 << 20]);
        assert!(
            bomb.len() < 100 << 10,
            "bomb is small on the wire: {}",
            bomb.len()
        );
        assert_eq!(
            decompress(&bomb, Encoding::Gzip, 1 << 20).unwrap_err(),
            DecodeError::TooLarge {
                limit: 1 << 20,
                decompressed: true
            }
        );
        let snappy = snap::raw::Encoder::new()
            .compress_vec(&vec![0u8; 4 << 20])
            .unwrap();
        assert_eq!(
            decompress(&snappy, Encoding::Snappy, 1 << 20).unwrap_err(),
            DecodeError::TooLarge {
                limit: 1 << 20,
                decompressed: true
            }
        );
    }

    #[test]
    fn corrupt_streams_are_named() {
        let err = decompress(b"not gzip at all", Encoding::Gzip, 1024).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Decompress {
                    encoding: "gzip",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(Encoding::parse("br"), None);
        assert_eq!(Encoding::parse("GZIP"), Some(Encoding::Gzip));
    }
}
