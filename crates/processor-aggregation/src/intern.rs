//! Shared copies of repeated values (metric names, users, attribute sets,
//! resources), so that many series hold one allocation each.

use std::collections::{HashMap, HashSet};
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

/// Shared attribute lists looked up by their canonical bytes (each
/// attribute's encoding, one after the other): one lookup per point where
/// interning each attribute, then the list, took one per attribute and
/// one more. It keeps no bytes of its own: an entry is keyed by a hash of
/// the bytes and checked against its list's attributes; the list itself
/// comes from the list [`Interner`], so equal lists stay one allocation.
#[derive(Default)]
pub(crate) struct ListsByBytes {
    hasher: ahash::RandomState,
    map: HashMap<u64, Arc<[Attr]>, ahash::RandomState>,
}

impl ListsByBytes {
    /// The shared list of the attributes encoded in `bytes`, each ending
    /// at an offset of `ends`; on a miss its attributes are interned in
    /// `attrs` and the list in `lists` (`list` is scratch space).
    pub fn get(
        &mut self,
        bytes: &[u8],
        ends: &[usize],
        attrs: &mut AttrInterner,
        lists: &mut Interner<[Attr]>,
        list: &mut Vec<Attr>,
    ) -> Arc<[Attr]> {
        let hash = self.hasher.hash_one(bytes);
        if let Some(found) = self.map.get(&hash) {
            if encodes(found, bytes) {
                return found.clone();
            }
        }
        list.clear();
        let mut from = 0;
        for &end in ends {
            list.push(attrs.get(&bytes[from..end]));
            from = end;
        }
        let shared = lists.get(list);
        // A colliding entry is replaced; its list stays in `lists`.
        self.map.insert(hash, shared.clone());
        shared
    }

    /// Forgets lists held by nothing but this map and the list interner
    /// (call before [`Interner::collect`] on that interner).
    pub fn collect(&mut self) {
        self.map.retain(|_, l| Arc::strong_count(l) > 2);
    }
}

/// Whether `list`'s attributes, encoded one after the other, are `bytes`.
fn encodes(list: &[Attr], mut bytes: &[u8]) -> bool {
    for a in list {
        match bytes.strip_prefix(&a.0 .0[..]) {
            Some(rest) => bytes = rest,
            None => return false,
        }
    }
    bytes.is_empty()
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
    fn lists_are_found_by_their_bytes_shared_and_collected() {
        let (mut by_bytes, mut attrs, mut lists) = (
            ListsByBytes::default(),
            AttrInterner::default(),
            Interner::<[Attr]>::default(),
        );
        let mut scratch = vec![];
        let mut get = |bytes: &[u8], ends: &[usize]| {
            by_bytes.get(bytes, ends, &mut attrs, &mut lists, &mut scratch)
        };
        let a = get(b"\x02m1\x02t1", &[3, 6]);
        assert_eq!(a.len(), 2);
        assert_eq!(&a[0].0 .0[..], b"\x02m1");
        // Found again by bytes: the same allocation.
        let b = get(b"\x02m1\x02t1", &[3, 6]);
        assert!(Arc::ptr_eq(&a, &b));
        // Same bytes cut elsewhere is another list (never the case for
        // length-delimited attributes, but the check is on the pieces).
        let c = get(b"\x02m1\x02t2", &[3, 6]);
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(Arc::ptr_eq(&a[0].0, &c[0].0), "attributes shared");
        let empty = get(b"", &[]);
        assert!(empty.is_empty());
        assert!(encodes(&a, b"\x02m1\x02t1"));
        assert!(!encodes(&a, b"\x02m1\x02t1\x00"));
        assert!(!encodes(&a, b"\x02m1"));
        drop((a, b, c, empty));
        by_bytes.collect();
        lists.collect();
        attrs.collect();
        assert!(by_bytes.map.is_empty());
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
