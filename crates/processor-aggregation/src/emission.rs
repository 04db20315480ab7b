//! Emissions in flight: the series of closed windows, taken out of the open
//! set in one step, kept in a fixed order and cut into pieces of at most
//! [`PIECE_SERIES`], each offered downstream until every branch of a
//! fan-out has taken it.
//!
//! Everything here is a pure function of what was closed: the same closing
//! gives the same pieces, so a replay after a crash rebuilds the very same
//! batches and the processor offers them again under the same idempotency
//! keys.

use std::collections::BTreeMap;

use crate::series::{Series, SeriesKey};

/// Series per piece of an emission: each piece is built and handed
/// downstream before the next, so an emission of a million series adds a
/// few MiB, not a copy of everything.
pub const PIECE_SERIES: usize = 4096;

/// A piece of an emission that some branch has not taken yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    /// The emission it belongs to (increasing, never reused).
    pub emission: u64,
    /// Its index in the emission.
    pub index: u32,
    /// The branches (bit per branch of the fan-out) still to take it.
    pub missing: u64,
}

/// One piece: its series in order, and the branches still to take it.
pub(crate) struct Part {
    pub series: Vec<(SeriesKey, Series)>,
    pub missing: u64,
}

/// Every emission not yet taken by every branch.
#[derive(Default)]
pub(crate) struct Emissions {
    /// By emission id, the pieces (a piece taken everywhere is `None`).
    pub open: BTreeMap<u64, Vec<Option<Part>>>,
    /// The id the next emission gets.
    pub next: u64,
    /// Series held in open pieces (they count against `max_series`).
    pub held: usize,
}

/// The mask of `targets` branches, all still to take a piece.
pub(crate) fn all_targets(targets: u32) -> u64 {
    match targets {
        0 => 0,
        64.. => u64::MAX,
        n => (1u64 << n) - 1,
    }
}

impl Emissions {
    /// Records an emission of `series` (sorted here) for `targets`
    /// branches, cut into pieces of `piece` series. Returns its id, or
    /// `None` when there was nothing to emit.
    pub fn push(
        &mut self,
        mut series: Vec<(SeriesKey, Series)>,
        targets: u32,
        piece: usize,
    ) -> Option<u64> {
        if series.is_empty() {
            return None;
        }
        series.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.held += series.len();
        let missing = all_targets(targets);
        // Cut from the back, giving the cut-off room back each time (a
        // shrinking realloc), so a closing of a million series needs one
        // copy of them at a time, not two.
        let piece = piece.max(1);
        let mut parts = Vec::with_capacity(series.len().div_ceil(piece));
        while !series.is_empty() {
            let start = (series.len() - 1) / piece * piece;
            let chunk = series.split_off(start);
            series.shrink_to_fit();
            parts.push(Some(Part {
                series: chunk,
                missing,
            }));
        }
        parts.reverse();
        let id = self.next.max(1);
        self.next = id + 1;
        self.open.insert(id, parts);
        Some(id)
    }

    /// Every piece some branch has not taken, oldest first.
    pub fn pieces(&self) -> Vec<Piece> {
        self.open
            .iter()
            .flat_map(|(&emission, parts)| {
                parts.iter().enumerate().filter_map(move |(i, p)| {
                    p.as_ref().map(|p| Piece {
                        emission,
                        index: i as u32,
                        missing: p.missing,
                    })
                })
            })
            .collect()
    }

    /// The series of one piece, if some branch still has to take it.
    pub fn series(&self, emission: u64, index: u32) -> Option<&[(SeriesKey, Series)]> {
        let part = self.open.get(&emission)?.get(index as usize)?.as_ref()?;
        Some(&part.series)
    }

    /// Branch `target` took the piece (or refused it for good): forgotten
    /// once every branch did.
    pub fn done(&mut self, emission: u64, index: u32, target: u32) {
        let Some(parts) = self.open.get_mut(&emission) else {
            return;
        };
        if let Some(slot) = parts.get_mut(index as usize) {
            if let Some(part) = slot {
                part.missing &= !(1u64 << target.min(63));
                if part.missing == 0 {
                    self.held -= part.series.len();
                    *slot = None;
                }
            }
        }
        if parts.iter().all(Option::is_none) {
            self.open.remove(&emission);
        }
    }
}
