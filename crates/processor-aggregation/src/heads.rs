//! What a metric's points share, remembered for the same metric in the
//! next requests: its name, unit and description interned, and the group
//! its last point went to. A request carries a few metrics over and over
//! (one per user in a bulk request, the same few in every request of a
//! fleet), so interning three strings and finding the group, per metric,
//! become a comparison of three strings.

use std::sync::Arc;

use crate::intern::{same_bytes, Interner};
use crate::series::Group;

/// Metrics remembered; the least recently seen is forgotten.
const REMEMBERED: usize = 8;

/// A metric's shared parts.
pub(crate) struct Head {
    /// Its name, interned.
    pub name: Arc<str>,
    /// Its unit, interned.
    pub unit: Arc<str>,
    /// Its description, interned.
    pub description: Arc<str>,
    /// The group the metric's last point went to (for another token,
    /// resource, kind or user key, the group is looked up again).
    pub group: Option<Arc<Group>>,
}

/// The metrics last seen, most recent first.
#[derive(Default)]
pub(crate) struct Heads {
    recent: Vec<Head>,
}

impl Heads {
    /// The head of the metric named `name` with `unit` and `description`,
    /// made the most recent: remembered, or interned in `strs`.
    pub fn get(
        &mut self,
        strs: &mut Interner<str>,
        name: &str,
        unit: &str,
        description: &str,
    ) -> &mut Head {
        let found = self.recent.iter().position(|h| {
            same_bytes(h.name.as_bytes(), name.as_bytes())
                && same_bytes(h.unit.as_bytes(), unit.as_bytes())
                && same_bytes(h.description.as_bytes(), description.as_bytes())
        });
        match found {
            Some(i) => self.recent[..=i].rotate_right(1),
            None => {
                let head = Head {
                    name: strs.get(name),
                    unit: strs.get(unit),
                    description: strs.get(description),
                    group: None,
                };
                if self.recent.len() == REMEMBERED {
                    self.recent.pop();
                }
                self.recent.insert(0, head);
            }
        }
        &mut self.recent[0]
    }

    /// The head [`Heads::get`] gave last.
    pub fn current(&mut self) -> Option<&mut Head> {
        self.recent.first_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_remembered_by_all_three_strings() {
        let (mut heads, mut strs) = (Heads::default(), Interner::<str>::default());
        let a = heads.get(&mut strs, "tokens", "1", "d").name.clone();
        assert!(Arc::ptr_eq(&a, &strs.get("tokens")));
        heads.get(&mut strs, "tokens", "1", "d").group = None;
        // One string different: another head.
        for (n, u, d) in [
            ("tokens", "2", "d"),
            ("tokens", "1", ""),
            ("cost", "1", "d"),
        ] {
            heads.get(&mut strs, n, u, d);
        }
        assert_eq!(heads.recent.len(), 4);
        assert_eq!(&*heads.current().unwrap().name, "cost");
        // Found again, moved to the front, not added.
        let again = heads.get(&mut strs, "tokens", "1", "d").name.clone();
        assert!(Arc::ptr_eq(&a, &again));
        assert_eq!(heads.recent.len(), 4);
        for i in 0..REMEMBERED {
            heads.get(&mut strs, &format!("m{i}"), "", "");
        }
        assert_eq!(heads.recent.len(), REMEMBERED);
        assert!(heads.recent.iter().all(|h| &*h.name != "tokens"));
    }
}
