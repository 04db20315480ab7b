//! Any split of a set of delta points into requests, in any order, gives
//! totals equal to the plain sums per (user, metric, attributes, window).

mod common;

use std::collections::BTreeMap;

use common::*;
use otelcol_core::consumer::RequestContext;
use proptest::prelude::*;

const USERS: [&str; 3] = ["ana@example.com", "bo@example.com", "cy@example.com"];
const METRICS: [&str; 2] = ["claude_code.token.usage", "claude_code.cost.usage"];
const TYPES: [&str; 2] = ["input", "output"];

#[derive(Clone, Debug)]
struct P {
    user: usize,
    metric: usize,
    ty: usize,
    secs: u64,
    /// Quarter units, so float addition is exact.
    quarters: u32,
}

fn points() -> impl Strategy<Value = Vec<P>> {
    prop::collection::vec(
        (0..3usize, 0..2usize, 0..2usize, 0..1800u64, 0..40_000u32).prop_map(
            |(user, metric, ty, secs, quarters)| P {
                user,
                metric,
                ty,
                secs,
                quarters,
            },
        ),
        1..120,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn any_split_and_order_gives_the_plain_sums(
        pts in points(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
        order in any::<u64>(),
    ) {
        let mut expected: BTreeMap<(String, String, String, i64), f64> = BTreeMap::new();
        for p in &pts {
            let window = (p.secs / 300 * 300) as i64;
            *expected
                .entry((USERS[p.user].into(), METRICS[p.metric].into(), TYPES[p.ty].into(), window))
                .or_insert(0.0) += p.quarters as f64 / 4.0;
        }
        // Shuffle deterministically from `order`, then cut into requests.
        let mut shuffled = pts.clone();
        let mut state = order | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c.index(shuffled.len() + 1)).collect();
        bounds.push(0);
        bounds.push(shuffled.len());
        bounds.sort_unstable();
        bounds.dedup();

        let mut e = engine(|_| {});
        let now = at(1800);
        for pair in bounds.windows(2) {
            let chunk = &shuffled[pair[0]..pair[1]];
            let metrics = METRICS
                .iter()
                .enumerate()
                .map(|(mi, name)| {
                    let pts = chunk
                        .iter()
                        .filter(|p| p.metric == mi)
                        .map(|p| point(p.quarters as f64 / 4.0, at(p.secs), 0, &[("user.email", USERS[p.user]), ("type", TYPES[p.ty])]))
                        .collect();
                    sum(name, 1, true, pts)
                })
                .collect();
            let o = e.add(&request(&[("service.name", "claude-code")], metrics), &RequestContext::default(), now).unwrap();
            prop_assert_eq!(o.accepted as usize, chunk.len());
        }
        let mut got: BTreeMap<(String, String, String, i64), f64> = BTreeMap::new();
        for t in totals(&e.take_all()) {
            let key = (t.attrs["user.email"].clone(), t.metric.clone(), t.attrs["type"].clone(), (t.start / NS) as i64 - T0 as i64);
            prop_assert!(got.insert(key, t.value).is_none(), "one output series per key");
        }
        prop_assert_eq!(got, expected);
    }
}
