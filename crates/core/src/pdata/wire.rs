//! Counting items in a protobuf-encoded request without decoding it.

/// Counts the length-delimited fields reached by `path` (see
/// [`Payload::ITEM_PATH`](super::Payload::ITEM_PATH)); stops at the first
/// malformed field of a message.
pub(super) fn count(bytes: &[u8], path: &[&[u32]]) -> usize {
    let Some((level, rest)) = path.split_first() else {
        return 1;
    };
    let mut n = 0;
    let mut b = bytes;
    while let Some((field, body)) = next_field(&mut b) {
        if let Some(body) = body.filter(|_| level.contains(&field)) {
            n += count(body, rest);
        }
    }
    n
}

fn varint(b: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().take(10).enumerate() {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            *b = &b[i + 1..];
            return Some(v);
        }
    }
    None
}

fn skip<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, rest) = (n <= b.len()).then(|| b.split_at(n))?;
    *b = rest;
    Some(head)
}

/// The next field's number and, when length-delimited, its body; `None`
/// at the end or at a malformed field (groups included).
fn next_field<'a>(b: &mut &'a [u8]) -> Option<(u32, Option<&'a [u8]>)> {
    if b.is_empty() {
        return None;
    }
    let key = varint(b)?;
    let field = u32::try_from(key >> 3).ok()?;
    match key & 7 {
        0 => varint(b).map(|_| (field, None)),
        1 => skip(b, 8).map(|_| (field, None)),
        2 => {
            let n = usize::try_from(varint(b)?).ok()?;
            skip(b, n).map(|body| (field, Some(body)))
        }
        5 => skip(b, 4).map(|_| (field, None)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::pdata::{Logs, Metrics, Payload, Traces};
    use prost::Message;

    #[test]
    fn counts_the_items_prost_would_decode() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(text) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            if let Ok(m) = serde_json::from_str::<Metrics>(&text) {
                let bytes = m.encode_to_vec();
                assert_eq!(
                    Metrics::count_encoded(&bytes),
                    m.item_count(),
                    "{:?}",
                    entry.path()
                );
                seen += m.item_count();
            }
        }
        assert!(seen > 0, "no metrics fixture in {dir:?}");
        let logs: Logs = serde_json::from_str(
            r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{},{}]},{"logRecords":[{}]}]}]}"#,
        )
        .unwrap();
        assert_eq!(Logs::count_encoded(&logs.encode_to_vec()), 3);
        let traces: Traces = serde_json::from_str(
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{},{}]}]},{"scopeSpans":[{"spans":[{}]}]}]}"#,
        )
        .unwrap();
        assert_eq!(Traces::count_encoded(&traces.encode_to_vec()), 3);
        assert_eq!(Metrics::count_encoded(&[0x0a, 0x05, 1]), 0);
        assert_eq!(Metrics::count_encoded(&[]), 0);
    }
}
