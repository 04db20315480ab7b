//! The real exports of Claude Code (delta doubles), Codex (histograms,
//! identity only on the resource) and Gemini CLI (cumulative ints, the
//! prompt on the resource) replayed into the real binary with the
//! production config as they were sent (OTLP/JSON, or re-encoded to
//! protobuf for the http/protobuf runs); an HTTP server on 127.0.0.1 plays the Multitudes
//! endpoint. Checked: every token total equals what the fake model API
//! served (`shared/testdata/real/README.md`), and the totals' resource
//! holds only allow-listed attributes (no prompt, session, host or pid).
//!
//! The exports' timestamps are shifted to the test's clock, so the
//! cumulative streams began after this collector did (as a live sender's
//! would) and count in full.

mod common;

use std::collections::BTreeMap;

use common::replay::{
    leaks, replay_signals, served_by_events, totals_keys, Wire, EVENT_FILES, EVENT_METRICS,
};

/// Replays the metric exports of `files` through the production config and
/// returns the token totals at the endpoint by (metric, token type), after
/// checking that every total is `ana@example.com`'s and that the totals'
/// resource keeps only allow-listed attributes.
async fn replay(files: &[(&str, Wire)]) -> BTreeMap<(String, String), f64> {
    let out = replay_signals(files, &["metrics"], &common::TOKEN_METRICS, None).await;
    assert_eq!(
        out.paths(),
        ["/ai/otel/v1/metrics"],
        "only metrics reach the endpoint"
    );
    out.tokens
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_only_users_get_token_totals_from_their_events_and_no_event_leaves() {
    // Codex users who followed the hosted-collector instructions send only
    // logs; each tool's events alone give the usage the model API served.
    let out = replay_signals(&EVENT_FILES, &["logs"], &EVENT_METRICS, None).await;
    assert_eq!(out.paths(), ["/ai/otel/v1/metrics"], "no event leaves");
    assert_eq!(out.tokens, served_by_events());
    // Nothing of the events but the totals leaves: no prompt, session,
    // conversation or request id, host, path or command line. Every string
    // value of the input (but the kept keys') is looked for in the output.
    let leaked = leaks(&EVENT_FILES, &totals_keys(), &out.text());
    assert!(leaked.is_empty(), "input strings in the output: {leaked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_json_exports_give_exact_token_totals_and_only_allow_listed_resources() {
    let files = [
        ("claude-json.jsonl", Wire::Json),
        ("codex-json.jsonl", Wire::Json),
        ("gemini.jsonl", Wire::Json),
    ];
    let tokens = replay(&files).await;
    let expected: BTreeMap<(String, String), f64> = [
        // The fake model API serves input + 1 per call: the JSON runs of
        // Claude Code and Codex were its fourth calls (1001 + 3, 2001 + 3).
        ("claude_code.token.usage", "input", 1004.0),
        ("claude_code.token.usage", "output", 20.0),
        ("claude_code.token.usage", "cacheRead", 300.0),
        ("claude_code.token.usage", "cacheCreation", 40.0),
        ("codex.turn.token_usage", "input", 2004.0),
        ("codex.turn.token_usage", "cached_input", 500.0),
        ("codex.turn.token_usage", "cache_write_input", 0.0),
        ("codex.turn.token_usage", "output", 30.0),
        ("codex.turn.token_usage", "reasoning_output", 7.0),
        ("codex.turn.token_usage", "total", 2034.0),
        // Two model calls per prompt (router and main model): input + 1 per call.
        ("gemini_cli.token.usage", "input", 6003.0),
        ("gemini_cli.token.usage", "output", 80.0),
        ("gemini_cli.token.usage", "cache", 1200.0),
        ("gemini_cli.token.usage", "thought", 18.0),
        ("gemini_cli.token.usage", "tool", 0.0),
        ("gen_ai.client.token.usage", "input", 6003.0),
        ("gen_ai.client.token.usage", "output", 80.0),
    ]
    .into_iter()
    .map(|(m, t, v)| ((m.to_string(), t.to_string()), v))
    .collect();
    assert_eq!(tokens, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_protobuf_exports_give_exact_token_totals_and_only_allow_listed_resources() {
    let files = [
        ("claude.jsonl", Wire::Protobuf),
        ("codex.jsonl", Wire::Protobuf),
    ];
    let tokens = replay(&files).await;
    let expected: BTreeMap<(String, String), f64> = [
        // The protobuf runs were the fake model API's first calls.
        ("claude_code.token.usage", "input", 1001.0),
        ("claude_code.token.usage", "output", 20.0),
        ("claude_code.token.usage", "cacheRead", 300.0),
        ("claude_code.token.usage", "cacheCreation", 40.0),
        ("codex.turn.token_usage", "input", 2001.0),
        ("codex.turn.token_usage", "cached_input", 500.0),
        ("codex.turn.token_usage", "cache_write_input", 0.0),
        ("codex.turn.token_usage", "output", 30.0),
        ("codex.turn.token_usage", "reasoning_output", 7.0),
        ("codex.turn.token_usage", "total", 2031.0),
    ]
    .into_iter()
    .map(|(m, t, v)| ((m.to_string(), t.to_string()), v))
    .collect();
    assert_eq!(tokens, expected);
}
