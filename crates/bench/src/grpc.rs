//! A tonic codec that sends pre-encoded protobuf bytes as they are and
//! ignores the answer's body, so the generator spends no time encoding.

use bytes::{Buf, BufMut, Bytes};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// Bytes in, nothing decoded out.
#[derive(Clone, Copy, Debug, Default)]
pub struct RawCodec;

/// Writes the bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct RawEncoder;

/// Skips the answer.
#[derive(Clone, Copy, Debug, Default)]
pub struct Skip;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Skip {
    type Item = ();
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, Status> {
        let n = src.remaining();
        src.advance(n);
        Ok(Some(()))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ();
    type Encoder = RawEncoder;
    type Decoder = Skip;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> Skip {
        Skip
    }
}
