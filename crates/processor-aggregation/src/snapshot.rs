//! The engine's whole state as bytes, and back: what a snapshot of the
//! durable processor holds. Shared values (strings, resources, attributes,
//! attribute lists, groups) are written once each in tables and referred
//! to by index, so a series costs about 30 bytes plus its value.

use std::collections::HashMap;
use std::sync::Arc;

use crate::codec::{Corrupt, Reader, Writer};
use crate::config::AggregationConfig;
use crate::emission::Part;
use crate::engine::{Engine, Seeds, State};
use crate::exp::{ExpBuckets, ExpHist};
use crate::intern::{prefetch, Attr};
use crate::output::OutKind;
use crate::series::{Acc, Group, Series, SeriesKey};
use crate::value::{GaugeAcc, Hist, Last, Stream, StreamLast, StreamLasts};

const MAGIC: &[u8; 4] = b"AGGS";
/// The snapshot format this build writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;

const KINDS: [OutKind; 6] = [
    OutKind::MonotonicSum,
    OutKind::NonMonotonicSum,
    OutKind::LastSum,
    OutKind::Gauge,
    OutKind::Histogram,
    OutKind::ExpHistogram,
];

fn kind_code(k: OutKind) -> u8 {
    KINDS.iter().position(|x| *x == k).unwrap_or(0) as u8
}

/// How many series ahead [`Engine::take_snapshot`] prefetches.
const PREFETCH_AHEAD: usize = 16;

/// Index of a shared value by its address (a cheap hasher: the keys are
/// pointers of this process, not input).
type PtrIndex = HashMap<usize, u32, ahash::RandomState>;

/// Index tables built while writing: one entry per shared value.
#[derive(Default)]
struct Tables {
    strs: Vec<Arc<str>>,
    str_ix: PtrIndex,
    blobs: Vec<Arc<[u8]>>,
    blob_ix: PtrIndex,
    attrs: Vec<Attr>,
    attr_ix: PtrIndex,
    /// The lists as written (length, then attribute indexes), in order.
    lists: Writer,
    list_count: u32,
    list_ix: PtrIndex,
    groups: Vec<Arc<Group>>,
    group_ix: PtrIndex,
}

fn index<T: Clone>(v: &mut Vec<T>, ix: &mut PtrIndex, ptr: usize, item: &T) -> u32 {
    *ix.entry(ptr).or_insert_with(|| {
        v.push(item.clone());
        (v.len() - 1) as u32
    })
}

impl Tables {
    fn s(&mut self, a: &Arc<str>) -> u32 {
        index(
            &mut self.strs,
            &mut self.str_ix,
            Arc::as_ptr(a).cast::<u8>() as usize,
            a,
        )
    }
    fn group(&mut self, g: &Arc<Group>) -> u32 {
        let ptr = Arc::as_ptr(g) as usize;
        if let Some(i) = self.group_ix.get(&ptr) {
            return *i;
        }
        for s in [&g.name, &g.unit, &g.user_key, &g.description] {
            self.s(s);
        }
        if let Some(t) = &g.token {
            self.s(t);
        }
        let r = &g.resource;
        index(
            &mut self.blobs,
            &mut self.blob_ix,
            Arc::as_ptr(r).cast::<u8>() as usize,
            r,
        );
        index(&mut self.groups, &mut self.group_ix, ptr, g)
    }
    fn list(&mut self, l: &Arc<[Attr]>) -> u32 {
        let ptr = Arc::as_ptr(l).cast::<u8>() as usize;
        if let Some(i) = self.list_ix.get(&ptr) {
            return *i;
        }
        self.lists.len(l.len());
        for a in l.iter() {
            let p = Arc::as_ptr(&a.0) as usize;
            let ix = index(&mut self.attrs, &mut self.attr_ix, p, a);
            self.lists.u32(ix);
        }
        let i = self.list_count;
        self.list_count += 1;
        self.list_ix.insert(ptr, i);
        i
    }
    fn key(&mut self, w: &mut Writer, k: &SeriesKey) {
        let g = self.group(&k.group);
        w.u32(g);
        w.u64(k.window);
        let u = self.s(&k.user);
        w.u32(u);
        let l = self.list(&k.attrs);
        w.u32(l);
    }
}

fn write_hist(w: &mut Writer, h: &Hist) {
    w.u64(h.count);
    w.opt_f64(h.sum);
    w.opt_f64(h.min);
    w.opt_f64(h.max);
    w.len(h.bounds.len());
    h.bounds.iter().for_each(|b| w.f64(*b));
    w.len(h.buckets.len());
    h.buckets.iter().for_each(|b| w.u64(*b));
    w.u8(h.mixed_bounds as u8);
}

fn write_exp(w: &mut Writer, h: &ExpHist) {
    w.i32(h.scale);
    w.u64(h.zero_count);
    w.f64(h.zero_threshold);
    for side in [&h.positive, &h.negative] {
        w.i32(side.offset);
        w.len(side.counts.len());
        side.counts.iter().for_each(|c| w.u64(*c));
    }
    w.u64(h.count);
    w.opt_f64(h.sum);
    w.opt_f64(h.min);
    w.opt_f64(h.max);
}

fn write_acc(w: &mut Writer, a: &Acc) {
    match a {
        Acc::Sum(v) => {
            w.u8(0);
            w.f64(*v);
        }
        Acc::Gauge(g) => {
            w.u8(1);
            for v in [g.sum, g.min, g.max, g.last] {
                w.f64(v);
            }
            w.u64(g.count);
            w.u64(g.last_time);
        }
        Acc::Lasts(l) => {
            w.u8(2);
            w.len(l.0.len());
            for s in &l.0 {
                w.u128(s.stream);
                w.f64(s.value);
                w.u64(s.time);
            }
        }
        Acc::Hist(h) => {
            w.u8(3);
            write_hist(w, h);
        }
        Acc::Exp(h) => {
            w.u8(4);
            write_exp(w, h);
        }
    }
}

fn read_hist(r: &mut Reader<'_>) -> Result<Hist, Corrupt> {
    let count = r.u64()?;
    let (sum, min, max) = (r.opt_f64()?, r.opt_f64()?, r.opt_f64()?);
    let n = r.count(8)?;
    let bounds = (0..n).map(|_| r.f64()).collect::<Result<_, _>>()?;
    let n = r.count(8)?;
    let buckets = (0..n).map(|_| r.u64()).collect::<Result<_, _>>()?;
    Ok(Hist {
        count,
        sum,
        min,
        max,
        bounds,
        buckets,
        mixed_bounds: r.u8()? != 0,
    })
}

fn read_exp(r: &mut Reader<'_>) -> Result<ExpHist, Corrupt> {
    let scale = r.i32()?;
    let zero_count = r.u64()?;
    let zero_threshold = r.f64()?;
    let mut side = || -> Result<ExpBuckets, Corrupt> {
        let offset = r.i32()?;
        let n = r.count(8)?;
        let counts = (0..n).map(|_| r.u64()).collect::<Result<_, _>>()?;
        Ok(ExpBuckets { offset, counts })
    };
    let positive = side()?;
    let negative = side()?;
    Ok(ExpHist {
        scale,
        zero_count,
        zero_threshold,
        positive,
        negative,
        count: r.u64()?,
        sum: r.opt_f64()?,
        min: r.opt_f64()?,
        max: r.opt_f64()?,
    })
}

fn read_acc(r: &mut Reader<'_>) -> Result<Acc, Corrupt> {
    Ok(match r.u8()? {
        0 => Acc::Sum(r.f64()?),
        1 => {
            let (sum, min, max, last) = (r.f64()?, r.f64()?, r.f64()?, r.f64()?);
            Acc::Gauge(Box::new(GaugeAcc {
                sum,
                min,
                max,
                last,
                count: r.u64()?,
                last_time: r.u64()?,
            }))
        }
        2 => {
            let n = r.count(32)?;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(StreamLast {
                    stream: r.u128()?,
                    value: r.f64()?,
                    time: r.u64()?,
                });
            }
            Acc::Lasts(Box::new(StreamLasts(v)))
        }
        3 => Acc::Hist(Box::new(read_hist(r)?)),
        4 => Acc::Exp(Box::new(read_exp(r)?)),
        t => return Err(Corrupt(format!("unknown value tag {t}"))),
    })
}

/// A snapshot read from the engine ([`Engine::take_snapshot`]), holding
/// the shared values it refers to, not yet laid out as bytes.
pub struct TakenSnapshot {
    header: Writer,
    tables: Tables,
    body: Writer,
}

impl TakenSnapshot {
    /// The snapshot's bytes ([`Engine::restore`] reads them back): header,
    /// tables, body. Needs no access to the engine.
    pub fn into_bytes(self) -> Vec<u8> {
        let (mut w, t) = (self.header, self.tables);
        w.len(t.strs.len());
        t.strs.iter().for_each(|s| w.bytes(s.as_bytes()));
        w.len(t.blobs.len());
        t.blobs.iter().for_each(|b| w.bytes(b));
        w.len(t.attrs.len());
        t.attrs.iter().for_each(|a| w.bytes(&a.0 .0));
        w.len(t.list_count as usize);
        w.buf.extend_from_slice(&t.lists.buf);
        w.len(t.groups.len());
        for g in &t.groups {
            let ix = |s: &Arc<str>| t.str_ix[&(Arc::as_ptr(s).cast::<u8>() as usize)];
            w.u32(g.token.as_ref().map_or(0, |tk| ix(tk) + 1));
            w.u32(t.blob_ix[&(Arc::as_ptr(&g.resource).cast::<u8>() as usize)]);
            w.u32(ix(&g.name));
            w.u8(kind_code(g.kind));
            w.u32(ix(&g.unit));
            w.u32(ix(&g.user_key));
            w.u32(ix(&g.description));
        }
        w.buf.extend_from_slice(&self.body.buf);
        w.buf
    }
}

impl Engine {
    /// The whole state as bytes ([`Engine::restore`] reads them back).
    pub fn snapshot(&self) -> Vec<u8> {
        self.take_snapshot().into_bytes()
    }

    /// The whole state, read: the part of [`Engine::snapshot`] that needs
    /// the engine (a durable processor does it under the engine lock, and
    /// lays out the bytes after releasing it).
    pub fn take_snapshot(&self) -> TakenSnapshot {
        let st = &self.state;
        let mut t = Tables::default();
        // Room for the usual case (a list per series) without regrowing.
        t.list_ix.reserve(st.series.len().min(1 << 16));
        // The body first (it fills the tables), then header + tables + body.
        let mut body = Writer::default();
        body.buf.reserve(st.series.len() * 32);
        body.len(st.series.len());
        // The attribute lists are all over the heap: ask for the ones a few
        // series ahead while this one is written.
        let mut ahead = st.series.keys().skip(PREFETCH_AHEAD);
        for (k, s) in &st.series {
            if let Some(next) = ahead.next() {
                prefetch(Arc::as_ptr(&next.attrs).cast::<u8>());
            }
            t.key(&mut body, k);
            write_acc(&mut body, &s.acc);
        }
        body.len(st.kept.len());
        for (k, a) in &st.kept {
            t.key(&mut body, k);
            write_acc(&mut body, a);
        }
        let e = &st.emissions;
        body.len(e.open.len());
        for (id, parts) in &e.open {
            body.u64(*id);
            body.len(parts.len());
            for p in parts {
                match p {
                    None => body.u8(0),
                    Some(p) => {
                        body.u8(1);
                        body.u64(p.missing);
                        body.len(p.series.len());
                        for (k, s) in &p.series {
                            t.key(&mut body, k);
                            write_acc(&mut body, &s.acc);
                        }
                    }
                }
            }
        }
        let streams = &st.streams.map;
        body.len(streams.len());
        for (id, s) in streams {
            body.u128(*id);
            body.u64(s.start);
            body.u64(s.time);
            body.u64(s.seen);
            match &s.last {
                Last::Sum(v) => {
                    body.u8(0);
                    body.f64(*v);
                }
                Last::Hist(h) => {
                    body.u8(1);
                    write_hist(&mut body, h);
                }
                Last::Exp(h) => {
                    body.u8(2);
                    write_exp(&mut body, h);
                }
            }
        }

        let mut w = Writer::default();
        w.buf.extend_from_slice(MAGIC);
        w.u32(SNAPSHOT_VERSION);
        w.u64(st.streams.collector_start);
        w.u64(st.streams.evicted_floor);
        w.u64(st.emitted_through);
        w.u64(e.next);
        st.seeds.0.iter().for_each(|k| w.u64(*k));
        TakenSnapshot {
            header: w,
            tables: t,
            body,
        }
    }

    /// An engine for `config` holding the state of a [`Engine::snapshot`].
    pub fn restore(config: AggregationConfig, bytes: &[u8]) -> Result<Engine, RestoreError> {
        let mut r = Reader::new(bytes);
        if r.take(4).ok() != Some(&MAGIC[..]) {
            return Err(RestoreError::Corrupt(Corrupt("not a snapshot".into())));
        }
        let version = r.u32()?;
        if version != SNAPSHOT_VERSION {
            return Err(RestoreError::Version(version));
        }
        let collector_start = r.u64()?;
        let evicted_floor = r.u64()?;
        let emitted_through = r.u64()?;
        let next = r.u64()?;
        let mut seeds = [0u64; 12];
        for k in &mut seeds {
            *k = r.u64()?;
        }
        let mut e = Engine::with_seeds(config, collector_start, Seeds(seeds))
            .map_err(|e| RestoreError::Corrupt(Corrupt(e.to_string())))?;
        let st: &mut State = &mut e.state;
        st.streams.evicted_floor = evicted_floor;
        st.emitted_through = emitted_through;
        st.emissions.next = next;

        let n = r.count(4)?;
        let mut strs = Vec::with_capacity(n);
        for _ in 0..n {
            strs.push(st.strs.get(r.str()?));
        }
        let n = r.count(4)?;
        let mut blobs = Vec::with_capacity(n);
        for _ in 0..n {
            blobs.push(st.bytes.get(r.bytes()?));
        }
        let n = r.count(4)?;
        let mut attrs = Vec::with_capacity(n);
        for _ in 0..n {
            attrs.push(st.attrs.get(r.bytes()?));
        }
        let bad = |what: &str| RestoreError::Corrupt(Corrupt(format!("{what} out of range")));
        let n = r.count(4)?;
        let mut lists = Vec::with_capacity(n);
        for _ in 0..n {
            let m = r.count(4)?;
            let mut l = Vec::with_capacity(m);
            for _ in 0..m {
                l.push(
                    attrs
                        .get(r.u32()? as usize)
                        .ok_or_else(|| bad("attribute"))?
                        .clone(),
                );
            }
            lists.push(st.lists.get(&l));
        }
        let n = r.count(25)?;
        let mut groups = Vec::with_capacity(n);
        let s = |i: u32| strs.get(i as usize).cloned().ok_or_else(|| bad("string"));
        for _ in 0..n {
            let token = match r.u32()? {
                0 => None,
                i => Some(s(i - 1)?),
            };
            let resource = blobs
                .get(r.u32()? as usize)
                .ok_or_else(|| bad("resource"))?
                .clone();
            let name = s(r.u32()?)?;
            let kind = *KINDS.get(r.u8()? as usize).ok_or_else(|| bad("kind"))?;
            let g = Arc::new(Group {
                token,
                resource,
                name,
                kind,
                unit: s(r.u32()?)?,
                user_key: s(r.u32()?)?,
                description: s(r.u32()?)?,
            });
            st.groups.insert(g.clone());
            groups.push(g);
        }
        let key = |r: &mut Reader<'_>| -> Result<SeriesKey, RestoreError> {
            let group = groups
                .get(r.u32()? as usize)
                .ok_or_else(|| bad("group"))?
                .clone();
            let window = r.u64()?;
            let user = s(r.u32()?)?;
            let attrs = lists
                .get(r.u32()? as usize)
                .ok_or_else(|| bad("list"))?
                .clone();
            Ok(SeriesKey {
                group,
                window,
                user,
                attrs,
            })
        };
        let n = r.count(21)?;
        st.series.reserve(n);
        for _ in 0..n {
            let k = key(&mut r)?;
            st.series.insert(
                k,
                Series {
                    acc: read_acc(&mut r)?,
                },
            );
        }
        let n = r.count(21)?;
        for _ in 0..n {
            let k = key(&mut r)?;
            st.kept.insert(k, read_acc(&mut r)?);
        }
        let n = r.count(12)?;
        for _ in 0..n {
            let id = r.u64()?;
            let m = r.count(1)?;
            let mut parts = Vec::with_capacity(m);
            for _ in 0..m {
                if r.u8()? == 0 {
                    parts.push(None);
                    continue;
                }
                let missing = r.u64()?;
                let c = r.count(21)?;
                let mut series = Vec::with_capacity(c);
                for _ in 0..c {
                    let k = key(&mut r)?;
                    series.push((
                        k,
                        Series {
                            acc: read_acc(&mut r)?,
                        },
                    ));
                }
                st.emissions.held += series.len();
                parts.push(Some(Part { series, missing }));
            }
            st.emissions.open.insert(id, parts);
        }
        let n = r.count(41)?;
        st.streams.map.reserve(n);
        for _ in 0..n {
            let id = r.u128()?;
            let (start, time, seen) = (r.u64()?, r.u64()?, r.u64()?);
            let last = match r.u8()? {
                0 => Last::Sum(r.f64()?),
                1 => Last::Hist(read_hist(&mut r)?),
                2 => Last::Exp(read_exp(&mut r)?),
                t => return Err(bad(&format!("stream value tag {t}"))),
            };
            st.streams.map.insert(
                id,
                Stream {
                    start,
                    time,
                    last,
                    seen,
                },
            );
        }
        if !r.b.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(e)
    }
}

/// Why a snapshot could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Written by a build with another snapshot format.
    #[error("snapshot format {0}, this build reads format {SNAPSHOT_VERSION}")]
    Version(u32),
    /// Not what a snapshot holds.
    #[error("snapshot unreadable: {0}")]
    Corrupt(#[from] Corrupt),
}
