//! What a point's attribute keys decide, remembered for the next point.
//!
//! Which attributes a series keeps, their order by key and where the user
//! key is depend on the keys alone, and the points of a request nearly
//! always carry the same keys in the same order. So the filter, the sort
//! and the search run once per key layout, and every other point only
//! checks that its keys are the layout's.

use crate::engine::Attribute;

/// The key layout of the last point seen and what it decides.
#[derive(Default)]
pub(crate) struct Layout {
    /// Whether the fields below describe a layout (none before the first point).
    known: bool,
    /// The layout's keys, one after another.
    keys: Vec<u8>,
    /// Where each key ends in `keys`.
    ends: Vec<usize>,
    /// The attributes a series keeps, by index, sorted by key (stable:
    /// attributes with one key stay in the point's order).
    pub kept: Vec<usize>,
    /// Every attribute, by index, sorted by key (stable): a cumulative
    /// stream's identity.
    pub all: Vec<usize>,
    /// For each configured user key, in order, the first attribute with
    /// that key.
    pub user_at: Vec<Option<usize>>,
}

impl Layout {
    /// Makes the layout that of `attrs`: kept as it is when their keys are
    /// the layout's, else worked out again, keeping the attributes `keeps`
    /// accepts (by key) and finding each of `user_keys`.
    pub fn update<A: Attribute>(
        &mut self,
        attrs: &[A],
        user_keys: &[String],
        keeps: impl Fn(&str) -> bool,
    ) {
        if self.known && self.is_of(attrs) {
            return;
        }
        self.keys.clear();
        self.ends.clear();
        for a in attrs {
            self.keys.extend_from_slice(a.key().as_bytes());
            self.ends.push(self.keys.len());
        }
        self.all.clear();
        self.all.extend(0..attrs.len());
        self.all
            .sort_by(|&a, &b| attrs[a].key().cmp(attrs[b].key()));
        self.kept.clear();
        let kept = self.all.iter().filter(|&&i| keeps(attrs[i].key()));
        self.kept.extend(kept);
        self.user_at.clear();
        self.user_at.extend(
            user_keys
                .iter()
                .map(|k| attrs.iter().position(|a| a.key() == k)),
        );
        self.known = true;
    }

    /// Whether `attrs` carry exactly the layout's keys, in its order.
    fn is_of<A: Attribute>(&self, attrs: &[A]) -> bool {
        attrs.len() == self.ends.len()
            && attrs.iter().enumerate().all(|(i, a)| {
                let from = if i == 0 { 0 } else { self.ends[i - 1] };
                a.key().as_bytes() == &self.keys[from..self.ends[i]]
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{KvRef, ValueRef};

    fn attrs<'a>(keys: &[&'a str]) -> Vec<KvRef<'a>> {
        keys.iter()
            .map(|&key| KvRef {
                key,
                value: ValueRef::Bool(true),
            })
            .collect()
    }

    fn update(l: &mut Layout, keys: &[&str]) {
        let user_keys = ["user.email".to_string(), "user.id".to_string()];
        l.update(&attrs(keys), &user_keys, |k| {
            !user_keys.iter().any(|u| u == k) && k != "session.id"
        });
    }

    #[test]
    fn a_layout_sorts_filters_and_finds_the_user_keys() {
        let mut l = Layout::default();
        update(
            &mut l,
            &["type", "user.email", "model", "session.id", "model"],
        );
        assert_eq!(l.all, [2, 4, 3, 0, 1]);
        assert_eq!(l.kept, [2, 4, 0]);
        assert_eq!(l.user_at, [Some(1), None]);
    }

    #[test]
    fn a_layout_is_worked_out_again_for_other_keys_only() {
        let mut l = Layout::default();
        update(&mut l, &[]);
        assert!(l.kept.is_empty() && l.user_at == [None, None]);
        update(&mut l, &["b", "a"]);
        assert_eq!(l.kept, [1, 0]);
        // The same keys: the layout stands (checked by poisoning it).
        l.kept = vec![9];
        update(&mut l, &["b", "a"]);
        assert_eq!(l.kept, [9]);
        // Keys cut differently, reordered, one more, one fewer: worked out.
        for (keys, kept) in [
            (&["ba"][..], &[0][..]),
            (&["b", "a"], &[1, 0]),
            (&["a", "b"], &[0, 1]),
            (&["a", "b", "user.id"], &[0, 1]),
            (&["a"], &[0]),
        ] {
            update(&mut l, keys);
            assert_eq!(l.kept, kept, "{keys:?}");
        }
        assert_eq!(l.user_at, [None, None]);
        update(&mut l, &["user.id", "user.email", "user.id"]);
        assert_eq!(l.user_at, [Some(1), Some(0)]);
        assert!(l.kept.is_empty());
    }
}
