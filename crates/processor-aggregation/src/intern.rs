//! Shared copies of repeated values (metric names, users, attribute sets,
//! resources), so that many series hold one allocation each.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::Arc;

/// A set of shared values; [`Interner::collect`] drops those no series holds.
pub(crate) struct Interner<T: ?Sized> {
    set: HashSet<Arc<T>, ahash::RandomState>,
}

impl<T: ?Sized> Default for Interner<T> {
    fn default() -> Self {
        Self {
            set: HashSet::default(),
        }
    }
}

impl<T: ?Sized + Eq + Hash> Interner<T>
where
    for<'a> Arc<T>: From<&'a T>,
{
    /// The shared copy of `v`, made on first use.
    pub fn get(&mut self, v: &T) -> Arc<T> {
        if let Some(a) = self.set.get(v) {
            return a.clone();
        }
        let a: Arc<T> = Arc::from(v);
        self.set.insert(a.clone());
        a
    }

    /// Forgets values held by nothing but this set.
    pub fn collect(&mut self) {
        self.set.retain(|a| Arc::strong_count(a) > 1);
    }
}

/// One attribute in its canonical encoding, shared by every series that
/// carries it; a thin pointer, so an attribute list costs 8 bytes per entry.
#[derive(Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct AttrBytes(pub Box<[u8]>);

/// A shared attribute, compared and hashed by pointer (values are interned,
/// so equal pointers mean equal bytes) and ordered by content.
#[derive(Clone, Debug)]
pub(crate) struct Attr(pub Arc<AttrBytes>);

impl PartialEq for Attr {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.0, &o.0)
    }
}

impl Eq for Attr {}

impl Hash for Attr {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        Arc::as_ptr(&self.0).hash(h);
    }
}

impl PartialOrd for Attr {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Attr {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0 .0.cmp(&o.0 .0)
    }
}

/// The lookup key of [`AttrInterner`]: hashes and compares as the bytes.
struct AttrKey(Arc<AttrBytes>);

impl PartialEq for AttrKey {
    fn eq(&self, o: &Self) -> bool {
        self.0 .0 == o.0 .0
    }
}

impl Eq for AttrKey {}

impl Hash for AttrKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.0 .0[..].hash(h);
    }
}

impl std::borrow::Borrow<[u8]> for AttrKey {
    fn borrow(&self) -> &[u8] {
        &self.0 .0
    }
}

/// Shared copies of single attributes, looked up by their bytes.
#[derive(Default)]
pub(crate) struct AttrInterner {
    set: HashSet<AttrKey, ahash::RandomState>,
}

impl AttrInterner {
    /// The shared copy of the attribute encoded as `bytes`.
    pub fn get(&mut self, bytes: &[u8]) -> Attr {
        if let Some(k) = self.set.get(bytes) {
            return Attr(k.0.clone());
        }
        let a = Arc::new(AttrBytes(bytes.into()));
        self.set.insert(AttrKey(a.clone()));
        Attr(a)
    }

    /// Forgets attributes held by nothing but this set.
    pub fn collect(&mut self) {
        self.set.retain(|k| Arc::strong_count(&k.0) > 1);
    }
}

/// An attribute list as its attributes' canonical encodings, in order:
/// how lists are hashed and compared, whether stored or being looked up.
/// Its hash is that of its attributes' bytes one after the other, taken
/// once (see [`ListInterner::hash`]).
pub(crate) trait Pieces {
    /// The hash of the list's bytes.
    fn hash_value(&self) -> u64;
    /// Attributes in the list.
    fn count(&self) -> usize;
    /// The canonical bytes of attribute `i`.
    fn piece(&self, i: usize) -> &[u8];
}

/// A list of interned attributes with its hash, as [`Pieces`].
struct Listed<'a>(u64, &'a [Attr]);

impl Pieces for Listed<'_> {
    fn hash_value(&self) -> u64 {
        self.0
    }
    fn count(&self) -> usize {
        self.1.len()
    }
    fn piece(&self, i: usize) -> &[u8] {
        &self.1[i].0 .0
    }
}

/// A list still in a scratch buffer: its attributes encoded one after the
/// other in `bytes`, each ending at an offset of `ends`.
pub(crate) struct Encoded<'a> {
    pub bytes: &'a [u8],
    pub ends: &'a [usize],
}

/// An [`Encoded`] list with its hash, as [`Pieces`].
struct Hashed<'a>(u64, Encoded<'a>);

impl Pieces for Hashed<'_> {
    fn hash_value(&self) -> u64 {
        self.0
    }
    fn count(&self) -> usize {
        self.1.ends.len()
    }
    fn piece(&self, i: usize) -> &[u8] {
        let ends = self.1.ends;
        let from = if i == 0 { 0 } else { ends[i - 1] };
        &self.1.bytes[from..ends[i]]
    }
}

impl Hash for dyn Pieces + '_ {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write_u64(self.hash_value());
    }
}

impl PartialEq for dyn Pieces + '_ {
    fn eq(&self, o: &Self) -> bool {
        self.hash_value() == o.hash_value()
            && self.count() == o.count()
            && (0..self.count()).all(|i| self.piece(i) == o.piece(i))
    }
}

impl Eq for dyn Pieces + '_ {}

/// A stored list and its hash, hashed and compared as [`Pieces`].
struct ListKey(u64, Arc<[Attr]>);

impl Pieces for ListKey {
    fn hash_value(&self) -> u64 {
        self.0
    }
    fn count(&self) -> usize {
        self.1.len()
    }
    fn piece(&self, i: usize) -> &[u8] {
        &self.1[i].0 .0
    }
}

impl Hash for ListKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        (self as &dyn Pieces).hash(h);
    }
}

impl PartialEq for ListKey {
    fn eq(&self, o: &Self) -> bool {
        (self as &dyn Pieces) == (o as &dyn Pieces)
    }
}

impl Eq for ListKey {}

impl<'a> std::borrow::Borrow<dyn Pieces + 'a> for ListKey {
    fn borrow(&self) -> &(dyn Pieces + 'a) {
        self
    }
}

/// Shared attribute lists, one allocation per distinct list, found by
/// their content: a point's list is looked up once, from its canonical
/// bytes ([`ListInterner::get_encoded`]), where interning each attribute
/// and then the list of them took a lookup per attribute and one more.
/// The bytes are hashed in one piece, and the hash is kept with the list.
#[derive(Default)]
pub(crate) struct ListInterner {
    set: HashSet<ListKey, ahash::RandomState>,
    /// Hashes the lists' bytes (the set then only mixes that hash).
    hasher: ahash::RandomState,
}

impl ListInterner {
    /// The shared list encoded in `list`; on a miss its attributes are
    /// interned in `attrs` (`scratch` is working space).
    pub fn get_encoded(
        &mut self,
        list: Encoded<'_>,
        attrs: &mut AttrInterner,
        scratch: &mut Vec<Attr>,
    ) -> Arc<[Attr]> {
        let list = Hashed(self.hash(list.bytes), list);
        if let Some(k) = self.set.get(&list as &dyn Pieces) {
            return k.1.clone();
        }
        scratch.clear();
        scratch.extend((0..list.count()).map(|i| attrs.get(list.piece(i))));
        self.insert(list.0, scratch)
    }

    /// The shared list equal to `list`.
    pub fn get(&mut self, list: &[Attr]) -> Arc<[Attr]> {
        let bytes: Vec<u8> = list.iter().flat_map(|a| a.0 .0.iter().copied()).collect();
        let hash = self.hash(&bytes);
        if let Some(k) = self.set.get(&Listed(hash, list) as &dyn Pieces) {
            return k.1.clone();
        }
        self.insert(hash, list)
    }

    /// The hash of a list whose attributes' bytes, one after the other,
    /// are `bytes`.
    fn hash(&self, bytes: &[u8]) -> u64 {
        self.hasher.hash_one(bytes)
    }

    fn insert(&mut self, hash: u64, list: &[Attr]) -> Arc<[Attr]> {
        let shared: Arc<[Attr]> = Arc::from(list);
        self.set.insert(ListKey(hash, shared.clone()));
        shared
    }

    /// Forgets lists held by nothing but this set.
    pub fn collect(&mut self) {
        self.set.retain(|k| Arc::strong_count(&k.1) > 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_collects() {
        let mut i: Interner<str> = Interner::default();
        let a = i.get("ana@example.com");
        let b = i.get("ana@example.com");
        assert!(Arc::ptr_eq(&a, &b));
        drop((a, b));
        i.get("bo@example.com");
        i.collect();
        assert!(i.set.is_empty());
    }

    #[test]
    fn lists_are_found_by_their_content_shared_and_collected() {
        let (mut lists, mut attrs) = (ListInterner::default(), AttrInterner::default());
        let mut scratch = vec![];
        let mut get = |bytes: &[u8], ends: &[usize]| {
            lists.get_encoded(Encoded { bytes, ends }, &mut attrs, &mut scratch)
        };
        let a = get(b"\x02m1\x02t1", &[3, 6]);
        assert_eq!(a.len(), 2);
        assert_eq!(&a[0].0 .0[..], b"\x02m1");
        // Found again by its bytes: the same allocation.
        let b = get(b"\x02m1\x02t1", &[3, 6]);
        assert!(Arc::ptr_eq(&a, &b));
        // The same bytes cut elsewhere are another list.
        let cut = get(b"\x02m1\x02t1", &[6]);
        assert!(!Arc::ptr_eq(&a, &cut));
        let c = get(b"\x02m1\x02t2", &[3, 6]);
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(Arc::ptr_eq(&a[0].0, &c[0].0), "attributes shared");
        let empty = get(b"", &[]);
        assert!(empty.is_empty());
        // Found by an equal list of attributes too (a snapshot's restore).
        let copy: Vec<Attr> = a.iter().cloned().collect();
        let again = lists.get(&copy);
        assert!(Arc::ptr_eq(&a, &again));
        drop((a, b, c, cut, empty, again, copy));
        lists.collect();
        attrs.collect();
        assert!(lists.set.is_empty());
        assert!(attrs.set.is_empty());
    }

    #[test]
    fn attributes_are_shared_by_bytes_and_collected() {
        let mut i = AttrInterner::default();
        let a = i.get(b"model=x");
        let b = i.get(b"model=x");
        assert_eq!(a, b);
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert_ne!(a, i.get(b"model=y"));
        drop((a, b));
        i.collect();
        assert!(i.set.is_empty());
    }
}
