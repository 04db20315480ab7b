//! A request's protobuf bytes as the durable log keeps them: LZ4 (block
//! format), with the unpacked length in front.
//!
//! OTLP repeats itself (every point carries its own attribute keys and
//! values), so a 1,000-point request of the bench's Claude Code shape,
//! 286 KB, packs to 11 KB in ~47 µs; that is what the log copies, checks,
//! writes and syncs, instead of the whole request. Packing happens on the
//! thread that received the request, outside the engine lock.

use bytes::Bytes;

use crate::codec::Corrupt;

/// The largest ratio of unpacked to packed bytes LZ4 can produce (a run of
/// one byte: 255 bytes per byte of match length, plus the header): a
/// length beyond it is not what was written.
const MAX_RATIO: usize = 256;

/// A request's bytes, packed for the log (empty for ops without one).
#[derive(Clone, Debug, Default)]
pub(crate) struct Packed(Bytes);

/// Requests up to this size are packed into a buffer kept per thread (then
/// copied out at their packed size); larger ones into one of their own.
const SCRATCH_BYTES: usize = 1 << 20;

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Packed {
    /// Packs `raw`. The result holds only its packed size: LZ4 needs room
    /// for the worst case (a little more than `raw`), which a buffer kept
    /// per thread provides, so a 286 KB request does not allocate (and
    /// fault in) 287 KB to keep 11.
    pub fn pack(raw: &[u8]) -> Self {
        let max = lz4_flex::block::get_maximum_output_size(raw.len());
        if max > SCRATCH_BYTES {
            return Self(lz4_flex::block::compress_prepend_size(raw).into());
        }
        SCRATCH.with_borrow_mut(|scratch| {
            if scratch.len() < max {
                scratch.resize(max, 0);
            }
            match lz4_flex::block::compress_into(raw, scratch) {
                Ok(n) => {
                    let mut out = Vec::with_capacity(4 + n);
                    out.extend_from_slice(&(raw.len() as u32).to_le_bytes());
                    out.extend_from_slice(&scratch[..n]);
                    Self(out.into())
                }
                // Not with room for the worst case; packed on its own then.
                Err(_) => Self(lz4_flex::block::compress_prepend_size(raw).into()),
            }
        })
    }

    /// The packed bytes, as the log writes them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// How many bytes `packed` unpacks to, as its header says.
    pub fn unpacked_len(packed: &[u8]) -> usize {
        packed
            .get(..4)
            .and_then(|h| h.try_into().ok())
            .map_or(0, |h| u32::from_le_bytes(h) as usize)
    }

    /// Unpacks what [`Packed::pack`] wrote; refuses a header claiming more
    /// than the block can hold and a block that does not unpack to exactly
    /// its header's length.
    pub fn unpack(packed: &[u8]) -> Result<Bytes, Corrupt> {
        let Some(block) = packed.get(4..) else {
            return Err(Corrupt("a packed request has no length".into()));
        };
        let len = Self::unpacked_len(packed);
        if len > block.len().saturating_mul(MAX_RATIO) {
            return Err(Corrupt(format!(
                "a packed request of {} bytes claims {len} unpacked",
                block.len()
            )));
        }
        let mut out = vec![0u8; len];
        match lz4_flex::block::decompress_into(block, &mut out) {
            Ok(n) if n == len => Ok(out.into()),
            Ok(n) => Err(Corrupt(format!(
                "a packed request unpacked to {n} bytes, not the {len} its header says"
            ))),
            Err(e) => Err(Corrupt(format!("a packed request does not unpack: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_bytes_round_trip(raw in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let p = Packed::pack(&raw);
            prop_assert_eq!(&Packed::unpack(p.as_bytes()).unwrap()[..], &raw[..]);
        }

        /// What was not packed here is refused or read, never a panic, and
        /// never more than its header allows.
        #[test]
        fn any_bytes_unpack_without_panic(junk in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(out) = Packed::unpack(&junk) {
                prop_assert_eq!(out.len(), Packed::unpacked_len(&junk));
                prop_assert!(out.len() <= junk.len().saturating_sub(4) * MAX_RATIO);
            }
        }
    }

    #[test]
    fn round_trips_and_shrinks_repetitive_requests() {
        let raw: Vec<u8> = (0..5000u32)
            .flat_map(|i| format!("user.email=user{:03}@example.com;", i % 50).into_bytes())
            .collect();
        let p = Packed::pack(&raw);
        assert!(
            p.as_bytes().len() * 10 < raw.len(),
            "{}",
            p.as_bytes().len()
        );
        assert_eq!(Packed::unpacked_len(p.as_bytes()), raw.len());
        assert_eq!(&Packed::unpack(p.as_bytes()).unwrap()[..], &raw[..]);
        // Beyond the per-thread buffer: packed on its own, read the same.
        let big: Vec<u8> = raw
            .iter()
            .copied()
            .cycle()
            .take(3 * SCRATCH_BYTES)
            .collect();
        let p = Packed::pack(&big);
        assert_eq!(&Packed::unpack(p.as_bytes()).unwrap()[..], &big[..]);
        // The buffer is reused: a smaller request after a larger one.
        let p = Packed::pack(&raw[..100]);
        assert_eq!(&Packed::unpack(p.as_bytes()).unwrap()[..], &raw[..100]);
        let empty = Packed::pack(&[]);
        assert_eq!(Packed::unpack(empty.as_bytes()).unwrap().len(), 0);
    }

    #[test]
    fn refuses_what_it_did_not_write() {
        let raw = vec![7u8; 100_000];
        let p = Packed::pack(&raw);
        let b = p.as_bytes();
        // A header claiming more than any block of this size unpacks to.
        let mut lying = b.to_vec();
        lying[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            Packed::unpack(&lying).unwrap_err().0,
            format!(
                "a packed request of {} bytes claims 4294967295 unpacked",
                b.len() - 4
            )
        );
        // A header claiming less than the block holds.
        let mut short = b.to_vec();
        short[..4].copy_from_slice(&10u32.to_le_bytes());
        assert!(Packed::unpack(&short).is_err());
        // A block cut short.
        assert!(Packed::unpack(&b[..b.len() - 3]).is_err());
        assert!(Packed::unpack(&b[..2]).is_err());
        // Garbage never panics.
        for n in 0..64u8 {
            let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37) ^ n).collect();
            let _ = Packed::unpack(&junk);
        }
    }
}
