//! OTLP/JSON as clients really send it, made fit for the generated serde
//! code of `opentelemetry-proto`, which on its own would silently lose data
//! on several inputs the OTLP/JSON and proto3 JSON rules allow:
//!
//! - `snake_case` field names (accepted by protobuf JSON parsers) → `lowerCamelCase`;
//! - enums given by name (`"AGGREGATION_TEMPORALITY_CUMULATIVE"`) → integers;
//! - doubles given as strings (`"1.5"`) → numbers; `"NaN"` and the
//!   infinities cannot be carried and are rejected with the field's name;
//! - `null` for any field → the field's default (proto3 JSON);
//! - timestamps must be whole non-negative numbers (or such strings):
//!   anything else is rejected with the field's name, never dropped.

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
        Value::String(s) => !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()),
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
    for (key, v) in map.iter_mut() {
        let here = format!("{path}.{key}");
        match v {
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
            _ => walk(v, &here)?,
        }
    }
    Ok(())
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
