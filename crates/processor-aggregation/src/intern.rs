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
}
