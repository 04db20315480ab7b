//! What the engine holds per output series: its key (interned parts,
//! compared by pointer) and its accumulated value.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use otelcol_core::consumer::Batch;
use otelcol_core::pdata::Metrics;

use crate::config::GaugePolicy;
use crate::intern::Attr;
use crate::output::{self, OutKind};
use crate::value::{ExpHist, GaugeAcc, Hist, StreamLasts};

/// The accumulated value of one series in one window. Large kinds are
/// boxed so that the common one (a sum) stays small.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Acc {
    Sum(f64),
    Gauge(Box<GaugeAcc>),
    Lasts(Box<StreamLasts>),
    Hist(Box<Hist>),
    Exp(Box<ExpHist>),
}

impl Acc {
    /// Adds `other` in; `false` (and `self` unchanged) when the result
    /// would overflow or not be finite: the point is then refused.
    pub fn merge(&mut self, other: &Acc) -> bool {
        match (self, other) {
            (Acc::Sum(a), Acc::Sum(b)) => {
                let s = *a + b;
                s.is_finite() && {
                    *a = s;
                    true
                }
            }
            (Acc::Gauge(a), Acc::Gauge(b)) => a.merge(b),
            (Acc::Lasts(a), Acc::Lasts(b)) => a.merge(b),
            (Acc::Hist(a), Acc::Hist(b)) => a.merge(b),
            (Acc::Exp(a), Acc::Exp(b)) => match a.merged(Some(b)) {
                Some(m) => {
                    **a = m;
                    true
                }
                None => false,
            },
            _ => false,
        }
    }

    pub fn traced_value(&self) -> f64 {
        match self {
            Acc::Sum(v) => *v,
            Acc::Gauge(g) => g.last,
            Acc::Lasts(l) => l.0.first().map_or(0.0, |s| s.value),
            Acc::Hist(h) => h.count as f64,
            Acc::Exp(h) => h.count as f64,
        }
    }
}

/// What the output series of one metric share: the caller's token, the
/// resource, the metric's name, kind and unit, the user key's name (and the
/// first description seen, which is not part of the identity). Interned
/// once per distinct combination, so a series key holds one pointer to it.
///
/// Equality and hashing use the interned pointers of the fields: the
/// interners keep one allocation per distinct value for as long as anything
/// holds it, so equal pointers mean equal values. Ordering (for output)
/// compares contents.
#[derive(Debug)]
pub(crate) struct Group {
    pub token: Option<Arc<str>>,
    pub resource: Arc<[u8]>,
    pub name: Arc<str>,
    pub kind: OutKind,
    pub unit: Arc<str>,
    pub user_key: Arc<str>,
    pub description: Arc<str>,
}

fn same<T: ?Sized>(a: &Arc<T>, b: &Arc<T>) -> bool {
    Arc::ptr_eq(a, b)
}

impl PartialEq for Group {
    fn eq(&self, o: &Self) -> bool {
        self.kind == o.kind
            && same(&self.name, &o.name)
            && same(&self.resource, &o.resource)
            && same(&self.unit, &o.unit)
            && same(&self.user_key, &o.user_key)
            && match (&self.token, &o.token) {
                (Some(a), Some(b)) => same(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}

impl Eq for Group {}

impl Hash for Group {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.kind.hash(h);
        Arc::as_ptr(&self.name).cast::<u8>().hash(h);
        Arc::as_ptr(&self.resource).cast::<u8>().hash(h);
        Arc::as_ptr(&self.unit).cast::<u8>().hash(h);
        Arc::as_ptr(&self.user_key).cast::<u8>().hash(h);
        self.token
            .as_ref()
            .map(|t| Arc::as_ptr(t).cast::<u8>())
            .hash(h);
    }
}

impl Group {
    fn order_key(&self) -> (Option<&str>, &[u8], &str, OutKind, &str, &str) {
        (
            self.token.as_deref(),
            &self.resource,
            &self.name,
            self.kind,
            &self.unit,
            &self.user_key,
        )
    }
}

impl PartialOrd for Group {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Group {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.order_key().cmp(&o.order_key())
    }
}

/// Identity of one output series in one window: 48 bytes, so that a
/// million open series stay small. The user and the attribute list (each
/// attribute in its canonical encoding, decoded only at emission; the list
/// sorted by key) are interned values; equality and hashing use pointers,
/// ordering compares contents.
#[derive(Clone, Debug)]
pub(crate) struct SeriesKey {
    pub group: Arc<Group>,
    pub window: u64,
    pub user: Arc<str>,
    pub attrs: Arc<[Attr]>,
}

/// A series' identity as the addresses of its interned parts: what a
/// [`SeriesKey`] is hashed and compared by, and what a [`SeriesRef`] looks
/// one up by without taking a reference count of each part.
pub(crate) trait SeriesIdentity {
    /// (group, window, user, attribute list), the interned parts by address.
    fn identity(&self) -> (*const Group, u64, *const u8, *const u8);
}

impl Hash for dyn SeriesIdentity + '_ {
    fn hash<H: Hasher>(&self, h: &mut H) {
        let (group, window, user, attrs) = self.identity();
        window.hash(h);
        user.hash(h);
        attrs.hash(h);
        group.hash(h);
    }
}

impl PartialEq for dyn SeriesIdentity + '_ {
    fn eq(&self, o: &Self) -> bool {
        self.identity() == o.identity()
    }
}

impl Eq for dyn SeriesIdentity + '_ {}

impl SeriesIdentity for SeriesKey {
    fn identity(&self) -> (*const Group, u64, *const u8, *const u8) {
        (
            Arc::as_ptr(&self.group),
            self.window,
            Arc::as_ptr(&self.user).cast(),
            Arc::as_ptr(&self.attrs).cast(),
        )
    }
}

impl<'a> std::borrow::Borrow<dyn SeriesIdentity + 'a> for SeriesKey {
    fn borrow(&self) -> &(dyn SeriesIdentity + 'a) {
        self
    }
}

impl PartialEq for SeriesKey {
    fn eq(&self, o: &Self) -> bool {
        self.identity() == o.identity()
    }
}

impl Eq for SeriesKey {}

impl Hash for SeriesKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        (self as &dyn SeriesIdentity).hash(h)
    }
}

/// A [`SeriesKey`] borrowed from where its parts are held while a point
/// is added: looking a series up by it takes no reference counts.
pub(crate) struct SeriesRef<'a> {
    pub group: &'a Arc<Group>,
    pub window: u64,
    pub user: &'a Arc<str>,
    pub attrs: &'a Arc<[Attr]>,
}

impl SeriesRef<'_> {
    /// The key to store a new series under.
    pub fn to_key(&self) -> SeriesKey {
        SeriesKey {
            group: self.group.clone(),
            window: self.window,
            user: self.user.clone(),
            attrs: self.attrs.clone(),
        }
    }

    /// As the borrowed form of a [`SeriesKey`], for map lookups.
    pub fn id(&self) -> &(dyn SeriesIdentity + '_) {
        self
    }
}

impl SeriesIdentity for SeriesRef<'_> {
    fn identity(&self) -> (*const Group, u64, *const u8, *const u8) {
        (
            Arc::as_ptr(self.group),
            self.window,
            Arc::as_ptr(self.user).cast(),
            Arc::as_ptr(self.attrs).cast(),
        )
    }
}

impl PartialOrd for SeriesKey {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for SeriesKey {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (&*self.group, self.window, &*self.user, &*self.attrs)
            .cmp(&(&*o.group, o.window, &*o.user, &*o.attrs))
    }
}

/// Series taken out of an [`Engine`](crate::Engine), to be turned into
/// batches without holding whatever guards the engine.
#[derive(Debug)]
pub struct Closed {
    pub(crate) taken: Vec<(SeriesKey, Series)>,
    pub(crate) interval: u64,
    pub(crate) gauge: GaugePolicy,
}

impl Closed {
    /// Whether nothing was taken.
    pub fn is_empty(&self) -> bool {
        self.taken.is_empty()
    }

    /// How many output points this holds.
    pub fn len(&self) -> usize {
        self.taken.len()
    }

    /// One batch per client token, one `ResourceMetrics` per resource.
    pub fn build(self) -> Vec<Batch<Metrics>> {
        output::build(self.taken, self.interval, self.gauge)
    }
}

/// One output series in one window.
#[derive(Clone, Debug)]
pub(crate) struct Series {
    pub acc: Acc,
}
