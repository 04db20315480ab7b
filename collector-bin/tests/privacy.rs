//! The privacy proof: what leaves holds only totals and allow-listed
//! attributes. The real tools' metrics and events (and the same with the
//! events forwarded through `configs/forward-events.yaml`) go through the
//! real binary; every string of the input that is not an allow-listed
//! key's value is looked for in every byte the endpoint receives, and each
//! proof is shown to catch a leak when its allow-list is widened.

mod common;

use common::replay::{
    bodies, leaks, overlay_allowed_keys, production_point_keys, replay_signals,
    replay_signals_with, series_per_window, served_by_events, strings, totals_keys, Wire,
    EVENT_FILES, EVENT_METRICS,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_events_keep_only_the_overlays_allowed_keys() {
    let out = replay_signals(&EVENT_FILES, &["logs"], &EVENT_METRICS, Some(&[])).await;
    assert_eq!(
        out.tokens,
        served_by_events(),
        "the totals path is unchanged"
    );
    assert_eq!(out.paths(), ["/ai/otel/v1/logs", "/ai/otel/v1/metrics"]);
    let text = out.text();
    assert!(
        text.contains("input_token_count") && text.contains("cost_usd"),
        "the scan reads forwarded events"
    );
    let mut keys = overlay_allowed_keys();
    keys.extend(totals_keys());
    let leaked = leaks(&EVENT_FILES, &keys, &text);
    assert!(leaked.is_empty(), "input strings in the output: {leaked:?}");

    // The proof can fail: with session.id let through, Gemini's and
    // Claude's session ids are found in what leaves.
    let mut widened = overlay_allowed_keys();
    widened.push("session.id".into());
    let set = format!(
        "processors.redaction/events.allowed_keys=[{}]",
        widened.join(", ")
    );
    let out = replay_signals(&EVENT_FILES, &["logs"], &EVENT_METRICS, Some(&[&set])).await;
    let leaked = leaks(&EVENT_FILES, &keys, &out.text());
    assert!(
        leaked
            .iter()
            .any(|s| s == "c5442221-6dd9-4b06-ac15-bf979167cf82"),
        "the widened list lets Gemini's session id out: {leaked:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_production_config_sends_only_allow_listed_totals_of_metrics_and_events() {
    // Every sample, metrics and events, as each tool sent them.
    let files = [
        ("claude-json.jsonl", Wire::Json),
        ("codex-json.jsonl", Wire::Json),
        ("gemini.jsonl", Wire::Json),
    ];
    let out = replay_signals(&files, &["metrics", "logs"], &common::TOKEN_METRICS, None).await;
    assert_eq!(out.paths(), ["/ai/otel/v1/metrics"], "only totals leave");
    let mut keys = totals_keys();
    keys.extend(production_point_keys());
    let (mut kept, mut input) = (vec![], vec![]);
    for (file, _) in files {
        for signal in ["metrics", "logs"] {
            for body in bodies(file, signal, 0) {
                let body = serde_json::from_slice(&body).unwrap();
                strings(&body, &keys, &mut kept, &mut input);
            }
        }
    }
    input.retain(|s| !kept.iter().any(|k| k.contains(s.as_str())));
    input.sort();
    input.dedup();
    assert!(input.len() > 100, "the scan has strings to look for");
    let text = out.text();
    let leaked: Vec<&String> = input.iter().filter(|s| text.contains(s.as_str())).collect();
    assert!(leaked.is_empty(), "input strings in the output: {leaked:?}");
    // One point per series per window: at most users × series × windows.
    let series = series_per_window(&out.requests);
    let mut unique = series.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(series.len(), unique.len(), "a series twice in one window");
    assert!(series.len() > 20, "totals were sent: {}", series.len());

    // The proof can fail: widen the point or the resource allow-list and
    // Gemini's installation id or session id is found in what leaves.
    let mut points = production_point_keys();
    points.push("installation.id".into());
    let widened = [
        (
            format!(
                "processors.aggregation.include_attributes=[{}]",
                points.join(", ")
            ),
            "51e4bb82-dc6a-405f-93d7-b5ef5eb10a23",
        ),
        (
            "processors.aggregation.resource_attributes.include=[service.name, session.id]".into(),
            "c5442221-6dd9-4b06-ac15-bf979167cf82",
        ),
    ];
    for (set, id) in widened {
        let out = replay_signals_with(&files, &["metrics", "logs"], &[set.as_str()]).await;
        assert!(out.text().contains(id), "{set} lets {id} out");
        assert!(input.iter().any(|s| s == id), "the scan looks for {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_hmac_pseudonym_no_email_leaves_in_clear() {
    let files = [
        ("claude-json.jsonl", Wire::Json),
        ("codex-json.jsonl", Wire::Json),
        ("gemini.jsonl", Wire::Json),
    ];
    // The user key hashed on points and resources before aggregation; the
    // events' points pass the same processors (the connector feeds the
    // metrics pipeline's head).
    let hash = "[{key: user.email, action: hash, hmac_key: site-secret-0001}]";
    let sets = [
        format!("processors.attributes/pseudonym.actions={hash}"),
        format!("processors.resource/pseudonym.attributes={hash}"),
        "service.pipelines.metrics.processors=[memory_limiter, attributes/pseudonym, resource/pseudonym, aggregation]".to_string(),
    ];
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let out = replay_signals_with(&files, &["metrics", "logs"], &sets).await;
    let text = out.text();
    assert!(text.contains("claude_code.token.usage"), "totals were sent");
    assert!(
        text.contains("codex.events.token.usage"),
        "event totals were sent"
    );
    assert!(!text.contains("ana@example.com"), "an email left in clear");
    assert!(
        !text.contains("example.com"),
        "an email domain left in clear"
    );
}
