//! The line marshalers of the Go `awss3` exporter, for logs only: `body`
//! (each record's body as text, one per line) and `sumo_ic` (Sumo Logic's
//! installed-collector format, one JSON object per line).

use chrono::{DateTime, Utc};
use otelcol_core::pdata::proto::common::v1::KeyValue;
use otelcol_core::pdata::{find_attribute, plain, Logs};

use crate::encode::EncodeError;

/// `body`: every record's body as text (a string as it is, anything else
/// as JSON), each followed by a newline.
pub fn body(logs: &Logs) -> Vec<u8> {
    let mut out = String::new();
    let records = logs
        .resource_logs
        .iter()
        .flat_map(|rl| &rl.scope_logs)
        .flat_map(|s| &s.log_records);
    for r in records {
        if let Some(b) = &r.body {
            out.push_str(&plain::text(b));
        }
        out.push('\n');
    }
    out.into_bytes()
}

/// The resource attributes `sumo_ic` takes its source fields from.
pub const SUMO_SOURCE_ATTRIBUTES: [&str; 3] = ["_sourceName", "_sourceHost", "_sourceCategory"];

/// `sumo_ic`: per record, `{"date": …,"sourceName":…,"sourceHost":…,
/// "sourceCategory":…,"fields":{…},"message":{…}}` and a newline. The
/// source fields are the resource's `_sourceName`, `_sourceHost` and
/// `_sourceCategory` (each required: a batch whose resource lacks one is
/// refused, as in Go); `fields` holds the resource's other attributes,
/// `message` the record's attributes with its body under `log`; `date` is
/// the observed time as Go prints a UTC time.
pub fn sumo_ic(logs: &Logs) -> Result<Vec<u8>, EncodeError> {
    let mut out = String::new();
    for rl in &logs.resource_logs {
        let resource: &[KeyValue] = rl
            .resource
            .as_ref()
            .map(|r| &r.attributes[..])
            .unwrap_or(&[]);
        let mut source = Vec::with_capacity(3);
        for key in SUMO_SOURCE_ATTRIBUTES {
            let v = find_attribute(resource, key)
                .ok_or(EncodeError::MissingAttribute { attribute: key })?;
            let mut quoted = String::new();
            plain::value(&mut quoted, &string_value(plain::text(v)));
            source.push(quoted);
        }
        let mut fields = String::new();
        plain::map(
            &mut fields,
            resource
                .iter()
                .filter(|kv| !SUMO_SOURCE_ATTRIBUTES.contains(&kv.key.as_str())),
        );
        for r in rl.scope_logs.iter().flat_map(|s| &s.log_records) {
            let log = KeyValue {
                key: "log".into(),
                value: r.body.clone(),
                ..Default::default()
            };
            let mut message = String::new();
            plain::map(
                &mut message,
                r.attributes
                    .iter()
                    .filter(|kv| kv.key != "log")
                    .chain(std::iter::once(&log)),
            );
            out.push_str(&format!(
                "{{\"date\": \"{}\",\"sourceName\":{},\"sourceHost\":{},\"sourceCategory\":{},\"fields\":{fields},\"message\":{message}}}\n",
                go_utc(r.observed_time_unix_nano),
                source[0],
                source[1],
                source[2],
            ));
        }
    }
    Ok(out.into_bytes())
}

fn string_value(s: String) -> otelcol_core::pdata::proto::common::v1::AnyValue {
    otelcol_core::pdata::proto::common::v1::AnyValue {
        value: Some(otelcol_core::pdata::proto::common::v1::any_value::Value::StringValue(s)),
    }
}

/// A time as Go's `time.Time.String()` prints a UTC time:
/// `2006-01-02 15:04:05.999999999 +0000 UTC` (trailing zeros of the
/// fraction dropped, no fraction when whole).
fn go_utc(unix_nanos: u64) -> String {
    let secs = (unix_nanos / 1_000_000_000) as i64;
    let nanos = (unix_nanos % 1_000_000_000) as u32;
    let t = DateTime::<Utc>::from_timestamp(secs, nanos).unwrap_or_default();
    let mut s = t.format("%Y-%m-%d %H:%M:%S").to_string();
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        s.push('.');
        s.push_str(fraction.trim_end_matches('0'));
    }
    s.push_str(" +0000 UTC");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use otelcol_core::pdata::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use otelcol_core::pdata::proto::resource::v1::Resource;
    use otelcol_core::pdata::string_attribute;

    #[test]
    fn sumo_ic_refuses_a_resource_without_its_source_fields() {
        let logs = Logs {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![
                        string_attribute("_sourceName", "n"),
                        string_attribute("_sourceCategory", "c"),
                    ],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord::default()],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let e = sumo_ic(&logs).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the sumo_ic marshaler needs resource attribute _sourceHost, which a resource of the batch lacks"
        );
        assert_eq!(body(&logs), b"\n");
    }

    #[test]
    fn go_prints_utc_times_without_trailing_zeros() {
        assert_eq!(go_utc(0), "1970-01-01 00:00:00 +0000 UTC");
        assert_eq!(
            go_utc(1_795_268_825_500_000_000),
            "2026-11-21 13:47:05.5 +0000 UTC"
        );
        assert_eq!(
            go_utc(1_795_268_825_000_000_001),
            "2026-11-21 13:47:05.000000001 +0000 UTC"
        );
    }
}
