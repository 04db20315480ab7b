//! A fake model API on 127.0.0.1 that speaks just enough of the Anthropic
//! Messages, OpenAI Responses and Gemini generateContent APIs for the real
//! tools to finish a one-prompt run, serving different `usage` numbers on
//! every call. It keeps a ledger of what it served, per user (the user is
//! named by the API key: `key-<email>`) and already in the shape each tool
//! reports it (`../shared/spec/ai-telemetry.md`), so the ledger is the
//! expected per-user token totals.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hyper::{Request, StatusCode};
use otelcol_core::server::{self, HttpResponse, ServerHandle, ServerOptions};
use serde_json::json;

/// (user, metric name, token type) → tokens.
pub type Totals = BTreeMap<(String, String, String), f64>;

/// What the fake served and saw.
#[derive(Default)]
pub struct Ledger {
    /// The expected token totals: what was served, per user.
    pub served: Mutex<Totals>,
    /// Model calls answered, per user.
    pub calls: Mutex<BTreeMap<String, u64>>,
    /// Requests the fake did not expect (method, path), answered 404.
    pub unexpected: Mutex<Vec<String>>,
    counter: AtomicU64,
}

impl Ledger {
    fn add(&self, user: &str, metric: &str, pairs: &[(&str, u64)]) {
        let mut served = self.served.lock().unwrap();
        for (ty, n) in pairs {
            *served
                .entry((user.to_string(), metric.to_string(), ty.to_string()))
                .or_insert(0.0) += *n as f64;
        }
    }
}

/// The fake model API, running until dropped or shut down.
pub struct FakeModel {
    /// What it served.
    pub ledger: Arc<Ledger>,
    handle: ServerHandle,
}

impl FakeModel {
    /// Starts it on a free loopback port.
    pub async fn start() -> Self {
        let ledger = Arc::new(Ledger::default());
        let listener = server::bind("127.0.0.1:0").await.unwrap();
        let l = ledger.clone();
        let handle = server::serve(listener, ServerOptions::default(), move |req, _| {
            let l = l.clone();
            async move { answer(&l, req) }
        });
        Self { ledger, handle }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.handle.local_addr().port())
    }
}

/// The user a request is for, from whichever API-key header its tool uses.
fn user_of<B>(req: &Request<B>) -> Option<String> {
    let h = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let query_key = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("key="))
            .map(str::to_string)
    });
    let key = h("x-api-key")
        .or_else(|| h("authorization").map(|a| a.trim_start_matches("Bearer ").to_string()))
        .or_else(|| h("x-goog-api-key"))
        .or(query_key)?;
    key.strip_prefix("key-").map(str::to_string)
}

fn sse(events: &[(Option<&str>, serde_json::Value)]) -> HttpResponse {
    let mut body = String::new();
    for (event, data) in events {
        if let Some(e) = event {
            body.push_str(&format!("event: {e}\n"));
        }
        body.push_str(&format!("data: {data}\n\n"));
    }
    server::response(StatusCode::OK, "text/event-stream", body)
}

fn answer<B>(ledger: &Ledger, req: Request<B>) -> HttpResponse {
    let path = req.uri().path().to_string();
    let Some(user) = user_of(&req) else {
        ledger
            .unexpected
            .lock()
            .unwrap()
            .push(format!("{} {path} (no key)", req.method()));
        return server::response(StatusCode::UNAUTHORIZED, "application/json", "{}");
    };
    let n = ledger.counter.fetch_add(1, Ordering::Relaxed) + 1;
    let calls = || {
        *ledger
            .calls
            .lock()
            .unwrap()
            .entry(user.clone())
            .or_insert(0) += 1
    };
    if path == "/v1/messages" {
        calls();
        return anthropic(ledger, &user, n);
    }
    if path == "/v1/responses" {
        calls();
        return openai(ledger, &user, n);
    }
    if path.ends_with(":generateContent") || path.ends_with(":streamGenerateContent") {
        calls();
        return gemini(ledger, &user, n, path.ends_with(":streamGenerateContent"));
    }
    if path != "/v1/analytics/codex/turn-costs" {
        ledger
            .unexpected
            .lock()
            .unwrap()
            .push(format!("{} {path}", req.method()));
    }
    server::response(StatusCode::NOT_FOUND, "application/json", "{}")
}

/// Anthropic Messages SSE. Claude Code reports input (without cache),
/// output, cacheRead and cacheCreation as `claude_code.token.usage` types.
fn anthropic(ledger: &Ledger, user: &str, n: u64) -> HttpResponse {
    let (input, output, read, create) = (1000 + 7 * n, 20 + 3 * n, 300 + 5 * n, 40 + n);
    ledger.add(
        user,
        "claude_code.token.usage",
        &[
            ("input", input),
            ("output", output),
            ("cacheRead", read),
            ("cacheCreation", create),
        ],
    );
    let usage = json!({"input_tokens": input, "output_tokens": output,
        "cache_read_input_tokens": read, "cache_creation_input_tokens": create});
    let start_usage = json!({"input_tokens": input, "output_tokens": 1,
        "cache_read_input_tokens": read, "cache_creation_input_tokens": create});
    sse(&[
        (
            Some("message_start"),
            json!({"type": "message_start", "message": {"id": format!("msg_{n}"),
                "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": start_usage}}),
        ),
        (
            Some("content_block_start"),
            json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
        ),
        (
            Some("content_block_delta"),
            json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": "hi"}}),
        ),
        (
            Some("content_block_stop"),
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            Some("message_delta"),
            json!({"type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": usage}),
        ),
        (Some("message_stop"), json!({"type": "message_stop"})),
    ])
}

/// OpenAI Responses SSE. Codex reports `codex.turn.token_usage` with input
/// (cached included), cached_input, output, reasoning_output,
/// cache_write_input (0 here) and total (= input + output).
fn openai(ledger: &Ledger, user: &str, n: u64) -> HttpResponse {
    let (input, cached, output, reasoning) = (2000 + 7 * n, 500 + 5 * n, 30 + 3 * n, 7 + n);
    ledger.add(
        user,
        "codex.turn.token_usage",
        &[
            ("input", input),
            ("cached_input", cached),
            ("output", output),
            ("reasoning_output", reasoning),
            ("cache_write_input", 0),
            ("total", input + output),
        ],
    );
    let id = format!("resp_{n}");
    let item = json!({"type": "message", "id": format!("msg_{n}"), "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "hi", "annotations": []}]});
    let usage = json!({"input_tokens": input, "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output, "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input + output});
    sse(&[
        (
            Some("response.created"),
            json!({"type": "response.created", "response": {"id": id, "object": "response",
                "status": "in_progress", "output": []}}),
        ),
        (
            Some("response.output_item.added"),
            json!({"type": "response.output_item.added", "output_index": 0,
                "item": {"type": "message", "id": format!("msg_{n}"), "status": "in_progress",
                    "role": "assistant", "content": []}}),
        ),
        (
            Some("response.output_text.delta"),
            json!({"type": "response.output_text.delta", "item_id": format!("msg_{n}"),
                "output_index": 0, "content_index": 0, "delta": "hi"}),
        ),
        (
            Some("response.output_item.done"),
            json!({"type": "response.output_item.done", "output_index": 0, "item": item}),
        ),
        (
            Some("response.completed"),
            json!({"type": "response.completed", "response": {"id": id, "object": "response",
                "status": "completed", "output": [item], "usage": usage}}),
        ),
    ])
}

/// Gemini generateContent (the router call, which wants a JSON verdict) and
/// streamGenerateContent (the answer). Gemini CLI reports both calls as
/// `gemini_cli.token.usage` (input = prompt, cached included; output; cache;
/// thought; tool) and as `gen_ai.client.token.usage` (input, output).
fn gemini(ledger: &Ledger, user: &str, n: u64, stream: bool) -> HttpResponse {
    let (prompt, candidates, cached, thoughts) = (6000 + 7 * n, 80 + 3 * n, 1200 + 5 * n, 18 + n);
    ledger.add(
        user,
        "gemini_cli.token.usage",
        &[
            ("input", prompt),
            ("output", candidates),
            ("cache", cached),
            ("thought", thoughts),
            ("tool", 0),
        ],
    );
    ledger.add(
        user,
        "gen_ai.client.token.usage",
        &[("input", prompt), ("output", candidates)],
    );
    let text = if stream {
        "hi".to_string()
    } else {
        json!({"complexity_reasoning": "a greeting", "complexity_score": 10}).to_string()
    };
    let answer = json!({
        "candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
            "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": prompt, "candidatesTokenCount": candidates,
            "cachedContentTokenCount": cached, "thoughtsTokenCount": thoughts,
            "totalTokenCount": prompt + candidates + thoughts},
        "modelVersion": "gemini-2.5-pro"});
    if stream {
        sse(&[(None, answer)])
    } else {
        server::response(StatusCode::OK, "application/json", answer.to_string())
    }
}
