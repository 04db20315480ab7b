//! The `redaction` processor, rule by rule, with exact attributes after:
//! the allow list, ignored keys, blocked key patterns, blocked and allowed
//! values, the three hash functions, `redact_all_types`, log bodies
//! (strings and maps), resources, and the summary attributes.

use otelcol_core::config::{decode, RawConfig};
use otelcol_core::pdata::proto::common::v1::{any_value, AnyValue, KeyValue, KeyValueList};
use otelcol_core::pdata::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use otelcol_core::pdata::proto::resource::v1::Resource;
use otelcol_core::pdata::Logs;
use otelcol_processor_attributes::redaction::{Redaction, RedactionConfig};

fn redaction(yaml: &str) -> Redaction {
    let raw: RawConfig = serde_yaml::from_str(yaml).unwrap();
    Redaction::new(&decode::<RedactionConfig>(&raw).unwrap()).unwrap()
}

fn s(text: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(text.into())),
    }
}

fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(value),
        ..KeyValue::default()
    }
}

fn int(i: i64) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::IntValue(i)),
    }
}

fn show(attrs: &[KeyValue]) -> Vec<String> {
    attrs
        .iter()
        .map(
            |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(v)) => format!("{}={v}", kv.key),
                Some(any_value::Value::IntValue(v)) => format!("{}=#{v}", kv.key),
                other => format!("{}={other:?}", kv.key),
            },
        )
        .collect()
}

fn event() -> Vec<KeyValue> {
    vec![
        kv("user.email", s("ana@example.com")),
        kv("prompt", s("refactor the billing module")),
        kv("session.id", s("5d7a82a7")),
        kv("note", s("card 4111111111111111 and card 4222222222222222")),
        kv("api_key", s("sk-123")),
        kv("model", s("claude-opus")),
        kv("count", int(4111111111111111)),
    ]
}

#[test]
fn keys_off_the_allow_list_go_and_blocked_values_are_masked() {
    let r = redaction(
        r#"
allowed_keys: [user.email, note, api_key, model, count]
ignored_keys: [model]
blocked_key_patterns: ["^api_"]
blocked_values: ["4[0-9]{15}"]
summary: debug
"#,
    );
    let mut attrs = event();
    r.attributes(&mut attrs);
    assert_eq!(
        show(&attrs),
        [
            "user.email=ana@example.com",
            "note=card **** and card ****",
            "api_key=****",
            "model=claude-opus",
            "count=#4111111111111111",
            "redaction.redacted.keys=prompt,session.id",
            "redaction.redacted.count=#2",
            "redaction.masked.keys=api_key,note",
            "redaction.masked.count=#2",
            "redaction.ignored.count=#1",
        ]
    );
}

#[test]
fn allowed_values_and_all_types_and_hashes() {
    let r = redaction(
        r#"
allow_all_keys: true
blocked_values: ["4[0-9]{15}", "^abc$"]
allowed_values: ["^card 4111"]
redact_all_types: true
summary: info
"#,
    );
    let mut attrs = event();
    r.attributes(&mut attrs);
    let shown = show(&attrs);
    assert!(shown.contains(&"note=card 4111111111111111 and card 4222222222222222".into()));
    assert!(shown.contains(&"count=****".into()), "{shown:?}");
    assert!(
        shown.contains(&"redaction.masked.count=#1".into()),
        "{shown:?}"
    );
    assert!(
        shown.contains(&"redaction.allowed.count=#1".into()),
        "{shown:?}"
    );
    assert!(!shown.iter().any(|a| a.starts_with("redaction.masked.keys")));

    // Known digests of "abc".
    for (hash, digest) in [
        ("md5", "900150983cd24fb0d6963f7d28e17f72"),
        ("sha1", "a9993e364706816aba3e25717850c26c9cd0d89d"),
        (
            "sha3",
            "3a985da74fe225b2045c172d6bd390bd855f086e3e9d525b46bfe24511431532",
        ),
    ] {
        let r = redaction(&format!(
            "allow_all_keys: true\nblocked_values: [\"^abc$\"]\nhash_function: {hash}\n"
        ));
        let mut attrs = vec![kv("k", s("abc"))];
        r.attributes(&mut attrs);
        assert_eq!(show(&attrs), [format!("k={digest}")], "{hash}");
    }
}

#[test]
fn log_bodies_and_resources_are_redacted_too() {
    let r = redaction(
        r#"
allowed_keys: [user.email, event.name, text, service.name]
blocked_values: ["secret [a-z]+"]
summary: debug
"#,
    );
    let map = AnyValue {
        value: Some(any_value::Value::KvlistValue(KeyValueList {
            values: vec![
                kv("text", s("the secret plan")),
                kv("prompt", s("the whole prompt")),
            ],
        })),
    };
    let mut logs = Logs {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", s("gemini-cli")),
                    kv("process.command_args", s("gemini -p 'secret prompt'")),
                ],
                ..Resource::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![
                    LogRecord {
                        body: Some(s("user said: secret words")),
                        attributes: vec![kv("event.name", s("user_prompt"))],
                        ..LogRecord::default()
                    },
                    LogRecord {
                        body: Some(map),
                        ..LogRecord::default()
                    },
                ],
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    };
    r.logs(&mut logs);
    let rl = &logs.resource_logs[0];
    assert_eq!(
        show(&rl.resource.as_ref().unwrap().attributes),
        [
            "service.name=gemini-cli",
            "redaction.redacted.keys=process.command_args",
            "redaction.redacted.count=#1",
        ]
    );
    let records = &rl.scope_logs[0].log_records;
    assert_eq!(records[0].body, Some(s("user said: ****")));
    assert_eq!(
        show(&records[0].attributes),
        [
            "event.name=user_prompt",
            "redaction.body.masked.keys=body",
            "redaction.body.masked.count=#1",
        ]
    );
    let Some(any_value::Value::KvlistValue(body)) =
        records[1].body.as_ref().and_then(|b| b.value.clone())
    else {
        panic!("a map body")
    };
    assert_eq!(show(&body.values), ["text=the ****"]);
    assert_eq!(
        show(&records[1].attributes),
        [
            "redaction.body.redacted.keys=prompt",
            "redaction.body.redacted.count=#1",
            "redaction.body.masked.keys=text",
            "redaction.body.masked.count=#1",
        ]
    );
}

#[test]
fn bad_patterns_and_unknown_hashes_are_named() {
    let err = |yaml: &str| {
        let raw: RawConfig = serde_yaml::from_str(yaml).unwrap();
        decode::<RedactionConfig>(&raw)
            .and_then(|c| Redaction::new(&c))
            .unwrap_err()
            .to_string()
    };
    assert!(
        err("blocked_values: [\"(\"]").starts_with("blocked_values.0: invalid pattern `(`"),
        "{}",
        err("blocked_values: [\"(\"]")
    );
    assert_eq!(
        err("hash_function: sha512"),
        "hash_function: unknown value `sha512`, expected one of ``, `md5`, `sha1`, `sha3`"
    );
}
