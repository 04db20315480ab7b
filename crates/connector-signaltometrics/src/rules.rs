//! Built-in rule sets: the usage the AI tools report in their events, as
//! metrics of their own (`<tool>.events.…`), never the tools' own metric
//! names, so a site that receives both a tool's metrics and its events gets
//! two separate totals of the same usage rather than one counted twice. A
//! site picks one source per tool (the README says which).
//!
//! Facts: `shared/spec/ai-telemetry.md`. Every definition's condition also
//! requires its value attribute, so a record without it (Codex logs
//! `response.completed` twice, only one copy with the counts) adds nothing.

use serde::Deserialize;

use crate::{Attribute, MetricInfo, Sum};

/// A built-in rule set, by the name `rule_sets` takes.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RuleSet {
    /// Claude Code `api_request` events: tokens by type, cost.
    ClaudeCode,
    /// Codex `codex.sse_event` with `event.kind=response.completed`: tokens
    /// by type.
    Codex,
    /// Gemini CLI `gemini_cli.api_response` events: tokens by type.
    GeminiCli,
}

/// A metric definition of a rule set: the Go-shaped definition plus
/// attributes every point of it carries with a fixed value.
#[derive(Clone, Debug, PartialEq)]
pub struct Definition {
    /// What to match and what to emit.
    pub info: MetricInfo,
    /// `(key, value)` pairs set on every point (the token type).
    pub fixed: Vec<(&'static str, &'static str)>,
}

const CLAUDE: &str = r#"attributes["event.name"] == "api_request" and (body == "claude_code.api_request" or scope.name == "com.anthropic.claude_code.events")"#;
const CODEX: &str = r#"attributes["event.name"] == "codex.sse_event" and attributes["event.kind"] == "response.completed""#;
const GEMINI: &str = r#"attributes["event.name"] == "gemini_cli.api_response""#;

/// `(metric, unit, event condition, attribute key of the type, converter,
/// [(type value, record attribute)])` of each rule set.
type Table = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const TABLES: &[(RuleSet, Table)] = &[
    (
        RuleSet::ClaudeCode,
        (
            "claude_code.events.token.usage",
            "tokens",
            CLAUDE,
            "type",
            "Int",
            &[
                ("input", "input_tokens"),
                ("output", "output_tokens"),
                ("cacheRead", "cache_read_tokens"),
                ("cacheCreation", "cache_creation_tokens"),
            ],
        ),
    ),
    (
        RuleSet::ClaudeCode,
        (
            "claude_code.events.cost.usage",
            "USD",
            CLAUDE,
            "",
            "Double",
            &[("", "cost_usd")],
        ),
    ),
    (
        RuleSet::Codex,
        (
            "codex.events.token.usage",
            "tokens",
            CODEX,
            "token_type",
            "Int",
            &[
                ("input", "input_token_count"),
                ("cached_input", "cached_token_count"),
                ("cache_write_input", "cache_write_token_count"),
                ("output", "output_token_count"),
                ("reasoning_output", "reasoning_token_count"),
                ("total", "tool_token_count"),
            ],
        ),
    ),
    (
        RuleSet::GeminiCli,
        (
            "gemini_cli.events.token.usage",
            "tokens",
            GEMINI,
            "type",
            "Int",
            &[
                ("input", "input_token_count"),
                ("output", "output_token_count"),
                ("cache", "cached_content_token_count"),
                ("thought", "thoughts_token_count"),
                ("tool", "tool_token_count"),
            ],
        ),
    ),
];

fn optional(key: &str) -> Attribute {
    Attribute {
        key: key.to_string(),
        optional: true,
        default_value: None,
    }
}

impl RuleSet {
    /// The metric definitions of this rule set.
    pub fn definitions(self) -> Vec<Definition> {
        let mut out = vec![];
        for (set, (name, unit, condition, type_key, converter, values)) in TABLES {
            if *set != self {
                continue;
            }
            for (type_value, attribute) in values.iter() {
                let info = MetricInfo {
                    name: name.to_string(),
                    description: format!(
                        "{unit} from the `{attribute}` attribute of the tool's events"
                    ),
                    unit: unit.to_string(),
                    // Identity may sit on the resource only (Codex, Gemini).
                    include_resource_attributes: vec![
                        optional("user.email"),
                        optional("service.name"),
                    ],
                    attributes: vec![optional("user.email"), optional("model")],
                    conditions: vec![format!(
                        "{condition} and attributes[\"{attribute}\"] != nil"
                    )],
                    sum: Some(Sum {
                        value: format!("{converter}(attributes[\"{attribute}\"])"),
                    }),
                    ..MetricInfo::default()
                };
                let fixed = if type_key.is_empty() {
                    vec![]
                } else {
                    vec![(*type_key, *type_value)]
                };
                out.push(Definition { info, fixed });
            }
        }
        out
    }
}
