//! OTLP/JSON as clients really send it, made fit for the generated serde
//! code of `opentelemetry-proto`, which on its own would silently lose data
//! on several inputs the OTLP/JSON and proto3 JSON rules allow:
//!
//! - `snake_case` field names (accepted by protobuf JSON parsers) → `lowerCamelCase`;
//! - enums given by name (`"AGGREGATION_TEMPORALITY_CUMULATIVE"`) → integers;
//! - doubles given as strings (`"1.5"`) → numbers; `"NaN"` and the
//!   infinities cannot be carried and are rejected with the field's name;
//! - `null` for any field → the field's default (proto3 JSON);
//! - an empty `arrayValue` or `kvlistValue` written as `{}` (proto3 JSON
//!   omits empty lists; Go's pdata writes it so) → `{"values": []}`;
//! - timestamps must be whole non-negative numbers (or such strings) that
//!   fit 64 bits: anything else is rejected with the field's name;
//! - integers (`asInt`, `intValue`, counts, bucket counts, scale, offset,
//!   flags) must be whole numbers in their type's range, as numbers or
//!   strings; lists and objects must be lists and objects: the generated
//!   code would otherwise drop the point or the whole metric without a word.

use serde_json::{Map, Number, Value};

fn camel(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn enum_value(key: &str, name: &str) -> Option<i64> {
    let v = match key {
        "aggregationTemporality" => match name {
            "AGGREGATION_TEMPORALITY_UNSPECIFIED" => 0,
            "AGGREGATION_TEMPORALITY_DELTA" => 1,
            "AGGREGATION_TEMPORALITY_CUMULATIVE" => 2,
            _ => return None,
        },
        "kind" => match name {
            "SPAN_KIND_UNSPECIFIED" => 0,
            "SPAN_KIND_INTERNAL" => 1,
            "SPAN_KIND_SERVER" => 2,
            "SPAN_KIND_CLIENT" => 3,
            "SPAN_KIND_PRODUCER" => 4,
            "SPAN_KIND_CONSUMER" => 5,
            _ => return None,
        },
        "code" => match name {
            "STATUS_CODE_UNSET" => 0,
            "STATUS_CODE_OK" => 1,
            "STATUS_CODE_ERROR" => 2,
            _ => return None,
        },
        "severityNumber" => {
            let levels = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];
            if name == "SEVERITY_NUMBER_UNSPECIFIED" {
                return Some(0);
            }
            let rest = name.strip_prefix("SEVERITY_NUMBER_")?;
            let (level, n) = match rest.find(|c: char| c.is_ascii_digit()) {
                Some(i) => (&rest[..i], rest[i..].parse::<i64>().ok()?),
                None => (rest, 1),
            };
            let base = levels.iter().position(|l| *l == level)? as i64 * 4;
            if !(1..=4).contains(&n) {
                return None;
            }
            base + n
        }
        _ => return None,
    };
    Some(v)
}

const ENUM_KEYS: &[&str] = &["aggregationTemporality", "kind", "code", "severityNumber"];
const DOUBLE_KEYS: &[&str] = &["asDouble", "doubleValue", "sum", "min", "max", "quantile"];

fn is_time_key(key: &str) -> bool {
    key.ends_with("UnixNano")
}

fn parse_double(path: &str, s: &str) -> Result<Value, String> {
    let d: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{path}: `{s}` is not a number"))?;
    if !d.is_finite() {
        return Err(format!(
            "{path}: `{s}` cannot be carried (NaN and infinities are not supported)"
        ));
    }
    Number::from_f64(d)
        .map(Value::Number)
        .ok_or_else(|| format!("{path}: `{s}` is not a finite number"))
}

fn check_time(path: &str, v: &Value) -> Result<(), String> {
    let ok = match v {
        Value::Number(n) => n.is_u64(),
        Value::String(s) => s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u64>().is_ok(),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{path}: timestamp must be a whole non-negative number of nanoseconds, got {v}"
        ))
    }
}

/// Integer fields and their ranges.
fn int_range(key: &str) -> Option<(i128, i128)> {
    Some(match key {
        "asInt" | "intValue" => (i64::MIN.into(), i64::MAX.into()),
        "count" | "zeroCount" | "bucketCounts" => (0, u64::MAX.into()),
        "scale" | "offset" => (i32::MIN.into(), i32::MAX.into()),
        "flags" | "droppedAttributesCount" | "droppedEventsCount" | "droppedLinksCount" => {
            (0, u32::MAX.into())
        }
        _ => return None,
    })
}

/// Fields that must hold a list.
const LIST_KEYS: &[&str] = &[
    "resourceMetrics",
    "scopeMetrics",
    "metrics",
    "dataPoints",
    "attributes",
    "explicitBounds",
    "exemplars",
    "quantileValues",
    "resourceLogs",
    "scopeLogs",
    "logRecords",
    "resourceSpans",
    "scopeSpans",
    "spans",
    "events",
    "links",
    "values",
];

/// Fields that must hold an object.
const OBJECT_KEYS: &[&str] = &[
    "resource",
    "scope",
    "gauge",
    "histogram",
    "exponentialHistogram",
    "summary",
    "positive",
    "negative",
    "body",
    "arrayValue",
    "kvlistValue",
    "status",
];

/// Checks an integer given as a number or a string against `range`, and
/// writes it back as a number.
fn check_int(path: &str, v: &mut Value, (min, max): (i128, i128)) -> Result<(), String> {
    let n: Option<i128> = match &*v {
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from)),
        Value::String(s) => s.trim().parse::<i128>().ok(),
        _ => None,
    };
    match n {
        Some(n) if (min..=max).contains(&n) => {
            *v = if n < 0 {
                Value::from(n as i64)
            } else {
                Value::from(n as u64)
            };
            Ok(())
        }
        _ => Err(format!(
            "{path}: must be a whole number from {min} to {max}, got {v}"
        )),
    }
}

/// Rewrites `value` in place as described in the module docs; the error
/// names the offending field by its JSON path.
pub fn normalize(value: &mut Value) -> Result<(), String> {
    walk(value, "$")
}

fn walk(value: &mut Value, path: &str) -> Result<(), String> {
    match value {
        Value::Object(map) => normalize_object(map, path),
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                walk(v, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn normalize_object(map: &mut Map<String, Value>, path: &str) -> Result<(), String> {
    if map.keys().any(|k| k.contains('_')) {
        let old = std::mem::take(map);
        for (k, v) in old {
            let k = if k.contains('_') { camel(&k) } else { k };
            map.insert(k, v);
        }
    }
    map.retain(|_, v| !v.is_null());
    let has_quantile = map.contains_key("quantile");
    // In a metric `sum` is the Sum object; in a data point, a double.
    let is_metric = map.contains_key("name") && !map.contains_key("version");
    for (key, v) in map.iter_mut() {
        let here = format!("{path}.{key}");
        match v {
            _ if is_metric && key == "sum" && !v.is_object() => {
                return Err(format!("{here}: must be an object, got {}", kind_of(v)))
            }
            Value::String(s) if ENUM_KEYS.contains(&key.as_str()) => {
                let n = enum_value(key, s)
                    .ok_or_else(|| format!("{here}: unknown enum value `{s}`"))?;
                *v = Value::from(n);
            }
            Value::String(s)
                if DOUBLE_KEYS.contains(&key.as_str()) || (key == "value" && has_quantile) =>
            {
                *v = parse_double(&here, s)?;
            }
            Value::Array(items) if key == "explicitBounds" => {
                for (i, item) in items.iter_mut().enumerate() {
                    if let Value::String(s) = item {
                        *item = parse_double(&format!("{here}[{i}]"), s)?;
                    }
                }
            }
            _ if is_time_key(key) => check_time(&here, v)?,
            Value::Array(items) if key == "bucketCounts" => {
                for (i, item) in items.iter_mut().enumerate() {
                    check_int(&format!("{here}[{i}]"), item, (0, u64::MAX.into()))?;
                }
            }
            _ if key == "bucketCounts" => return Err(format!("{here}: must be a list, got {v}")),
            _ if int_range(key).is_some() => {
                if let Some(range) = int_range(key) {
                    check_int(&here, v, range)?;
                }
            }
            Value::Array(_) if LIST_KEYS.contains(&key.as_str()) => walk(v, &here)?,
            _ if LIST_KEYS.contains(&key.as_str()) => {
                return Err(format!("{here}: must be a list, got {}", kind_of(v)))
            }
            Value::Object(inner) if key == "arrayValue" || key == "kvlistValue" => {
                inner
                    .entry("values")
                    .or_insert_with(|| Value::Array(vec![]));
                walk(v, &here)?
            }
            Value::Object(_) if OBJECT_KEYS.contains(&key.as_str()) => walk(v, &here)?,
            _ if OBJECT_KEYS.contains(&key.as_str()) => {
                return Err(format!("{here}: must be an object, got {}", kind_of(v)))
            }
            _ => walk(v, &here)?,
        }
    }
    Ok(())
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rewrites_what_the_generated_code_would_lose() {
        let mut v = json!({
            "resource_metrics": [{"scope_metrics": [{"metrics": [{
                "name": "m",
                "sum": {
                    "aggregation_temporality": "AGGREGATION_TEMPORALITY_CUMULATIVE",
                    "is_monotonic": true,
                    "data_points": [{"as_double": "1.5", "time_unix_nano": "17", "start_time_unix_nano": null,
                                     "attributes": [{"key": "user_email", "value": {"string_value": "a"}}]}]
                }
            }]}]}]
        });
        normalize(&mut v).unwrap();
        assert_eq!(
            v,
            json!({
                "resourceMetrics": [{"scopeMetrics": [{"metrics": [{
                    "name": "m",
                    "sum": {
                        "aggregationTemporality": 2,
                        "isMonotonic": true,
                        "dataPoints": [{"asDouble": 1.5, "timeUnixNano": "17",
                                        "attributes": [{"key": "user_email", "value": {"stringValue": "a"}}]}]
                    }
                }]}]}]
            })
        );
    }

    #[test]
    fn empty_array_and_kvlist_values_written_as_empty_objects_decode() {
        let body = br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"attributes":[
            {"key":"finish_reasons","value":{"arrayValue":{}}},
            {"key":"nested","value":{"kvlistValue":{}}}]}]}]}]}"#;
        let logs: otelcol_core::pdata::Logs = crate::decode::decode_json(body).unwrap();
        let attrs = &logs.resource_logs[0].scope_logs[0].log_records[0].attributes;
        assert_eq!(attrs.len(), 2);
        assert!(attrs
            .iter()
            .all(|kv| kv.value.as_ref().unwrap().value.is_some()));
    }

    #[test]
    fn severity_and_span_enums() {
        assert_eq!(
            enum_value("severityNumber", "SEVERITY_NUMBER_INFO"),
            Some(9)
        );
        assert_eq!(
            enum_value("severityNumber", "SEVERITY_NUMBER_WARN3"),
            Some(15)
        );
        assert_eq!(
            enum_value("severityNumber", "SEVERITY_NUMBER_FATAL4"),
            Some(24)
        );
        assert_eq!(enum_value("severityNumber", "SEVERITY_NUMBER_INFO5"), None);
        assert_eq!(enum_value("kind", "SPAN_KIND_CLIENT"), Some(3));
        assert_eq!(enum_value("code", "STATUS_CODE_ERROR"), Some(2));
    }

    /// Issue 12, defect 15: each of these was answered 200 and then lost.
    #[test]
    fn values_the_generated_code_would_drop_are_refused_with_their_path() {
        let sum = |dp: &str| {
            format!(
                r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"name":"m","sum":{{"aggregationTemporality":1,"dataPoints":[{dp}]}}}}]}}]}}]}}"#
            )
        };
        let point = "$.resourceMetrics[0].scopeMetrics[0].metrics[0].sum.dataPoints[0]";
        for (body, error) in [
            (sum(r#"{"asInt":"99999999999999999999999"}"#), format!("{point}.asInt: must be a whole number from -9223372036854775808 to 9223372036854775807, got \"99999999999999999999999\"")),
            (sum(r#"{"asInt":1e30}"#), format!("{point}.asInt: must be a whole number from -9223372036854775808 to 9223372036854775807, got 1e+30")),
            (sum(r#"{"asInt":true}"#), format!("{point}.asInt: must be a whole number from -9223372036854775808 to 9223372036854775807, got true")),
            (sum(r#"{"timeUnixNano":"18446744073709551616"}"#), format!("{point}.timeUnixNano: timestamp must be a whole non-negative number of nanoseconds, got \"18446744073709551616\"")),
            (sum(r#"{"attributes":{"a":"b"}}"#), format!("{point}.attributes: must be a list, got an object")),
            (r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"m","histogram":{"dataPoints":[{"count":"1","bucketCounts":["-1"]}]}}]}]}]}"#.into(),
             "$.resourceMetrics[0].scopeMetrics[0].metrics[0].histogram.dataPoints[0].bucketCounts[0]: must be a whole number from 0 to 18446744073709551615, got \"-1\"".into()),
            (r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"m","sum":{"dataPoints":"x"}}]}]}]}"#.into(),
             "$.resourceMetrics[0].scopeMetrics[0].metrics[0].sum.dataPoints: must be a list, got a string".into()),
            (r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"m","sum":"x"}]}]}]}"#.into(),
             "$.resourceMetrics[0].scopeMetrics[0].metrics[0].sum: must be an object, got a string".into()),
            (r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"m","gauge":"x"}]}]}]}"#.into(),
             "$.resourceMetrics[0].scopeMetrics[0].metrics[0].gauge: must be an object, got a string".into()),
        ] {
            let mut v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(normalize(&mut v), Err(error), "{body}");
        }
        // Integers as strings or numbers in range pass, written as numbers.
        let mut v: Value = serde_json::from_str(&sum(
            r#"{"asInt":"-12","timeUnixNano":"18446744073709551615"}"#,
        ))
        .unwrap();
        normalize(&mut v).unwrap();
        let p = &v["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["sum"]["dataPoints"][0];
        assert_eq!(p["asInt"], json!(-12));
    }

    #[test]
    fn rejects_with_the_field_path() {
        let mut v = json!({"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"gauge": {"dataPoints": [{"asDouble": "NaN"}]}}]}]}]});
        assert_eq!(
            normalize(&mut v).unwrap_err(),
            "$.resourceMetrics[0].scopeMetrics[0].metrics[0].gauge.dataPoints[0].asDouble: `NaN` cannot be carried (NaN and infinities are not supported)"
        );
        let mut v =
            json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": -5}]}]}]});
        assert_eq!(
            normalize(&mut v).unwrap_err(),
            "$.resourceLogs[0].scopeLogs[0].logRecords[0].timeUnixNano: timestamp must be a whole non-negative number of nanoseconds, got -5"
        );
        let mut v =
            json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": 1.5}]}]}]});
        assert!(normalize(&mut v).is_err());
        let mut v = json!({"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"sum": {"aggregationTemporality": "BOGUS"}}]}]}]});
        assert_eq!(
            normalize(&mut v).unwrap_err(),
            "$.resourceMetrics[0].scopeMetrics[0].metrics[0].sum.aggregationTemporality: unknown enum value `BOGUS`"
        );
    }
}
