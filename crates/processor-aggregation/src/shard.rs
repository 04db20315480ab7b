//! The engine in shards, by user: concurrent requests of different users
//! take different locks.
//!
//! Each shard is a whole [`Engine`] (its interners included: attributes
//! compare by pointer, so a series must be built where it is kept). A
//! [`Router`] sends every point to the shard of its user value, found by
//! the same rules the engine uses ([`Router::route`]), so one series, and
//! one cumulative stream (its identity holds the user), always land on one
//! shard. A request whose points all go to one shard (an AI tool's: one
//! user each) locks that shard only. A request spread over several (a
//! gateway's) goes through its shards one lock at a time while there is
//! room for all its points; near `max_series` it locks them all in
//! ascending order and is checked as a whole, so that it is refused whole.
//! Each shard walks only its resources and points ([`Part`]).
//!
//! `max_series` is for all shards together: each shard publishes its open
//! count after every change, and a request counts the others' with its
//! own. Requests on other shards at the same moment can each pass with
//! the room the other also counted, so the bound can be overshot by what
//! they open together (at most one request's series per shard).
//! `max_streams` is split evenly across the shards.
//!
//! With `storage` there is one log for every shard
//! ([`ShardedEngine::apply_op`]): an op is queued while the shards it
//! changes are locked (a request after its `max_series` check and before
//! it is applied), so the log's order is each shard's, and a replay
//! routes every request again by the same fixed hash
//! ([`ShardedEngine::replay_op`]: to the shards whose snapshot its record
//! follows, with no `max_series` check).

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use otelcol_core::consumer::{Batch, RequestContext};
use otelcol_core::pdata::proto::common::v1::KeyValue;
use otelcol_core::pdata::proto::metrics::v1::metric;
use otelcol_core::pdata::Metrics;

use crate::config::{AggregationConfig, Lookup, MissingKey};
use crate::durable::{Applied, Op, Request};
use crate::engine::{AddError, AddOutcome, Attribute, Engine, Form, Input, Part, Prepared};
use crate::snapshot::TakenSnapshot;
use crate::view::{DataKind, View};

/// Shards at most (a request's shards are a 64-bit mask).
pub const MAX_SHARDS: usize = 64;

/// Shards when `shards` is left at 0: one per core, up to 16.
pub fn auto_shards() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 16)
}

/// The shard of a user value: FNV-1a over its bytes, mixed. Fixed and
/// portable (not aHash, whose output depends on the CPU's features), so
/// the same user goes to the same shard on every machine and release.
pub(crate) fn shard_of(user: &str, shards: u8) -> u8 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in user.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // The finaliser of MurmurHash3, so that the low bits depend on every byte.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    (h % u64::from(shards.max(1))) as u8
}

/// Where a request's points go (see [`Router::route`]).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Route {
    /// Per point, in the order the engine walks them: its shard.
    pub points: Vec<u8>,
    /// Per resource: its points' shards (a mask) and its first point.
    pub resources: Vec<(u64, u32)>,
    /// Every shard the request has points for (a mask).
    pub touched: u64,
    /// Summary points (not aggregated; counted once, not per shard).
    pub summaries: u64,
}

impl Route {
    /// The one shard the request goes to, when it is one (a request with
    /// no points goes to shard 0).
    pub fn only(&self) -> Option<u8> {
        match self.touched.count_ones() {
            0 => Some(0),
            1 => Some(self.touched.trailing_zeros() as u8),
            _ => None,
        }
    }

    /// What `shard` takes of the request.
    pub fn part(&self, shard: u8) -> Part<'_> {
        Part {
            shard,
            points: &self.points,
            resources: &self.resources,
        }
    }
}

/// Finds each point's user as the engine does, and so its shard.
pub(crate) struct Router {
    keys: Vec<String>,
    lookups: Vec<Lookup>,
    /// With `missing_key: keep`: the user of points without one.
    keep: Option<String>,
    shards: u8,
}

impl Router {
    /// A router to `shards` shards for `config` (validated).
    pub fn new(
        config: &AggregationConfig,
        shards: u8,
    ) -> Result<Self, otelcol_core::config::ConfigError> {
        Ok(Self {
            keys: config.keys(),
            lookups: config.lookups()?,
            keep: (config.missing_key == MissingKey::Keep)
                .then(|| config.missing_key_value.clone()),
            shards: shards.max(1),
        })
    }

    /// The shard of every point of `input`, sent with `context`. A point's
    /// user is the engine's: the lookups in order; in the point, for each
    /// key in order, the first attribute with it (no later duplicate); in
    /// the resource, likewise; a header when not empty; else the
    /// `missing_key: keep` value. A point with none goes to shard 0, where
    /// it is counted as dropped.
    pub fn route(&self, input: Input<'_, '_>, context: &RequestContext) -> Route {
        let headers: Vec<Option<&str>> = self
            .lookups
            .iter()
            .map(|l| match l {
                Lookup::Header(h) => context.header(h).filter(|v| !v.is_empty()),
                _ => None,
            })
            .collect();
        let mut b = Builder {
            router: self,
            headers,
            last: String::new(),
            last_shard: None,
            route: Route::default(),
        };
        match input {
            Input::Prepared(Prepared(Form::View(v))) => b.view(v),
            Input::Prepared(Prepared(Form::Tree(t))) | Input::Tree(t) => b.tree(t),
        }
        b.route
    }

    /// The user of a point with `attrs` in a resource whose user is
    /// `in_resource`.
    fn user<'a, A: Attribute>(
        &'a self,
        attrs: &'a [A],
        in_resource: Option<&'a str>,
        headers: &[Option<&'a str>],
    ) -> Option<Cow<'a, str>> {
        let found = self.lookups.iter().zip(headers).find_map(|(l, h)| match l {
            Lookup::DataPoint => first_user(&self.keys, attrs),
            Lookup::Resource => in_resource.map(Cow::Borrowed),
            Lookup::Header(_) => h.map(Cow::Borrowed),
        });
        found.or_else(|| self.keep.as_deref().map(Cow::Borrowed))
    }
}

/// For each key in order, the first attribute with it; the first of those
/// that gives a user value.
fn first_user<'a, A: Attribute>(keys: &[String], attrs: &'a [A]) -> Option<Cow<'a, str>> {
    keys.iter().find_map(|k| {
        attrs
            .iter()
            .find(|a| a.key() == k)
            .and_then(|a| a.user_value())
    })
}

/// A [`Route`] being made.
struct Builder<'r, 'h> {
    router: &'r Router,
    headers: Vec<Option<&'h str>>,
    /// The last user routed and its shard (a request's points mostly share
    /// one user: no hash for them).
    last: String,
    last_shard: Option<u8>,
    route: Route,
}

impl Builder<'_, '_> {
    fn point<A: Attribute>(&mut self, attrs: &[A], in_resource: Option<&str>) -> u64 {
        let shard = match self.router.user(attrs, in_resource, &self.headers) {
            None => 0,
            Some(user) => match self.last_shard {
                Some(s) if self.last == *user => s,
                _ => {
                    let s = shard_of(&user, self.router.shards);
                    self.last.clear();
                    self.last.push_str(&user);
                    self.last_shard = Some(s);
                    s
                }
            },
        };
        self.route.points.push(shard);
        1u64 << shard
    }

    /// Starts a resource; returns its first point's index.
    fn first(&self) -> u32 {
        u32::try_from(self.route.points.len()).unwrap_or(u32::MAX)
    }

    fn end_resource(&mut self, first: u32, mask: u64) {
        self.route.resources.push((mask, first));
        self.route.touched |= mask;
    }

    fn tree(&mut self, t: &Metrics) {
        for rm in &t.resource_metrics {
            let resource: &[KeyValue] = rm.resource.as_ref().map_or(&[], |r| &r.attributes);
            let user = first_user(&self.router.keys, resource);
            let user = user.as_deref();
            let (first, mut mask) = (self.first(), 0);
            for m in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
                match &m.data {
                    Some(metric::Data::Sum(s)) => {
                        for p in &s.data_points {
                            mask |= self.point(&p.attributes, user);
                        }
                    }
                    Some(metric::Data::Gauge(g)) => {
                        for p in &g.data_points {
                            mask |= self.point(&p.attributes, user);
                        }
                    }
                    Some(metric::Data::Histogram(h)) => {
                        for p in &h.data_points {
                            mask |= self.point(&p.attributes, user);
                        }
                    }
                    Some(metric::Data::ExponentialHistogram(h)) => {
                        for p in &h.data_points {
                            mask |= self.point(&p.attributes, user);
                        }
                    }
                    Some(metric::Data::Summary(s)) => {
                        self.route.summaries += s.data_points.len() as u64;
                    }
                    None => {}
                }
            }
            self.end_resource(first, mask);
        }
    }

    fn view(&mut self, v: &View<'_>) {
        for r in &v.resources {
            let resource = &v.kvs[r.attrs.clone()];
            let user = first_user(&self.router.keys, resource);
            let user = user.as_deref();
            let (first, mut mask) = (self.first(), 0);
            for scope in &v.scopes[r.scopes.clone()] {
                for m in &v.metrics[scope.metrics.clone()] {
                    if m.kind == DataKind::None {
                        continue;
                    }
                    for p in &v.points[m.points.clone()] {
                        mask |= self.point(&v.kvs[p.attrs.clone()], user);
                    }
                }
            }
            self.end_resource(first, mask);
        }
    }
}

/// Adds `more` to `out` (the outcomes of one request's shards).
fn absorb(out: &mut AddOutcome, more: AddOutcome) {
    out.accepted += more.accepted;
    out.late += more.late;
    out.baseline += more.baseline;
    out.streams_evicted += more.streams_evicted;
    let (d, m) = (&mut out.dropped, more.dropped);
    d.missing_key += m.missing_key;
    d.summary += m.summary;
    d.invalid += m.invalid;
    d.stale += m.stale;
    for name in more.missing_key_metrics {
        if !out.missing_key_metrics.contains(&name) {
            out.missing_key_metrics.push(name);
        }
    }
    out.traces.extend(more.traces);
}

/// Calls `f` with a logged request as the engine reads it: `prepared` (the
/// same request, read before) when given, else its tree or its bytes read
/// in place; `Err` when its bytes do not read.
fn with_input<T>(
    request: &Request,
    prepared: Option<&Prepared<'_>>,
    f: impl FnOnce(Input<'_, '_>) -> T,
) -> Result<T, AddError> {
    Ok(match (prepared, request) {
        (Some(p), _) => f(Input::Prepared(p)),
        (None, Request::Decoded(m)) => f(Input::Tree(m)),
        (None, Request::Encoded(b)) => f(Input::Prepared(&Engine::prepare(b)?)),
    })
}

/// An [`Engine`] in shards by user, for concurrent callers: what the
/// processor runs without `storage` (see the module docs). Each method
/// takes `&self`; a request locks only the shards its points go to.
pub struct ShardedEngine {
    engines: Vec<Arc<Mutex<Engine>>>,
    /// Each shard's open series, published after every change under its lock.
    open: Vec<AtomicUsize>,
    router: Router,
    max_series: usize,
}

impl ShardedEngine {
    /// `count` shards (1 to [`MAX_SHARDS`]) for `config` (validated), in a
    /// collector that started at `collector_start` (Unix nanoseconds);
    /// `tracing`: see [`Engine::set_tracing`].
    pub fn new(
        config: &AggregationConfig,
        count: usize,
        collector_start: u64,
        tracing: bool,
    ) -> Result<Self, otelcol_core::config::ConfigError> {
        let count = count.clamp(1, MAX_SHARDS);
        let each = Self::shard_config(config, count);
        let engines = (0..count)
            .map(|_| {
                let mut e = Engine::new(each.clone(), collector_start)?;
                e.set_tracing(tracing);
                Ok(e)
            })
            .collect::<Result<Vec<_>, otelcol_core::config::ConfigError>>()?;
        Self::from_engines(config, engines)
    }

    /// A shard's configuration when `config` is split in `count` shards:
    /// `max_streams` split evenly.
    pub(crate) fn shard_config(config: &AggregationConfig, count: usize) -> AggregationConfig {
        AggregationConfig {
            max_streams: config.max_streams.div_ceil(count.max(1)),
            ..config.clone()
        }
    }

    /// The shards `engines` (1 to [`MAX_SHARDS`], each made with
    /// [`ShardedEngine::shard_config`]) of an engine for `config`.
    pub(crate) fn from_engines(
        config: &AggregationConfig,
        engines: Vec<Engine>,
    ) -> Result<Self, otelcol_core::config::ConfigError> {
        let count = engines.len().clamp(1, MAX_SHARDS);
        let e = Self {
            open: (0..count).map(|_| AtomicUsize::new(0)).collect(),
            router: Router::new(config, count as u8)?,
            max_series: config.max_series,
            engines: engines
                .into_iter()
                .take(count)
                .map(|e| Arc::new(Mutex::new(e)))
                .collect(),
        };
        for i in 0..e.len() {
            let shard = e.lock(i);
            e.publish(i, &shard);
        }
        Ok(e)
    }

    /// Turns [`Engine::set_tracing`] on or off in every shard.
    pub fn set_tracing(&self, on: bool) {
        for i in 0..self.len() {
            self.lock(i).set_tracing(on);
        }
    }

    /// Cumulative streams remembered by all shards.
    pub fn open_streams(&self) -> usize {
        (0..self.len()).map(|i| self.lock(i).open_streams()).sum()
    }

    /// The engines of shards no one else holds (a state just read back),
    /// to be [installed](ShardedEngine::install) in the running ones.
    pub(crate) fn into_engines(self) -> Vec<Engine> {
        self.engines
            .into_iter()
            .filter_map(|e| Arc::try_unwrap(e).ok())
            .map(|m| m.into_inner().unwrap_or_else(PoisonError::into_inner))
            .collect()
    }

    /// Every shard, locked in ascending order.
    pub(crate) fn lock_all(&self) -> Vec<MutexGuard<'_, Engine>> {
        (0..self.len()).map(|i| self.lock(i)).collect()
    }

    /// Puts `engines` in place of the shards `locked` holds (every one,
    /// from [`ShardedEngine::lock_all`]).
    pub(crate) fn install(&self, locked: &mut [MutexGuard<'_, Engine>], engines: Vec<Engine>) {
        for (i, (slot, engine)) in locked.iter_mut().zip(engines).enumerate() {
            **slot = engine;
            self.publish(i, slot);
        }
    }

    /// Applies `op` at `at` (an `Add` read from `prepared` when given) to
    /// the shards it touches, and hands it to `log` while they are locked,
    /// so that the log's order is each shard's order. A request is handed
    /// over once it is known to be taken (`max_series` checked) and
    /// **before** it is applied: the log writes it while it is applied, so
    /// its commit overlaps its apply. A request that is refused is not
    /// handed over (`None`). A close or a delivered piece
    /// (one shard's, never refused) is handed over after it is applied. An
    /// `Add` spread over several shards holds all of them.
    pub(crate) fn apply_op<R>(
        &self,
        mut op: Op,
        at: u64,
        prepared: Option<&Prepared<'_>>,
        log: impl FnOnce(Op) -> R,
    ) -> (Applied, Option<R>) {
        let context = match &op {
            Op::Add { token, headers, .. } => Op::context(token, headers),
            // One shard's: the others go on meanwhile.
            Op::Close { shard, .. } | Op::CloseAll { shard, .. } | Op::Done { shard, .. } => {
                let i = *shard as usize;
                if i >= self.len() {
                    // Not a shard of this state: nothing to do.
                    return (Applied::Done, Some(log(op)));
                }
                let mut e = self.lock(i);
                let applied = op.apply(&mut e, at);
                self.publish(i, &e);
                let logged = log(op);
                drop(e);
                return (applied, Some(logged));
            }
        };
        // The log writes the request's bytes (packed by the caller), not
        // the request: it stays here to be applied.
        let request = op
            .take_request()
            .unwrap_or(Request::Encoded(Default::default()));
        let mut waiting = Some((op, log));
        let mut logged = None;
        let mut hand_over = || {
            if let Some((op, log)) = waiting.take() {
                logged = Some(log(op));
            }
        };
        let added = with_input(&request, prepared, |input| {
            self.add_held(input, &context, at, Some(&mut hand_over))
        });
        let (outcome, held) = added.unwrap_or_else(|e| (Err(e), vec![]));
        let open_series = match &outcome {
            Ok((_, open)) => *open,
            Err(_) => self.open_series(),
        };
        drop(held);
        // Freed after the locks.
        drop(request);
        let applied = Applied::Added {
            outcome: outcome.map(|(o, _)| o),
            open_series,
        };
        // A refused request's op (and what `log` held) is dropped here.
        drop(waiting);
        (applied, logged)
    }

    /// Replays a logged `op` at `at` on the shards in `mask` (those whose
    /// snapshot the op's record follows). A request is applied with no
    /// `max_series` check (it was logged because it passed one) unless
    /// `checked` (a record of formats 1 to 3, which logged refused requests
    /// too; their snapshots cover every shard at one record, so `mask` is
    /// all of them).
    pub(crate) fn replay_op(&self, op: Op, at: u64, mask: u64, checked: bool) {
        let all = u64::MAX >> (64 - self.len());
        match &op {
            Op::Add { .. } if checked && mask & all == all => {
                self.apply_op(op, at, None, |_| ());
            }
            Op::Add {
                token,
                headers,
                request,
            } => {
                let context = Op::context(token, headers);
                // Bytes that do not read were refused when applied: nothing
                // to do.
                let _ = with_input(request, None, |input| {
                    self.apply_unchecked(input, &context, at, mask)
                });
            }
            Op::Close { shard, .. } | Op::CloseAll { shard, .. } | Op::Done { shard, .. } => {
                let i = *shard as usize;
                if i < self.len() && mask & (1u64 << i) != 0 {
                    let mut e = self.lock(i);
                    op.apply(&mut e, at);
                    self.publish(i, &e);
                }
            }
        }
    }

    /// Adds the parts of a request that go to the shards in `mask`, with no
    /// `max_series` check.
    fn apply_unchecked(&self, input: Input<'_, '_>, context: &RequestContext, now: u64, mask: u64) {
        let apply = |s: usize, part: Option<&Part<'_>>| {
            if mask & (1u64 << s) != 0 {
                let mut e = self.lock(s);
                e.apply_part(input, context, now, part);
                self.publish(s, &e);
            }
        };
        if self.len() == 1 {
            return apply(0, None);
        }
        let route = self.router.route(input, context);
        if let Some(s) = route.only() {
            return apply(usize::from(s), None);
        }
        for s in (0..self.len()).filter(|i| route.touched & (1u64 << i) != 0) {
            apply(s, Some(&route.part(s as u8)));
        }
    }

    /// Every shard's snapshot ([`Engine::snapshot`]), read under all their
    /// locks: one moment of the whole engine.
    pub(crate) fn snapshot(&self) -> Vec<Vec<u8>> {
        let all = self.lock_all();
        let taken: Vec<TakenSnapshot> = all.iter().map(|e| e.take_snapshot()).collect();
        drop(all);
        taken.into_iter().map(TakenSnapshot::into_bytes).collect()
    }

    /// Shard `shard`'s snapshot, read under its lock alone; `then` runs
    /// before it is released (the durable log queues its place there).
    pub(crate) fn take_snapshot_of<R>(
        &self,
        shard: usize,
        then: impl FnOnce() -> R,
    ) -> (TakenSnapshot, R) {
        let e = self.lock(shard);
        let taken = e.take_snapshot();
        let r = then();
        drop(e);
        (taken, r)
    }

    /// How many shards.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.engines.len()
    }

    /// [`Engine::add`] across the shards.
    pub fn add(
        &self,
        request: &Metrics,
        context: &RequestContext,
        now: u64,
    ) -> Result<AddOutcome, AddError> {
        self.add_input(Input::Tree(request), context, now)
            .map(|(o, _)| o)
    }

    /// [`Engine::add_encoded`] across the shards.
    pub fn add_encoded(
        &self,
        bytes: &[u8],
        context: &RequestContext,
        now: u64,
    ) -> Result<AddOutcome, AddError> {
        let prepared = Engine::prepare(bytes)?;
        self.add_input(Input::Prepared(&prepared), context, now)
            .map(|(o, _)| o)
    }

    /// [`Engine::take_closed`] of every shard, shard 0's batches first.
    pub fn take_closed(&self, now: u64) -> Vec<Batch<Metrics>> {
        self.each(|e| e.take_closed(now))
    }

    /// [`Engine::take_all`] of every shard, shard 0's batches first.
    pub fn take_all(&self) -> Vec<Batch<Metrics>> {
        self.each(Engine::take_all)
    }

    fn each(&self, mut f: impl FnMut(&mut Engine) -> Vec<Batch<Metrics>>) -> Vec<Batch<Metrics>> {
        let mut out = vec![];
        for i in 0..self.len() {
            let mut e = self.lock(i);
            out.extend(f(&mut e));
            self.publish(i, &e);
        }
        out
    }

    /// Shard `i`, locked.
    pub(crate) fn lock(&self, i: usize) -> MutexGuard<'_, Engine> {
        self.engines[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes shard `i`'s open series (call under its lock).
    pub(crate) fn publish(&self, i: usize, engine: &Engine) {
        self.open[i].store(engine.open_series(), Ordering::Relaxed);
    }

    /// Open series in all shards, as last published (see
    /// [`Engine::open_series`]).
    pub fn open_series(&self) -> usize {
        self.open.iter().map(|o| o.load(Ordering::Relaxed)).sum()
    }

    /// Open series published by the shards not in `mask`.
    fn elsewhere(&self, mask: u64) -> usize {
        self.open
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1u64 << i) == 0)
            .map(|(_, o)| o.load(Ordering::Relaxed))
            .sum()
    }

    /// Adds a request to the shards its points go to (memory only: with
    /// storage the log applies it, to the one shard). Returns its outcome
    /// and the open series after it.
    pub(crate) fn add_input(
        &self,
        input: Input<'_, '_>,
        context: &RequestContext,
        now: u64,
    ) -> Result<(AddOutcome, usize), AddError> {
        self.add_held(input, context, now, None).0
    }

    /// [`ShardedEngine::add_input`], returning the locks of the shards it
    /// changed still held. With `log` (a logged request), `log` is called
    /// once the request is known to be taken and before it is applied,
    /// with every shard it changes locked. Without, a request spread over
    /// several shards goes through them in turn while there is room for
    /// all its points (not a logged one: the log's order must be each
    /// shard's).
    #[allow(clippy::type_complexity)]
    fn add_held(
        &self,
        input: Input<'_, '_>,
        context: &RequestContext,
        now: u64,
        mut log: Option<&mut dyn FnMut()>,
    ) -> (
        Result<(AddOutcome, usize), AddError>,
        Vec<MutexGuard<'_, Engine>>,
    ) {
        let logged = log.is_some();
        let mut taken = || {
            if let Some(log) = log.as_mut() {
                log();
            }
        };
        if self.len() == 1 {
            let mut e = self.lock(0);
            let out = e.check_part(input, context, now, None, 0).map(|()| {
                taken();
                e.apply_part(input, context, now, None)
            });
            self.publish(0, &e);
            let open = e.open_series();
            return (out.map(|o| (o, open)), vec![e]);
        }
        let route = self.router.route(input, context);
        if let Some(s) = route.only() {
            let s = usize::from(s);
            let elsewhere = self.elsewhere(1u64 << s);
            let mut e = self.lock(s);
            let out = e
                .check_part(input, context, now, None, elsewhere)
                .map(|()| {
                    taken();
                    e.apply_part(input, context, now, None)
                });
            self.publish(s, &e);
            let open = elsewhere + e.open_series();
            return (out.map(|o| (o, open)), vec![e]);
        }
        let touched = || (0..self.len()).filter(|i| route.touched & (1u64 << i) != 0);
        let mut out = AddOutcome::default();
        out.dropped.summary = route.summaries;
        // Spread over several shards, with room for every point to open a
        // series: each shard in turn, one lock at a time (so that requests
        // spread alike go through the shards one behind the other).
        if !logged && route.points.len() <= self.max_series.saturating_sub(self.open_series()) {
            for s in touched() {
                let mut e = self.lock(s);
                absorb(
                    &mut out,
                    e.apply_part(input, context, now, Some(&route.part(s as u8))),
                );
                self.publish(s, &e);
            }
            return (Ok((out, self.open_series())), vec![]);
        }
        // Logged, or near the bound: all of them locked, in ascending
        // order, so that it is refused or applied whole.
        let mut locked: Vec<(u8, MutexGuard<'_, Engine>)> =
            touched().map(|i| (i as u8, self.lock(i))).collect();
        let elsewhere = self.elsewhere(route.touched);
        let used = elsewhere + locked.iter().map(|(_, e)| e.open_series()).sum::<usize>();
        let free = self.max_series.saturating_sub(used);
        if route.points.len() > free {
            let needed: usize = locked
                .iter_mut()
                .map(|(s, e)| e.series_needed(input, context, now, Some(&route.part(*s))))
                .sum();
            if needed > free {
                let refused = AddError::SeriesLimit {
                    needed,
                    free,
                    max: self.max_series,
                };
                return (Err(refused), locked.into_iter().map(|(_, e)| e).collect());
            }
        }
        taken();
        let mut open = elsewhere;
        for (s, e) in &mut locked {
            absorb(
                &mut out,
                e.apply_part(input, context, now, Some(&route.part(*s))),
            );
            self.publish(usize::from(*s), e);
            open += e.open_series();
        }
        (
            Ok((out, open)),
            locked.into_iter().map(|(_, e)| e).collect(),
        )
    }
}

#[cfg(test)]
mod tests;
