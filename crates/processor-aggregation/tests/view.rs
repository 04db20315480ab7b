//! The engine reading request bytes in place (`Engine::add_encoded`) gives
//! what it gives for the request prost decodes from them: same outcome,
//! same totals; and it reads in place exactly the shapes it should.

mod common;

use common::*;
use otelcol_core::consumer::RequestContext;
use otelcol_core::pdata::depth::{check_proto, Msg};
use otelcol_core::pdata::Metrics;
use otelcol_processor_aggregation::{reads_in_place, AddError, Engine};
use prost::Message;

/// An engine for these tests: the user key in points, then the resource.
fn fresh() -> Engine {
    engine(|c| c.lookup = vec!["datapoint".into(), "resource".into()])
}

/// Adds `bytes` to one engine decoded by prost and to another in place,
/// at `now`, and checks that the outcomes and the totals are the same.
/// Returns whether they passed the nesting check and prost decoded them.
fn same(bytes: &[u8], now: u64) -> bool {
    let ctx = with_token("tok");
    let (mut decoded, mut in_place) = (fresh(), fresh());
    // What a receiver did before: the nesting check, then prost.
    let want = match check_proto(bytes, Msg::MetricsRequest) {
        Err(e) => Err(AddError::Undecodable(e.to_string())),
        Ok(()) => match Metrics::decode(bytes) {
            Ok(m) => decoded.add(&m, &ctx, now),
            Err(e) => Err(AddError::Undecodable(e.to_string())),
        },
    };
    let got = in_place.add_encoded(bytes, &ctx, now);
    assert_eq!(got, want, "outcome of {bytes:02x?}");
    let sorted = |e: &mut Engine| {
        let mut t: Vec<String> = totals(&e.take_all())
            .iter()
            .map(|t| format!("{t:?}"))
            .collect();
        t.sort();
        t
    };
    assert_eq!(
        sorted(&mut in_place),
        sorted(&mut decoded),
        "totals of {bytes:02x?}"
    );
    want.is_ok()
}

fn shared(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata")
        .join(path)
}

/// Every metrics request of the fixtures and of the real exports, as the
/// protobuf bytes a sender would send.
fn tool_requests() -> Vec<(String, Vec<u8>)> {
    let mut out = vec![];
    let mut names: Vec<_> = std::fs::read_dir(shared(""))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    names.sort();
    for path in names {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with(".json") {
            let text = std::fs::read_to_string(&path).unwrap();
            if let Ok(m) = serde_json::from_str::<Metrics>(&text) {
                if !m.resource_metrics.is_empty() {
                    out.push((name, m.encode_to_vec()));
                }
            }
        }
    }
    for name in ["claude.jsonl", "codex.jsonl", "gemini.jsonl"] {
        let text = std::fs::read_to_string(shared("real").join(name)).unwrap();
        for (i, line) in text.lines().enumerate() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if v["signal"] == "metrics" {
                let m: Metrics = serde_json::from_value(v["body"].clone()).unwrap();
                out.push((format!("{name}:{}", i + 1), m.encode_to_vec()));
            }
        }
    }
    out
}

#[test]
fn the_tools_requests_are_read_in_place_with_the_same_totals() {
    let requests = tool_requests();
    let mut in_place = vec![];
    for (name, bytes) in &requests {
        if reads_in_place(bytes) {
            in_place.push(name.as_str());
        }
        assert!(same(bytes, at(0)), "{name} decodes");
    }
    // Claude Code sends sums, Codex sums and histograms: all in place.
    // Gemini CLI sends array attribute values too: those requests are
    // decoded first.
    for (name, _) in &requests {
        if name.starts_with("claude") || name.starts_with("codex") {
            assert!(in_place.contains(&name.as_str()), "{name} is read in place");
        }
    }
    assert!(in_place.len() >= 6, "{in_place:?}");
    assert!(
        in_place.len() < requests.len(),
        "Gemini's array values take prost"
    );
}

// A small protobuf writer for hand-made requests.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}
fn ld(field: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    varint(u64::from(field << 3 | 2), &mut out);
    varint(body.len() as u64, &mut out);
    out.extend_from_slice(body);
    out
}
fn vf(field: u32, v: u64) -> Vec<u8> {
    let mut out = vec![];
    varint(u64::from(field << 3), &mut out);
    varint(v, &mut out);
    out
}
fn f64f(field: u32, v: u64) -> Vec<u8> {
    let mut out = vec![];
    varint(u64::from(field << 3 | 1), &mut out);
    out.extend_from_slice(&v.to_le_bytes());
    out
}
fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}
fn string_kv(key: &str, value: &str) -> Vec<u8> {
    cat(&[ld(1, key.as_bytes()), ld(2, &ld(1, value.as_bytes()))])
}

/// Points of a delta monotonic sum named `m`, user `ana` in the resource.
struct Parts {
    resource: Vec<u8>,
    point: Vec<u8>,
    sum_extra: Vec<u8>,
    metric_extra: Vec<u8>,
    resource_metrics_extra: Vec<u8>,
}

impl Parts {
    fn new() -> Self {
        Self {
            resource: ld(1, &string_kv("user.email", "ana@example.com")),
            point: cat(&[
                ld(7, &string_kv("type", "input")),
                f64f(3, at(10)),
                f64f(4, 5.0f64.to_bits()),
            ]),
            sum_extra: vec![],
            metric_extra: vec![],
            resource_metrics_extra: vec![],
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let sum = cat(&[
            ld(1, &self.point),
            vf(2, 1),
            vf(3, 1),
            self.sum_extra.clone(),
        ]);
        let metric = cat(&[ld(1, b"m"), ld(7, &sum), self.metric_extra.clone()]);
        let resource = match self.resource.is_empty() {
            true => vec![],
            false => ld(1, &self.resource),
        };
        let rm = cat(&[
            resource,
            ld(2, &ld(2, &metric)),
            self.resource_metrics_extra.clone(),
        ]);
        ld(1, &rm)
    }
}

/// `(what, bytes, read in place)`.
fn hand_made() -> Vec<(&'static str, Vec<u8>, bool)> {
    let mut cases = vec![];
    let mut case = |what, change: &dyn Fn(&mut Parts), in_place| {
        let mut p = Parts::new();
        change(&mut p);
        cases.push((what, p.bytes(), in_place));
    };
    case("as built", &|_| {}, true);
    case(
        "unknown fields of every wire type at every level",
        &|p| {
            let unknown = cat(&[vf(99, 7), f64f(98, 1), ld(97, b"x"), {
                let mut f = vec![];
                varint(96 << 3 | 5, &mut f);
                f.extend_from_slice(&[1, 2, 3, 4]);
                f
            }]);
            p.point.extend_from_slice(&unknown);
            p.sum_extra.extend_from_slice(&unknown);
            p.metric_extra.extend_from_slice(&unknown);
            p.resource.extend_from_slice(&unknown);
            p.resource_metrics_extra.extend_from_slice(&unknown);
        },
        true,
    );
    case(
        "the resource after its scopes",
        &|p| {
            p.resource_metrics_extra = ld(1, &p.resource);
            p.resource = vec![];
        },
        true,
    );
    case(
        "the resource twice (prost merges them)",
        &|p| p.resource_metrics_extra = ld(1, &ld(1, &string_kv("team", "x"))),
        false,
    );
    case(
        "as_double then as_int (the last counts)",
        &|p| p.point.extend_from_slice(&f64f(6, 9)),
        true,
    );
    case(
        "the name twice (the last counts)",
        &|p| p.metric_extra = ld(1, b"other"),
        true,
    );
    case(
        "temporality twice (the last counts)",
        &|p| p.sum_extra = vf(2, 2),
        true,
    );
    case(
        "a gauge beside the sum",
        &|p| p.metric_extra = ld(5, &ld(1, &f64f(4, 1))),
        false,
    );
    case("a histogram", &|p| p.metric_extra = ld(9, &vf(2, 1)), false);
    let hist = |extra: Vec<u8>, temporality: u64| {
        let point = cat(&[
            ld(9, &string_kv("type", "api")),
            f64f(3, at(10)),
            f64f(4, 3),
            f64f(5, 7.5f64.to_bits()),
            extra,
        ]);
        ld(9, &cat(&[ld(1, &point), vf(2, temporality)]))
    };
    let packed = |field: u32, values: &[u64]| {
        ld(
            field,
            &values
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<_>>(),
        )
    };
    let b = |v: f64| v.to_bits();
    let bounds = packed(7, &[b(1.0), b(10.0)]);
    // A second scope with a histogram metric `h`.
    let with_hist_of = |extra: Vec<u8>, temporality: u64| {
        move |p: &mut Parts| {
            let metric = cat(&[ld(1, b"h"), hist(extra.clone(), temporality)]);
            p.resource_metrics_extra = ld(2, &ld(2, &metric));
        }
    };
    let with_hist = |extra: Vec<u8>| with_hist_of(extra, 1);
    case(
        "a histogram, buckets packed",
        &with_hist(cat(&[packed(6, &[1, 1, 1]), bounds.clone()])),
        true,
    );
    case(
        "a histogram, buckets one by one, with min and max",
        &with_hist(cat(&[
            f64f(6, 1),
            f64f(6, 2),
            f64f(6, 0),
            f64f(7, b(1.0)),
            f64f(7, b(10.0)),
            f64f(11, b(0.5)),
            f64f(12, b(9.0)),
        ])),
        true,
    );
    case(
        "a histogram whose buckets do not add up to its count",
        &with_hist(cat(&[packed(6, &[1, 1, 5]), bounds.clone()])),
        true,
    );
    case(
        "a histogram without buckets, cumulative",
        &with_hist_of(f64f(2, at(0) - 7200 * NS), 2),
        true,
    );
    case(
        "a histogram with no recorded value",
        &with_hist(vf(10, 1)),
        true,
    );
    case(
        "a histogram with an exemplar",
        &with_hist(ld(8, &f64f(3, 1))),
        false,
    );
    case(
        "a histogram, packed buckets not a multiple of 8 bytes",
        &with_hist(ld(6, &[1, 2, 3])),
        false,
    );
    case(
        "metadata",
        &|p| p.metric_extra = ld(12, &string_kv("a", "b")),
        true,
    );
    case(
        "an exemplar",
        &|p| p.point.extend_from_slice(&ld(5, &f64f(3, 1))),
        false,
    );
    case(
        "an array value",
        &|p| {
            p.point
                .extend_from_slice(&ld(7, &cat(&[ld(1, b"a"), ld(2, &ld(5, &[]))])))
        },
        false,
    );
    case(
        "a key index",
        &|p| {
            p.point
                .extend_from_slice(&ld(7, &cat(&[ld(1, b"a"), vf(3, 1)])))
        },
        false,
    );
    case(
        "two members of a value",
        &|p| {
            let v = cat(&[ld(1, b"x"), vf(3, 4)]);
            p.point
                .extend_from_slice(&ld(7, &cat(&[ld(1, b"a"), ld(2, &v)])))
        },
        false,
    );
    case(
        "scalar values of every kind, an empty and an absent one",
        &|p| {
            for v in [vf(2, 1), vf(3, u64::MAX), f64f(4, 2.5f64.to_bits()), vec![]] {
                p.point
                    .extend_from_slice(&ld(7, &cat(&[ld(1, b"k"), ld(2, &v)])));
            }
            p.point.extend_from_slice(&ld(7, &ld(1, b"absent")));
            p.point
                .extend_from_slice(&ld(7, &cat(&[ld(1, b""), ld(2, &ld(1, b""))])));
        },
        true,
    );
    case(
        "the user key as an integer in the point",
        &|p| {
            p.point
                .extend_from_slice(&ld(7, &cat(&[ld(1, b"user.email"), ld(2, &vf(3, 42))])))
        },
        true,
    );
    case(
        "no recorded value",
        &|p| p.point.extend_from_slice(&vf(8, 1)),
        true,
    );
    case(
        "a NaN",
        &|p| p.point.extend_from_slice(&f64f(4, f64::NAN.to_bits())),
        true,
    );
    case(
        "cumulative, with a start",
        &|p| {
            p.sum_extra = vf(2, 2);
            p.point.extend_from_slice(&f64f(2, at(0) - 7200 * NS));
        },
        true,
    );
    case(
        "an entity reference",
        &|p| p.resource.extend_from_slice(&ld(3, &ld(2, b"service"))),
        false,
    );
    case(
        "invalid UTF-8 in a key",
        &|p| p.point.extend_from_slice(&ld(7, &ld(1, &[0xff, 0xfe]))),
        false,
    );
    case(
        "a time with the wrong wire type",
        &|p| p.point.extend_from_slice(&vf(3, 1)),
        false,
    );
    // prost would skip a well-formed group; the nesting check refuses it
    // first (prost skips groups by recursing).
    case(
        "a group",
        &|p| {
            p.point.push(15 << 3 | 3);
            p.point.push(15 << 3 | 4);
        },
        false,
    );
    case(
        "field number 0",
        &|p| p.point.extend_from_slice(&[0x00, 0x01]),
        false,
    );
    case(
        "an eleven-byte varint",
        &|p| {
            p.point
                .extend_from_slice(&cat(&[vec![8 << 3], vec![0xff; 10], vec![0]]))
        },
        false,
    );
    cases
}

#[test]
fn hand_made_edges_are_read_in_place_or_left_to_prost_with_the_same_result() {
    let mut refused = vec![];
    for (what, bytes, in_place) in hand_made() {
        assert_eq!(reads_in_place(&bytes), in_place, "{what}");
        if !same(&bytes, at(20)) {
            refused.push(what);
        }
    }
    assert_eq!(
        refused,
        [
            "a histogram, packed buckets not a multiple of 8 bytes",
            "invalid UTF-8 in a key",
            "a time with the wrong wire type",
            "a group",
            "field number 0",
            "an eleven-byte varint",
        ],
        "what prost refuses"
    );
}

#[test]
fn a_truncated_request_is_refused_as_undecodable() {
    let bytes = Parts::new().bytes();
    let cut = &bytes[..bytes.len() - 3];
    assert!(!reads_in_place(cut));
    let got = fresh().add_encoded(cut, &RequestContext::default(), at(20));
    assert!(matches!(got, Err(AddError::Undecodable(_))), "{got:?}");
    assert!(!same(cut, at(20)));
}

/// Bytes of real requests changed at random (a deterministic generator):
/// whatever is read in place must be what prost decodes.
#[test]
fn mutated_requests_read_in_place_are_what_prost_decodes() {
    let seeds: Vec<Vec<u8>> = tool_requests()
        .into_iter()
        .map(|(_, b)| b)
        .chain(hand_made().into_iter().map(|(_, b, _)| b))
        .collect();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (mut in_place, mut runs) = (0, 0);
    for round in 0..4000 {
        let mut b = seeds[round % seeds.len()].clone();
        for _ in 0..=(next() % 3) {
            if b.is_empty() {
                break;
            }
            let i = (next() as usize) % b.len();
            match next() % 4 {
                0 => b[i] = next() as u8,
                1 => b[i] ^= 1 << (next() % 8),
                2 => {
                    b.remove(i);
                }
                _ => b.insert(i, next() as u8),
            }
        }
        if reads_in_place(&b) {
            in_place += 1;
            assert!(
                check_proto(&b, Msg::MetricsRequest).is_ok() && Metrics::decode(&b[..]).is_ok(),
                "read in place but the nesting check or prost refuses {b:02x?}"
            );
        }
        same(&b, at(20));
        runs += 1;
    }
    assert_eq!(runs, 4000);
    assert!(in_place > 100, "only {in_place} mutants were read in place");
}
