//! What a point's attribute keys decide, remembered for the next points.
//!
//! Which attributes a series keeps, their order by key and where the user
//! key is depend on the keys alone, and a request's points carry a few key
//! layouts over and over (one per metric, say). So the filter, the sort
//! and the search run once per layout, and every other point only checks
//! that its keys are those of a layout it remembers.

/// Layouts remembered; the least recently used is worked out again.
const REMEMBERED: usize = 8;

use crate::engine::Attribute;
use crate::intern::same_bytes;

/// The key layouts of the last points seen, the current point's first.
#[derive(Default)]
pub(crate) struct Layouts {
    recent: Vec<Layout>,
}

impl Layouts {
    /// The layout of `attrs`: a remembered one when their keys are its
    /// keys, else worked out (see [`Layout::work_out`]) in place of the
    /// least recently used.
    pub fn of<A: Attribute>(
        &mut self,
        attrs: &[A],
        user_keys: &[String],
        keeps: impl Fn(&str) -> bool,
    ) -> &Layout {
        match self.recent.iter().position(|l| l.is_of(attrs)) {
            Some(i) => self.recent[..=i].rotate_right(1),
            None => {
                if self.recent.len() < REMEMBERED {
                    self.recent.push(Layout::default());
                }
                self.recent.rotate_right(1);
                self.recent[0].work_out(attrs, user_keys, keeps);
            }
        }
        &self.recent[0]
    }

    /// The layout [`Layouts::of`] gave last.
    pub fn current(&self) -> &Layout {
        const NONE: &Layout = &Layout {
            keys: Vec::new(),
            ends: Vec::new(),
            kept: Vec::new(),
            all: Vec::new(),
            user_at: Vec::new(),
        };
        self.recent.first().unwrap_or(NONE)
    }
}

/// One key layout and what it decides.
#[derive(Default)]
pub(crate) struct Layout {
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
    /// Makes this the layout of `attrs`, keeping the attributes `keeps`
    /// accepts (by key) and finding each of `user_keys`.
    fn work_out<A: Attribute>(
        &mut self,
        attrs: &[A],
        user_keys: &[String],
        keeps: impl Fn(&str) -> bool,
    ) {
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
    }

    /// Whether `attrs` carry exactly the layout's keys, in its order.
    fn is_of<A: Attribute>(&self, attrs: &[A]) -> bool {
        attrs.len() == self.ends.len()
            && attrs.iter().enumerate().all(|(i, a)| {
                let from = if i == 0 { 0 } else { self.ends[i - 1] };
                same_bytes(a.key().as_bytes(), &self.keys[from..self.ends[i]])
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{KvRef, ValueRef};

    fn of<'l>(l: &'l mut Layouts, keys: &[&str]) -> &'l Layout {
        let attrs: Vec<KvRef<'_>> = keys
            .iter()
            .map(|&key| KvRef {
                key,
                value: ValueRef::Bool(true),
            })
            .collect();
        let user_keys = ["user.email".to_string(), "user.id".to_string()];
        l.of(&attrs, &user_keys, |k| {
            !user_keys.iter().any(|u| u == k) && k != "session.id"
        })
    }

    #[test]
    fn a_layout_sorts_filters_and_finds_the_user_keys() {
        let mut l = Layouts::default();
        assert!(l.current().user_at.is_empty());
        let got = of(
            &mut l,
            &["type", "user.email", "model", "session.id", "model"],
        );
        assert_eq!(got.all, [2, 4, 3, 0, 1]);
        assert_eq!(got.kept, [2, 4, 0]);
        assert_eq!(got.user_at, [Some(1), None]);
        let got = of(&mut l, &["user.id", "user.email", "user.id"]);
        assert_eq!(got.user_at, [Some(1), Some(0)]);
        assert!(got.kept.is_empty());
        assert_eq!(l.current().all, [1, 0, 2]);
    }

    #[test]
    fn layouts_are_remembered_and_worked_out_for_other_keys_only() {
        let mut l = Layouts::default();
        let got = of(&mut l, &[]);
        assert!(got.kept.is_empty() && got.user_at == [None, None]);
        assert_eq!(of(&mut l, &["b", "a"]).kept, [1, 0]);
        // Remembered: shown by poisoning what it decided.
        l.recent[0].kept = vec![9];
        assert_eq!(of(&mut l, &["b", "a"]).kept, [9]);
        // Keys cut differently, reordered, one more, one fewer: other
        // layouts, worked out.
        for (keys, kept) in [
            (&["ba"][..], &[0][..]),
            (&["a", "b"], &[0, 1]),
            (&["a", "b", "user.id"], &[0, 1]),
            (&["a"], &[0]),
        ] {
            assert_eq!(of(&mut l, keys).kept, kept, "{keys:?}");
        }
        // Still remembered after other layouts came between.
        assert_eq!(of(&mut l, &["b", "a"]).kept, [9]);
        // REMEMBERED other layouts later it is forgotten and worked out.
        for n in 0..REMEMBERED {
            let keys: Vec<String> = (0..=n).map(|i| format!("k{i}")).collect();
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            assert_eq!(of(&mut l, &keys).kept.len(), n + 1);
        }
        assert_eq!(l.recent.len(), REMEMBERED);
        assert_eq!(of(&mut l, &["b", "a"]).kept, [1, 0]);
    }
}
