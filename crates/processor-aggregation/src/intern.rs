//! Shared copies of repeated values (metric names, users, attribute sets,
//! resources), so that many series hold one allocation each.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::Arc;

/// Asks the CPU to bring the cache line at `p` in (a hint: nothing is read).
#[inline(always)]
pub(crate) fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it never faults, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Whether `a` and `b` hold the same bytes. For the short strings the
/// engine compares per point and per metric (keys, names, units), a loop
/// the compiler vectorises in place, where `==` on slices calls `memcmp`.
#[inline]
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

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
        // One value at one address: no need to read it.
        if Arc::ptr_eq(&self.0, &o.0) {
            return std::cmp::Ordering::Equal;
        }
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

/// A list still in a scratch buffer: its attributes encoded one after the
/// other in `bytes`, each ending at an offset of `ends`.
pub(crate) struct Encoded<'a> {
    pub bytes: &'a [u8],
    pub ends: &'a [usize],
}

impl Encoded<'_> {
    fn count(&self) -> usize {
        self.ends.len()
    }

    fn piece(&self, i: usize) -> &[u8] {
        let from = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[from..self.ends[i]]
    }

    /// Whether `list` holds these attributes.
    fn is(&self, list: &[Attr]) -> bool {
        list.len() == self.count()
            && list
                .iter()
                .enumerate()
                .all(|(i, a)| *a.0 .0 == *self.piece(i))
    }
}

/// A stored list and the hash of its bytes.
struct ListKey(u64, Arc<[Attr]>);

/// Shared attribute lists, one allocation per distinct list, found by
/// their content: a point's list is looked up once, from its canonical
/// bytes ([`ListInterner::get_encoded`]), where interning each attribute
/// and then the list of them took a lookup per attribute and one more.
/// The bytes are hashed in one piece, and the hash is kept with the list.
#[derive(Default)]
pub(crate) struct ListInterner {
    table: hashbrown::HashTable<ListKey>,
    /// Hashes the lists' bytes, one after the other.
    hasher: ahash::RandomState,
}

impl ListInterner {
    /// The shared list encoded in `list`, borrowed from the interner; on
    /// a miss its attributes are interned in `attrs` (`scratch` is working
    /// space).
    pub fn get_encoded(
        &mut self,
        list: Encoded<'_>,
        attrs: &mut AttrInterner,
        scratch: &mut Vec<Attr>,
    ) -> &Arc<[Attr]> {
        let hash = self.hasher.hash_one(list.bytes);
        let entry = self
            .table
            .entry(hash, |k| k.0 == hash && list.is(&k.1), |k| k.0);
        let key = match entry {
            hashbrown::hash_table::Entry::Occupied(o) => o.into_mut(),
            hashbrown::hash_table::Entry::Vacant(v) => {
                scratch.clear();
                scratch.extend((0..list.count()).map(|i| attrs.get(list.piece(i))));
                v.insert(ListKey(hash, Arc::from(&scratch[..]))).into_mut()
            }
        };
        &key.1
    }

    /// The shared list equal to `list` (a snapshot's restore).
    pub fn get(&mut self, list: &[Attr]) -> Arc<[Attr]> {
        let bytes: Vec<u8> = list.iter().flat_map(|a| a.0 .0.iter().copied()).collect();
        let hash = self.hasher.hash_one(&bytes[..]);
        let same = |k: &ListKey| {
            k.0 == hash
                && k.1.len() == list.len()
                && k.1.iter().zip(list).all(|(a, b)| a.0 .0 == b.0 .0)
        };
        match self.table.entry(hash, same, |k| k.0) {
            hashbrown::hash_table::Entry::Occupied(o) => o.get().1.clone(),
            hashbrown::hash_table::Entry::Vacant(v) => {
                let shared: Arc<[Attr]> = Arc::from(list);
                v.insert(ListKey(hash, shared.clone()));
                shared
            }
        }
    }

    /// Forgets lists held by nothing but this set.
    pub fn collect(&mut self) {
        self.table.retain(|k| Arc::strong_count(&k.1) > 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_is_slice_equality() {
        let cases: [&[u8]; 6] = [b"", b"a", b"b", b"ab", b"user.email", b"user.emaik"];
        for a in cases {
            for b in cases {
                assert_eq!(same_bytes(a, b), a == b, "{a:?} {b:?}");
            }
        }
        let long: Vec<u8> = (0..=255).collect();
        let mut other = long.clone();
        assert!(same_bytes(&long, &other));
        other[200] ^= 0x80;
        assert!(!same_bytes(&long, &other));
    }

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
            lists
                .get_encoded(Encoded { bytes, ends }, &mut attrs, &mut scratch)
                .clone()
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
        assert!(lists.table.is_empty());
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
