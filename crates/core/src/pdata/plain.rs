//! Attribute values as plain JSON and as text, the way the Go collector's
//! `pcommon.Value.AsRaw` (marshalled with `encoding/json`) and
//! `pcommon.Value.AsString` render them: for exporters that write values
//! rather than OTLP (line formats, file contents).

use std::fmt::Write as _;

use base64::Engine as _;

use super::json::{double, string};
use super::proto::common::v1::{any_value::Value, AnyValue, KeyValue};

/// `v` as plain JSON: strings, numbers and booleans as themselves, lists
/// as arrays, maps as objects with sorted keys (the last of repeated
/// keys), bytes as base64, no value as `null`. Doubles as Go writes them;
/// NaN and infinities (which Go's encoder refuses) as the strings
/// `"NaN"`, `"Infinity"`, `"-Infinity"`.
pub fn value(out: &mut String, v: &AnyValue) {
    match &v.value {
        Some(Value::StringValue(s)) => string(out, s),
        Some(Value::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(Value::IntValue(i)) => {
            let _ = write!(out, "{i}");
        }
        Some(Value::DoubleValue(d)) => double(out, *d),
        Some(Value::BytesValue(b)) => {
            string(out, &base64::engine::general_purpose::STANDARD.encode(b))
        }
        Some(Value::ArrayValue(a)) => {
            out.push('[');
            for (i, v) in a.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                value(out, v);
            }
            out.push(']');
        }
        Some(Value::KvlistValue(kv)) => map(out, kv.values.iter()),
        Some(Value::StringValueStrindex(_)) | None => out.push_str("null"),
    }
}

/// Attributes as one plain JSON object with sorted keys; of repeated keys
/// the last wins (as in a Go map).
pub fn map<'a>(out: &mut String, attrs: impl Iterator<Item = &'a KeyValue>) {
    let mut sorted: Vec<&KeyValue> = attrs.collect();
    // Stable: among equal keys the last one given stays last.
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    out.push('{');
    let mut first = true;
    for (i, kv) in sorted.iter().enumerate() {
        if sorted.get(i + 1).is_some_and(|next| next.key == kv.key) {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        string(out, &kv.key);
        out.push(':');
        match &kv.value {
            Some(v) => value(out, v),
            None => out.push_str("null"),
        }
    }
    out.push('}');
}

/// `v` as text: a string as it is, a number or boolean as written in
/// JSON, bytes as base64, a list or map as plain JSON, no value as `""`.
pub fn text(v: &AnyValue) -> String {
    match &v.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::DoubleValue(d)) if !d.is_finite() => if d.is_nan() {
            "NaN"
        } else if *d > 0.0 {
            "+Inf"
        } else {
            "-Inf"
        }
        .to_string(),
        Some(Value::BytesValue(b)) => base64::engine::general_purpose::STANDARD.encode(b),
        None | Some(Value::StringValueStrindex(_)) => String::new(),
        Some(_) => {
            let mut out = String::new();
            value(&mut out, v);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdata::proto::common::v1::{ArrayValue, KeyValueList};

    fn v(value: Value) -> AnyValue {
        AnyValue { value: Some(value) }
    }

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(v(value)),
            ..Default::default()
        }
    }

    #[test]
    fn maps_sort_their_keys_keep_the_last_repeat_and_nest() {
        let attrs = [
            kv("b", Value::IntValue(-2)),
            kv("a", Value::StringValue("x\"y".into())),
            kv("b", Value::DoubleValue(0.5)),
            kv(
                "c",
                Value::ArrayValue(ArrayValue {
                    values: vec![v(Value::BoolValue(true)), v(Value::BytesValue(vec![1, 2]))],
                }),
            ),
            kv(
                "d",
                Value::KvlistValue(KeyValueList {
                    values: vec![
                        kv("z", Value::IntValue(1)),
                        kv("y", Value::DoubleValue(1e21)),
                    ],
                }),
            ),
        ];
        let mut out = String::new();
        map(&mut out, attrs.iter());
        assert_eq!(
            out,
            r#"{"a":"x\"y","b":0.5,"c":[true,"AQI="],"d":{"y":1e+21,"z":1}}"#
        );
    }

    #[test]
    fn text_is_the_string_itself_and_json_for_the_rest() {
        assert_eq!(text(&v(Value::StringValue("a\nb".into()))), "a\nb");
        assert_eq!(text(&v(Value::IntValue(42))), "42");
        assert_eq!(text(&v(Value::DoubleValue(2.5))), "2.5");
        assert_eq!(text(&v(Value::DoubleValue(f64::NEG_INFINITY))), "-Inf");
        assert_eq!(text(&v(Value::BoolValue(false))), "false");
        assert_eq!(text(&AnyValue { value: None }), "");
        let list = Value::ArrayValue(ArrayValue {
            values: vec![v(Value::StringValue("s".into()))],
        });
        assert_eq!(text(&v(list)), r#"["s"]"#);
    }
}
