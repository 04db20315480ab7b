//! The consistent-hash ring: each backend owns [`POINTS_PER_BACKEND`]
//! points on a 64-bit circle, a key goes to the owner of the first point
//! at or after its hash. Adding or removing one backend moves only the
//! keys of the arcs it gains or loses (about 1/n of them); every other key
//! keeps its backend. The hash is FNV-1a with a final mix, fixed here so
//! that every gateway of a fleet, whatever its build, routes alike.

/// Points each backend owns on the circle.
pub const POINTS_PER_BACKEND: usize = 150;

/// A stable 64-bit hash of `bytes`.
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64's finalizer: spreads FNV's weak low bits.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Backends placed on the circle.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ring {
    points: Vec<(u64, usize)>,
    backends: Vec<String>,
}

impl Ring {
    /// A ring of `backends` (sorted and de-duplicated: the order they are
    /// given in does not matter).
    pub fn new(backends: &[String]) -> Self {
        let mut backends = backends.to_vec();
        backends.sort();
        backends.dedup();
        let mut points = Vec::with_capacity(backends.len() * POINTS_PER_BACKEND);
        for (i, b) in backends.iter().enumerate() {
            for p in 0..POINTS_PER_BACKEND {
                points.push((hash(format!("{b}#{p}").as_bytes()), i));
            }
        }
        points.sort_unstable();
        Self { points, backends }
    }

    /// The backends, sorted.
    pub fn backends(&self) -> &[String] {
        &self.backends
    }

    /// The backend of `key`; `None` when the ring is empty.
    pub fn pick(&self, key: &[u8]) -> Option<&str> {
        if self.points.is_empty() {
            return None;
        }
        let h = hash(key);
        let at = self.points.partition_point(|(p, _)| *p < h);
        let (_, owner) = self.points[at % self.points.len()];
        Some(&self.backends[owner])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(names: &[&str]) -> Ring {
        Ring::new(&names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn keys_spread_over_backends_and_the_order_given_does_not_matter() {
        let a = ring(&["a:4317", "b:4317", "c:4317"]);
        assert_eq!(a, ring(&["c:4317", "a:4317", "b:4317", "a:4317"]));
        let mut counts = std::collections::BTreeMap::new();
        for i in 0..30_000 {
            *counts
                .entry(a.pick(format!("user-{i}@example.com").as_bytes()).unwrap())
                .or_insert(0) += 1;
        }
        for (b, n) in &counts {
            assert!((7_000..13_000).contains(n), "{b}: {n} of 30000");
        }
        assert_eq!(Ring::default().pick(b"x"), None);
    }

    #[test]
    fn removing_a_backend_moves_only_its_own_keys() {
        let three = ring(&["a:4317", "b:4317", "c:4317"]);
        let two = ring(&["a:4317", "c:4317"]);
        let mut moved = 0;
        for i in 0..30_000 {
            let key = format!("user-{i}@example.com");
            let before = three.pick(key.as_bytes()).unwrap();
            let after = two.pick(key.as_bytes()).unwrap();
            if before != "b:4317" {
                assert_eq!(before, after, "{key} moved off a backend that stayed");
            } else {
                moved += 1;
            }
        }
        assert!((7_000..13_000).contains(&moved), "{moved}");
    }

    #[test]
    fn the_hash_is_fixed() {
        // A fleet of gateways routes alike only if this never changes.
        assert_eq!(hash(b""), 0xf52a_15e9_a9b5_e89b);
        assert_eq!(hash(b"ana@example.com"), 0x3910_96e3_d1f1_7686);
        assert_ne!(hash(b"ana@example.com"), hash(b"bo@example.com"));
    }
}
