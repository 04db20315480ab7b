//! The `transform` processor: OTTL statement groups run per context.

use otelcol_core::config::ConfigError;
use otelcol_core::pdata::proto::logs::v1::{ResourceLogs, ScopeLogs};
use otelcol_core::pdata::proto::metrics::v1::{Metric, ResourceMetrics, ScopeMetrics};
use otelcol_core::pdata::{Logs, Metrics, Traces};
use serde::{Deserialize, Serialize};

use otelcol_core::ottl::{self, Condition, Context, Env, Statement};

/// What happens when a statement fails at run time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorMode {
    /// Log the error and go on with the next statement.
    Ignore,
    /// Go on silently.
    Silent,
    /// Refuse the batch (a permanent error upstream).
    #[default]
    Propagate,
}

/// A statement group: the `context:` form, or one string in the flat form.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum GroupConfig {
    /// One statement whose paths carry their context (`datapoint.attributes[…]`).
    Flat(String),
    /// Statements in one context.
    Group {
        /// `resource`, `scope`, `metric`, `datapoint`, `log`, `span`.
        context: String,
        /// The statements.
        statements: Vec<String>,
        /// Run the statements only where one of these holds.
        #[serde(default)]
        conditions: Vec<String>,
        /// Overrides the processor's `error_mode` for this group.
        #[serde(default)]
        error_mode: Option<ErrorMode>,
    },
}

/// `processors.transform`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TransformConfig {
    /// `ignore`, `silent` or `propagate` (default).
    pub error_mode: ErrorMode,
    /// Groups for metrics.
    pub metric_statements: Vec<GroupConfig>,
    /// Groups for logs.
    pub log_statements: Vec<GroupConfig>,
    /// Groups for traces.
    pub trace_statements: Vec<GroupConfig>,
    /// Give every log record its own copy of its resource and scope while
    /// the log statements run (so a statement in the log context can set
    /// the resource per record), then group records with equal resources
    /// and scopes again (Go's `flatten_data`).
    pub flatten_data: bool,
}

/// A checked group.
#[derive(Debug)]
pub struct Group {
    context: Context,
    statements: Vec<Statement>,
    conditions: Vec<Condition>,
    error_mode: ErrorMode,
}

fn compile_groups(
    key: &str,
    groups: &[GroupConfig],
    allowed: &[Context],
    mode: ErrorMode,
) -> Result<Vec<Group>, ConfigError> {
    let mut out = vec![];
    for (i, g) in groups.iter().enumerate() {
        let at = |j: Option<usize>| match j {
            Some(j) => format!("{key}[{i}].statements[{j}]"),
            None => format!("{key}[{i}]"),
        };
        let fail = |path: String, text: &str, e: ottl::CompileError| {
            ConfigError::invalid(
                path,
                format!("in `{text}` at column {}: {}", e.column, e.message),
            )
        };
        let (context, texts, conditions, error_mode): (
            Context,
            Vec<&String>,
            &[String],
            ErrorMode,
        ) = match g {
            GroupConfig::Flat(text) => {
                let stmt = ottl::parse::statement(text).map_err(|e| {
                    fail(
                        at(None),
                        text,
                        ottl::CompileError {
                            column: e.column,
                            message: e.message,
                        },
                    )
                })?;
                let mut firsts = vec![];
                collect_firsts(&stmt, &mut firsts);
                let names: Vec<&str> = firsts.iter().map(String::as_str).collect();
                let ctx = Context::deepest(&names).ok_or_else(|| {
                    ConfigError::invalid(at(None), format!("in `{text}`: in the flat form every path needs its context, e.g. datapoint.attributes[\"user\"]"))
                })?;
                (ctx, vec![text], &[], mode)
            }
            GroupConfig::Group {
                context,
                statements,
                conditions,
                error_mode,
            } => {
                let ctx = Context::parse(context).ok_or_else(|| {
                    ConfigError::invalid(
                        format!("{}.context", at(None)),
                        format!("unknown context `{context}`"),
                    )
                })?;
                (
                    ctx,
                    statements.iter().collect(),
                    conditions.as_slice(),
                    error_mode.unwrap_or(mode),
                )
            }
        };
        if !allowed.contains(&context) {
            return Err(ConfigError::invalid(
                at(None),
                format!("context `{context:?}` does not apply to {key}"),
            ));
        }
        let statements = texts
            .iter()
            .enumerate()
            .map(|(j, t)| {
                ottl::compile(t, context).map_err(|e| {
                    fail(
                        at(Some(j).filter(|_| matches!(g, GroupConfig::Group { .. }))),
                        t,
                        e,
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        let conditions = conditions
            .iter()
            .enumerate()
            .map(|(j, t)| {
                ottl::compile_condition(t, context)
                    .map_err(|e| fail(format!("{key}[{i}].conditions[{j}]"), t, e))
            })
            .collect::<Result<_, _>>()?;
        out.push(Group {
            context,
            statements,
            conditions,
            error_mode,
        });
    }
    Ok(out)
}

fn collect_firsts(s: &ottl::parse::Statement, out: &mut Vec<String>) {
    fn expr(e: &ottl::parse::Expr, out: &mut Vec<String>) {
        use ottl::parse::Expr;
        match e {
            Expr::Path(p) => out.push(p.parts[0].clone()),
            Expr::List(items) => items.iter().for_each(|i| expr(i, out)),
            Expr::Call(c) => c.args.iter().for_each(|a| expr(a, out)),
            _ => {}
        }
    }
    fn cond(c: &ottl::parse::Cond, out: &mut Vec<String>) {
        use ottl::parse::Cond;
        match c {
            Cond::Or(a, b) | Cond::And(a, b) => {
                cond(a, out);
                cond(b, out);
            }
            Cond::Not(a) => cond(a, out),
            Cond::Cmp(a, _, b) => {
                expr(a, out);
                expr(b, out);
            }
            Cond::Value(v) => expr(v, out),
        }
    }
    s.call.args.iter().for_each(|a| expr(a, out));
    if let Some(c) = &s.condition {
        cond(c, out);
    }
}

/// All statement groups of a `transform` processor, checked.
#[derive(Debug, Default)]
pub struct Transform {
    metrics: Vec<Group>,
    logs: Vec<Group>,
    traces: Vec<Group>,
    flatten_logs: bool,
}

/// One `ResourceLogs` per log record, each with its own resource and scope.
fn flatten(req: &mut Logs) {
    let mut out = Vec::new();
    for rl in req.resource_logs.drain(..) {
        for sl in rl.scope_logs {
            for record in sl.log_records {
                out.push(ResourceLogs {
                    resource: rl.resource.clone(),
                    schema_url: rl.schema_url.clone(),
                    scope_logs: vec![ScopeLogs {
                        scope: sl.scope.clone(),
                        schema_url: sl.schema_url.clone(),
                        log_records: vec![record],
                    }],
                });
            }
        }
    }
    req.resource_logs = out;
}

/// Records with equal resources (and schema URL) under one `ResourceLogs`,
/// and with equal scopes under one `ScopeLogs`, in first-seen order.
fn regroup(req: &mut Logs) {
    let mut out: Vec<ResourceLogs> = Vec::new();
    for rl in req.resource_logs.drain(..) {
        let i = match out
            .iter()
            .position(|o| o.resource == rl.resource && o.schema_url == rl.schema_url)
        {
            Some(i) => i,
            None => {
                out.push(ResourceLogs {
                    resource: rl.resource,
                    schema_url: rl.schema_url,
                    scope_logs: Vec::new(),
                });
                out.len() - 1
            }
        };
        for sl in rl.scope_logs {
            let scopes = &mut out[i].scope_logs;
            match scopes
                .iter_mut()
                .find(|s| s.scope == sl.scope && s.schema_url == sl.schema_url)
            {
                Some(s) => s.log_records.extend(sl.log_records),
                None => scopes.push(sl),
            }
        }
    }
    req.resource_logs = out;
}

fn run_group(g: &Group, env: &mut Env<'_>) -> Result<(), String> {
    if !env.any(&g.conditions) {
        return Ok(());
    }
    for s in &g.statements {
        if let Err(e) = env.run(s) {
            let message = format!("statement `{}` failed: {e}", s.text);
            match g.error_mode {
                ErrorMode::Propagate => return Err(message),
                ErrorMode::Ignore => tracing::warn!("{message}"),
                ErrorMode::Silent => {}
            }
        }
    }
    Ok(())
}

fn empty_env(resource: &mut Vec<otelcol_core::pdata::proto::common::v1::KeyValue>) -> Env<'_> {
    Env {
        resource,
        scope: None,
        item: None,
        name: None,
        metric_name: None,
        description: None,
        unit: None,
        body: None,
        severity_text: None,
    }
}

impl Transform {
    /// Checks every statement of `c`.
    pub fn new(c: &TransformConfig) -> Result<Self, ConfigError> {
        use Context::*;
        Ok(Self {
            metrics: compile_groups(
                "metric_statements",
                &c.metric_statements,
                &[Resource, Scope, Metric, DataPoint],
                c.error_mode,
            )?,
            logs: compile_groups(
                "log_statements",
                &c.log_statements,
                &[Resource, Scope, Log],
                c.error_mode,
            )?,
            traces: compile_groups(
                "trace_statements",
                &c.trace_statements,
                &[Resource, Scope, Span],
                c.error_mode,
            )?,
            flatten_logs: c.flatten_data,
        })
    }

    /// Runs the metric groups over a request.
    pub fn metrics(&self, req: &mut Metrics) -> Result<(), String> {
        for g in &self.metrics {
            for rm in &mut req.resource_metrics {
                let ResourceMetrics {
                    resource,
                    scope_metrics,
                    ..
                } = rm;
                let resource = &mut resource.get_or_insert_with(Default::default).attributes;
                if g.context == Context::Resource {
                    run_group(g, &mut empty_env(resource))?;
                    continue;
                }
                for sm in scope_metrics.iter_mut() {
                    let ScopeMetrics { scope, metrics, .. } = sm;
                    let scope = scope.get_or_insert_with(Default::default);
                    if g.context == Context::Scope {
                        run_group(
                            g,
                            &mut Env {
                                scope: Some(scope),
                                ..empty_env(resource)
                            },
                        )?;
                        continue;
                    }
                    for m in metrics.iter_mut() {
                        let Metric {
                            name,
                            description,
                            unit,
                            data,
                            ..
                        } = m;
                        if g.context == Context::Metric {
                            let env = Env {
                                scope: Some(scope),
                                name: Some(name),
                                description: Some(description),
                                unit: Some(unit),
                                ..empty_env(resource)
                            };
                            run_group(g, &mut { env })?;
                            continue;
                        }
                        for attrs in crate::points(data) {
                            let env = Env {
                                scope: Some(&mut *scope),
                                item: Some(attrs),
                                metric_name: Some(name.as_str()),
                                ..empty_env(&mut *resource)
                            };
                            run_group(g, &mut { env })?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs the log groups over a request.
    pub fn logs(&self, req: &mut Logs) -> Result<(), String> {
        if !self.flatten_logs || self.logs.is_empty() {
            return self.run_logs(req);
        }
        flatten(req);
        let result = self.run_logs(req);
        regroup(req);
        result
    }

    fn run_logs(&self, req: &mut Logs) -> Result<(), String> {
        for g in &self.logs {
            for rl in &mut req.resource_logs {
                let resource = &mut rl.resource.get_or_insert_with(Default::default).attributes;
                if g.context == Context::Resource {
                    run_group(g, &mut empty_env(resource))?;
                    continue;
                }
                for sl in rl.scope_logs.iter_mut() {
                    let scope = sl.scope.get_or_insert_with(Default::default);
                    if g.context == Context::Scope {
                        run_group(
                            g,
                            &mut Env {
                                scope: Some(scope),
                                ..empty_env(resource)
                            },
                        )?;
                        continue;
                    }
                    for r in sl.log_records.iter_mut() {
                        let env = Env {
                            scope: Some(&mut *scope),
                            item: Some(&mut r.attributes),
                            body: Some(&mut r.body),
                            severity_text: Some(&mut r.severity_text),
                            ..empty_env(&mut *resource)
                        };
                        run_group(g, &mut { env })?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Runs the trace groups over a request.
    pub fn traces(&self, req: &mut Traces) -> Result<(), String> {
        for g in &self.traces {
            for rs in &mut req.resource_spans {
                let resource = &mut rs.resource.get_or_insert_with(Default::default).attributes;
                if g.context == Context::Resource {
                    run_group(g, &mut empty_env(resource))?;
                    continue;
                }
                for ss in rs.scope_spans.iter_mut() {
                    let scope = ss.scope.get_or_insert_with(Default::default);
                    if g.context == Context::Scope {
                        run_group(
                            g,
                            &mut Env {
                                scope: Some(scope),
                                ..empty_env(resource)
                            },
                        )?;
                        continue;
                    }
                    for s in ss.spans.iter_mut() {
                        let env = Env {
                            scope: Some(&mut *scope),
                            item: Some(&mut s.attributes),
                            name: Some(&mut s.name),
                            ..empty_env(&mut *resource)
                        };
                        run_group(g, &mut { env })?;
                    }
                }
            }
        }
        Ok(())
    }
}
