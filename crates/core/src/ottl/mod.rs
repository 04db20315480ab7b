//! The subset of OTTL that people paste for this job: `set`, `delete_key`,
//! `delete_matching_keys`, `keep_keys`, `replace_pattern`; converters
//! `SHA256`, `Concat`, `IsMatch`, `Double`, `Int`; paths `attributes["k"]`,
//! `resource.attributes["k"]`, `scope.attributes["k"]`, `name`, `body`, …;
//! `where` with `==`, `!=`, `and`, `or`, `not`, `nil`. Statements are parsed
//! and checked against their context when the config is validated.

pub mod parse;

use crate::pdata::proto::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use regex::Regex;

use parse::{Call, Cond, Expr, Path};

/// Where a statement runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    /// Once per resource.
    Resource,
    /// Once per instrumentation scope.
    Scope,
    /// Once per metric.
    Metric,
    /// Once per metric data point.
    DataPoint,
    /// Once per log record.
    Log,
    /// Once per span.
    Span,
}

impl Context {
    /// Parses a `context:` value.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "resource" => Self::Resource,
            "scope" => Self::Scope,
            "metric" => Self::Metric,
            "datapoint" => Self::DataPoint,
            "log" => Self::Log,
            "span" => Self::Span,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Resource => "resource",
            Self::Scope => "scope",
            Self::Metric => "metric",
            Self::DataPoint => "datapoint",
            Self::Log => "log",
            Self::Span => "span",
        }
    }

    /// This context and the ones it can read from.
    fn reaches(self, other: Context) -> bool {
        use Context::*;
        let chain: &[Context] = match self {
            Resource => &[Resource],
            Scope => &[Scope, Resource],
            Metric => &[Metric, Scope, Resource],
            DataPoint => &[DataPoint, Metric, Scope, Resource],
            Log => &[Log, Scope, Resource],
            Span => &[Span, Scope, Resource],
        };
        chain.contains(&other)
    }

    /// The deepest context named by a leading path part, if any.
    pub fn deepest(names: &[&str]) -> Option<Context> {
        let order = ["datapoint", "log", "span", "metric", "scope", "resource"];
        order
            .iter()
            .find(|o| names.contains(o))
            .and_then(|o| Context::parse(o))
    }
}

/// The SHA-256 of `data` (HMAC-SHA-256 with `hmac`) as lower-case hex.
pub fn sha256_hex(data: &[u8], hmac: Option<&ring::hmac::Key>) -> String {
    let digest: Vec<u8> = match hmac {
        Some(k) => ring::hmac::sign(k, data).as_ref().to_vec(),
        None => ring::digest::digest(&ring::digest::SHA256, data)
            .as_ref()
            .to_vec(),
    };
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whose attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The data point, log record or span (or the scope/resource in those contexts).
    Item,
    /// The resource.
    Resource,
    /// The instrumentation scope.
    Scope,
}

/// A resolved reference to data.
#[derive(Clone, Debug, PartialEq)]
pub enum Ref {
    /// An attribute map, or one key of it.
    Attrs(Owner, Option<String>),
    /// Metric or span name in its own context.
    Name,
    /// The metric's name read from a data point (read-only).
    MetricName,
    /// Scope name.
    ScopeName,
    /// Metric description.
    Description,
    /// Metric unit.
    Unit,
    /// Log body.
    Body,
    /// Log severity text.
    SeverityText,
}

/// A value during evaluation.
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    /// Absent.
    Nil,
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A float.
    Double(f64),
    /// A boolean.
    Bool(bool),
    /// A list.
    List(Vec<Val>),
    /// Anything else (maps, bytes), kept as it was.
    Other(AnyValue),
}

impl Val {
    fn from_any(v: &AnyValue) -> Val {
        match &v.value {
            Some(any_value::Value::StringValue(s)) => Val::Str(s.clone()),
            Some(any_value::Value::IntValue(i)) => Val::Int(*i),
            Some(any_value::Value::DoubleValue(d)) => Val::Double(*d),
            Some(any_value::Value::BoolValue(b)) => Val::Bool(*b),
            None => Val::Nil,
            _ => Val::Other(v.clone()),
        }
    }

    fn to_any(&self) -> Option<AnyValue> {
        let v = match self {
            Val::Nil => return None,
            Val::Str(s) => any_value::Value::StringValue(s.clone()),
            Val::Int(i) => any_value::Value::IntValue(*i),
            Val::Double(d) => any_value::Value::DoubleValue(*d),
            Val::Bool(b) => any_value::Value::BoolValue(*b),
            Val::List(items) => {
                any_value::Value::ArrayValue(crate::pdata::proto::common::v1::ArrayValue {
                    values: items.iter().filter_map(Val::to_any).collect(),
                })
            }
            Val::Other(a) => return Some(a.clone()),
        };
        Some(AnyValue { value: Some(v) })
    }

    fn text(&self) -> Option<String> {
        match self {
            Val::Str(s) => Some(s.clone()),
            Val::Int(i) => Some(i.to_string()),
            Val::Double(d) => Some(d.to_string()),
            Val::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

/// A compiled value expression.
#[derive(Debug)]
enum Arg {
    Ref(Ref),
    Lit(Val),
    List(Vec<Arg>),
    Sha256(Box<Arg>),
    Concat(Vec<Arg>, String),
    IsMatch(Box<Arg>, Regex),
    Double(Box<Arg>),
    Int(Box<Arg>),
}

/// A compiled editor.
#[derive(Debug)]
enum Edit {
    Set(Ref, Arg),
    DeleteKey(Owner, String),
    DeleteMatching(Owner, Regex),
    KeepKeys(Owner, Vec<String>),
    ReplacePattern(Ref, Regex, String),
}

#[derive(Debug)]
enum CCond {
    Or(Box<CCond>, Box<CCond>),
    And(Box<CCond>, Box<CCond>),
    Not(Box<CCond>),
    Cmp(Arg, bool, Arg),
    Value(Arg),
}

/// A checked statement, ready to run in its context.
#[derive(Debug)]
pub struct Statement {
    /// The statement as written, for error messages.
    pub text: String,
    edit: Edit,
    condition: Option<CCond>,
}

/// A compile error: column and message (the caller adds the statement).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

fn cerr<T>(column: usize, message: impl Into<String>) -> Result<T, CompileError> {
    Err(CompileError {
        column,
        message: message.into(),
    })
}

const FUNCTIONS: &str = "set, delete_key, delete_matching_keys, keep_keys, replace_pattern, \
     SHA256, Concat, IsMatch, Double, Int";

fn resolve(path: &Path, ctx: Context) -> Result<Ref, CompileError> {
    let first = path.parts[0].as_str();
    let (owner_ctx, rest) = match Context::parse(first) {
        Some(c) => (c, &path.parts[1..]),
        None => (ctx, &path.parts[..]),
    };
    let shown = path.parts.join(".");
    if !ctx.reaches(owner_ctx) {
        return cerr(
            path.column,
            format!(
                "path `{shown}` cannot be used in the {} context",
                ctx.name()
            ),
        );
    }
    if path.keys.len() > 1 {
        return cerr(
            path.column,
            format!("path `{shown}`: nested keys are not supported"),
        );
    }
    let key = path.keys.first().cloned();
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let r = match (owner_ctx, rest.as_slice()) {
        (Context::Resource, ["attributes"]) => Ref::Attrs(
            if ctx == Context::Resource {
                Owner::Item
            } else {
                Owner::Resource
            },
            key,
        ),
        (Context::Scope, ["attributes"]) => Ref::Attrs(
            if ctx == Context::Scope {
                Owner::Item
            } else {
                Owner::Scope
            },
            key,
        ),
        (Context::Scope, ["name"]) => Ref::ScopeName,
        (Context::Metric, ["name"]) if ctx == Context::Metric => Ref::Name,
        (Context::Metric, ["name"]) => Ref::MetricName,
        (Context::Metric, ["description"]) if ctx == Context::Metric => Ref::Description,
        (Context::Metric, ["unit"]) if ctx == Context::Metric => Ref::Unit,
        (Context::DataPoint | Context::Log | Context::Span, ["attributes"]) => {
            Ref::Attrs(Owner::Item, key)
        }
        (Context::Log, ["body"]) => Ref::Body,
        (Context::Log, ["severity_text"]) => Ref::SeverityText,
        (Context::Span, ["name"]) => Ref::Name,
        _ => {
            return cerr(
                path.column,
                format!("unknown path `{shown}` in the {} context", ctx.name()),
            )
        }
    };
    if path.keys.len() == 1 && !matches!(r, Ref::Attrs(..)) {
        return cerr(path.column, format!("path `{shown}` takes no key"));
    }
    Ok(r)
}

fn string_lit(e: &Expr, column: usize, what: &str) -> Result<String, CompileError> {
    match e {
        Expr::Str(s) => Ok(s.clone()),
        _ => cerr(column, format!("{what} must be a string literal")),
    }
}

fn regex_lit(e: &Expr, column: usize) -> Result<Regex, CompileError> {
    let s = string_lit(e, column, "the pattern")?;
    Regex::new(&s).map_err(|e| CompileError {
        column,
        message: format!("invalid pattern `{s}`: {e}"),
    })
}

fn arity(c: &Call, n: usize) -> Result<(), CompileError> {
    if c.args.len() != n {
        return cerr(
            c.column,
            format!("{} takes {n} argument(s), got {}", c.name, c.args.len()),
        );
    }
    Ok(())
}

fn map_owner(e: &Expr, ctx: Context, column: usize) -> Result<Owner, CompileError> {
    match e {
        Expr::Path(p) => match resolve(p, ctx)? {
            Ref::Attrs(o, None) => Ok(o),
            _ => cerr(
                p.column,
                "expected an attribute map such as `attributes` (without a key)",
            ),
        },
        _ => cerr(column, "expected an attribute map such as `attributes`"),
    }
}

fn arg(e: &Expr, ctx: Context) -> Result<Arg, CompileError> {
    Ok(match e {
        Expr::Path(p) => Arg::Ref(resolve(p, ctx)?),
        Expr::Str(s) => Arg::Lit(Val::Str(s.clone())),
        Expr::Int(i) => Arg::Lit(Val::Int(*i)),
        Expr::Float(f) => Arg::Lit(Val::Double(*f)),
        Expr::Bool(b) => Arg::Lit(Val::Bool(*b)),
        Expr::Nil => Arg::Lit(Val::Nil),
        Expr::List(items) => Arg::List(
            items
                .iter()
                .map(|i| arg(i, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Expr::Call(c) => match c.name.as_str() {
            "SHA256" => {
                arity(c, 1)?;
                Arg::Sha256(Box::new(arg(&c.args[0], ctx)?))
            }
            "Concat" => {
                arity(c, 2)?;
                let Expr::List(items) = &c.args[0] else {
                    return cerr(
                        c.column,
                        "Concat takes a list of values, e.g. Concat([a, b], \"-\")",
                    );
                };
                let parts = items
                    .iter()
                    .map(|i| arg(i, ctx))
                    .collect::<Result<_, _>>()?;
                Arg::Concat(
                    parts,
                    string_lit(&c.args[1], c.column, "the Concat delimiter")?,
                )
            }
            "IsMatch" => {
                arity(c, 2)?;
                Arg::IsMatch(
                    Box::new(arg(&c.args[0], ctx)?),
                    regex_lit(&c.args[1], c.column)?,
                )
            }
            "Double" => {
                arity(c, 1)?;
                Arg::Double(Box::new(arg(&c.args[0], ctx)?))
            }
            "Int" => {
                arity(c, 1)?;
                Arg::Int(Box::new(arg(&c.args[0], ctx)?))
            }
            "set" | "delete_key" | "delete_matching_keys" | "keep_keys" | "replace_pattern" => {
                return cerr(
                    c.column,
                    format!("{} is an editor and cannot be used as a value", c.name),
                )
            }
            other => {
                return cerr(
                    c.column,
                    format!("unknown function `{other}`; available: {FUNCTIONS}"),
                )
            }
        },
    })
}

fn cond(c: &Cond, ctx: Context) -> Result<CCond, CompileError> {
    Ok(match c {
        Cond::Or(a, b) => CCond::Or(Box::new(cond(a, ctx)?), Box::new(cond(b, ctx)?)),
        Cond::And(a, b) => CCond::And(Box::new(cond(a, ctx)?), Box::new(cond(b, ctx)?)),
        Cond::Not(a) => CCond::Not(Box::new(cond(a, ctx)?)),
        Cond::Cmp(a, eq, b) => CCond::Cmp(arg(a, ctx)?, *eq, arg(b, ctx)?),
        Cond::Value(v) => CCond::Value(arg(v, ctx)?),
    })
}

fn writable(r: &Ref, column: usize) -> Result<(), CompileError> {
    match r {
        Ref::MetricName => cerr(column, "metric.name is read-only in the datapoint context"),
        Ref::Attrs(_, None) => cerr(
            column,
            "set needs an attribute key, e.g. attributes[\"user\"]",
        ),
        _ => Ok(()),
    }
}

/// Parses and checks `text` for `ctx`.
pub fn compile(text: &str, ctx: Context) -> Result<Statement, CompileError> {
    let s = parse::statement(text).map_err(|e| CompileError {
        column: e.column,
        message: e.message,
    })?;
    let c = &s.call;
    let edit = match c.name.as_str() {
        "set" => {
            arity(c, 2)?;
            let Expr::Path(p) = &c.args[0] else {
                return cerr(c.column, "set needs a path as its first argument");
            };
            let target = resolve(p, ctx)?;
            writable(&target, p.column)?;
            Edit::Set(target, arg(&c.args[1], ctx)?)
        }
        "delete_key" => {
            arity(c, 2)?;
            Edit::DeleteKey(
                map_owner(&c.args[0], ctx, c.column)?,
                string_lit(&c.args[1], c.column, "the key")?,
            )
        }
        "delete_matching_keys" => {
            arity(c, 2)?;
            Edit::DeleteMatching(
                map_owner(&c.args[0], ctx, c.column)?,
                regex_lit(&c.args[1], c.column)?,
            )
        }
        "keep_keys" => {
            arity(c, 2)?;
            let Expr::List(items) = &c.args[1] else {
                return cerr(
                    c.column,
                    "keep_keys takes a list of keys, e.g. [\"a\", \"b\"]",
                );
            };
            let keys = items
                .iter()
                .map(|i| string_lit(i, c.column, "each key"))
                .collect::<Result<_, _>>()?;
            Edit::KeepKeys(map_owner(&c.args[0], ctx, c.column)?, keys)
        }
        "replace_pattern" => {
            arity(c, 3)?;
            let Expr::Path(p) = &c.args[0] else {
                return cerr(
                    c.column,
                    "replace_pattern needs a path as its first argument",
                );
            };
            let target = resolve(p, ctx)?;
            writable(&target, p.column)?;
            Edit::ReplacePattern(
                target,
                regex_lit(&c.args[1], c.column)?,
                string_lit(&c.args[2], c.column, "the replacement")?,
            )
        }
        "SHA256" | "Concat" | "IsMatch" | "Double" | "Int" => {
            return cerr(
                c.column,
                format!(
                    "{} is a converter; a statement starts with an editor such as set",
                    c.name
                ),
            )
        }
        other => {
            return cerr(
                c.column,
                format!("unknown function `{other}`; available: {FUNCTIONS}"),
            )
        }
    };
    let condition = s.condition.as_ref().map(|c| cond(c, ctx)).transpose()?;
    Ok(Statement {
        text: text.to_string(),
        edit,
        condition,
    })
}

/// Parses a group condition (`conditions:`) for `ctx`.
pub fn compile_condition(text: &str, ctx: Context) -> Result<Condition, CompileError> {
    let c = parse::condition(text).map_err(|e| CompileError {
        column: e.column,
        message: e.message,
    })?;
    Ok(Condition(cond(&c, ctx)?))
}

/// A checked `conditions:` entry.
#[derive(Debug)]
pub struct Condition(CCond);

/// Parses a value expression (`Double(attributes["cost_usd"])`, `"1"`,
/// `attributes["n"]`) for `ctx`.
pub fn compile_value(text: &str, ctx: Context) -> Result<Value, CompileError> {
    let e = parse::expression(text).map_err(|e| CompileError {
        column: e.column,
        message: e.message,
    })?;
    Ok(Value(arg(&e, ctx)?))
}

/// A checked value expression, evaluated with [`Env::value`].
#[derive(Debug)]
pub struct Value(Arg);

/// OTTL's `Double`: numbers, numeric strings and booleans as a float;
/// anything else nil.
fn to_double(v: Val) -> Val {
    match v {
        Val::Double(d) => Val::Double(d),
        Val::Int(i) => Val::Double(i as f64),
        Val::Bool(b) => Val::Double(if b { 1.0 } else { 0.0 }),
        Val::Str(s) => s.trim().parse::<f64>().map_or(Val::Nil, Val::Double),
        _ => Val::Nil,
    }
}

/// OTTL's `Int`: integers, floats (truncated toward zero, when in range),
/// integer strings and booleans as an integer; anything else nil.
fn to_int(v: Val) -> Val {
    match v {
        Val::Int(i) => Val::Int(i),
        Val::Double(d) if d.is_finite() && d.abs() < 9.2e18 => Val::Int(d.trunc() as i64),
        Val::Bool(b) => Val::Int(i64::from(b)),
        Val::Str(s) => s.trim().parse::<i64>().map_or(Val::Nil, Val::Int),
        _ => Val::Nil,
    }
}

/// The data a statement sees: the current item and its ancestors.
pub struct Env<'a> {
    /// Resource attributes.
    pub resource: &'a mut Vec<KeyValue>,
    /// The scope, below the resource context.
    pub scope: Option<&'a mut InstrumentationScope>,
    /// The item's own attributes (data point, log record, span).
    pub item: Option<&'a mut Vec<KeyValue>>,
    /// Metric or span name, in its own context.
    pub name: Option<&'a mut String>,
    /// The metric's name, read from a data point.
    pub metric_name: Option<&'a str>,
    /// Metric description.
    pub description: Option<&'a mut String>,
    /// Metric unit.
    pub unit: Option<&'a mut String>,
    /// Log body.
    pub body: Option<&'a mut Option<AnyValue>>,
    /// Log severity text.
    pub severity_text: Option<&'a mut String>,
}

impl Env<'_> {
    fn attrs(&mut self, o: Owner) -> Option<&mut Vec<KeyValue>> {
        match o {
            Owner::Resource => Some(self.resource),
            Owner::Scope => self.scope.as_deref_mut().map(|s| &mut s.attributes),
            Owner::Item => match (self.item.as_deref_mut(), self.scope.as_deref_mut()) {
                (Some(i), _) => Some(i),
                (None, Some(s)) => Some(&mut s.attributes),
                (None, None) => Some(self.resource),
            },
        }
    }

    fn get(&mut self, r: &Ref) -> Val {
        let string = |s: Option<&String>| s.map_or(Val::Nil, |s| Val::Str(s.clone()));
        match r {
            Ref::Attrs(o, Some(k)) => self
                .attrs(*o)
                .and_then(|a| {
                    a.iter()
                        .find(|kv| &kv.key == k)
                        .and_then(|kv| kv.value.as_ref())
                        .map(Val::from_any)
                })
                .unwrap_or(Val::Nil),
            Ref::Attrs(..) => Val::Nil,
            Ref::Name => string(self.name.as_deref()),
            Ref::MetricName => self
                .metric_name
                .map_or(Val::Nil, |s| Val::Str(s.to_string())),
            Ref::ScopeName => string(self.scope.as_ref().map(|s| &s.name)),
            Ref::Description => string(self.description.as_deref()),
            Ref::Unit => string(self.unit.as_deref()),
            Ref::Body => self
                .body
                .as_ref()
                .and_then(|b| b.as_ref())
                .map_or(Val::Nil, Val::from_any),
            Ref::SeverityText => string(self.severity_text.as_deref()),
        }
    }

    fn set(&mut self, r: &Ref, v: Val) -> Result<(), String> {
        if v == Val::Nil {
            return Ok(());
        }
        let text = |v: &Val| {
            v.text()
                .ok_or_else(|| format!("cannot set a text field to {v:?}"))
        };
        match r {
            Ref::Attrs(o, Some(k)) => {
                let Some(attrs) = self.attrs(*o) else {
                    return Ok(());
                };
                let value = v.to_any();
                match attrs.iter_mut().find(|kv| &kv.key == k) {
                    Some(kv) => kv.value = value,
                    None => attrs.push(KeyValue {
                        key: k.clone(),
                        value,
                        ..Default::default()
                    }),
                }
            }
            Ref::Name => {
                if let Some(n) = self.name.as_deref_mut() {
                    *n = text(&v)?;
                }
            }
            Ref::ScopeName => {
                if let Some(s) = self.scope.as_deref_mut() {
                    s.name = text(&v)?;
                }
            }
            Ref::Description => {
                if let Some(d) = self.description.as_deref_mut() {
                    *d = text(&v)?;
                }
            }
            Ref::Unit => {
                if let Some(u) = self.unit.as_deref_mut() {
                    *u = text(&v)?;
                }
            }
            Ref::SeverityText => {
                if let Some(s) = self.severity_text.as_deref_mut() {
                    *s = text(&v)?;
                }
            }
            Ref::Body => {
                if let Some(b) = self.body.as_deref_mut() {
                    *b = v.to_any();
                }
            }
            Ref::MetricName | Ref::Attrs(_, None) => return Err("read-only target".into()),
        }
        Ok(())
    }

    fn eval(&mut self, a: &Arg) -> Val {
        match a {
            Arg::Ref(r) => self.get(r),
            Arg::Lit(v) => v.clone(),
            Arg::List(items) => Val::List(items.iter().map(|i| self.eval(i)).collect()),
            Arg::Sha256(inner) => match self.eval(inner).text() {
                Some(t) => Val::Str(sha256_hex(t.as_bytes(), None)),
                None => Val::Nil,
            },
            Arg::Concat(parts, sep) => {
                let texts: Vec<String> = parts
                    .iter()
                    .map(|p| self.eval(p).text().unwrap_or_default())
                    .collect();
                Val::Str(texts.join(sep))
            }
            Arg::IsMatch(inner, re) => {
                Val::Bool(self.eval(inner).text().is_some_and(|t| re.is_match(&t)))
            }
            Arg::Double(inner) => to_double(self.eval(inner)),
            Arg::Int(inner) => to_int(self.eval(inner)),
        }
    }

    /// Evaluates a value expression against the current item.
    pub fn value(&mut self, v: &Value) -> Val {
        self.eval(&v.0)
    }

    /// As [`Env::value`], but when the expression is `Double(x)` or
    /// `Int(x)` and `x` is present yet does not convert, `Err(x)`: the
    /// caller can tell "absent" (nil) from "not a number".
    pub fn value_or_unconverted(&mut self, v: &Value) -> Result<Val, Val> {
        let (inner, convert): (&Arg, fn(Val) -> Val) = match &v.0 {
            Arg::Double(inner) => (inner, to_double),
            Arg::Int(inner) => (inner, to_int),
            other => return Ok(self.eval(other)),
        };
        let x = self.eval(inner);
        if x == Val::Nil {
            return Ok(Val::Nil);
        }
        match convert(x.clone()) {
            Val::Nil => Err(x),
            out => Ok(out),
        }
    }

    fn check(&mut self, c: &CCond) -> bool {
        match c {
            CCond::Or(a, b) => self.check(a) || self.check(b),
            CCond::And(a, b) => self.check(a) && self.check(b),
            CCond::Not(a) => !self.check(a),
            CCond::Cmp(a, eq, b) => {
                let (x, y) = (self.eval(a), self.eval(b));
                let same = match (&x, &y) {
                    (Val::Int(i), Val::Double(d)) | (Val::Double(d), Val::Int(i)) => {
                        (*i as f64) == *d
                    }
                    _ => x == y,
                };
                same == *eq
            }
            CCond::Value(a) => self.eval(a) == Val::Bool(true),
        }
    }

    /// Whether any of `conditions` holds (true when there are none).
    pub fn any(&mut self, conditions: &[Condition]) -> bool {
        conditions.is_empty() || conditions.iter().any(|c| self.check(&c.0))
    }

    /// Runs one statement; `Err` describes a failure for `error_mode`.
    pub fn run(&mut self, s: &Statement) -> Result<(), String> {
        if let Some(c) = &s.condition {
            if !self.check(c) {
                return Ok(());
            }
        }
        match &s.edit {
            Edit::Set(target, value) => {
                let v = self.eval(value);
                self.set(target, v)
            }
            Edit::DeleteKey(o, k) => {
                if let Some(a) = self.attrs(*o) {
                    a.retain(|kv| &kv.key != k);
                }
                Ok(())
            }
            Edit::DeleteMatching(o, re) => {
                if let Some(a) = self.attrs(*o) {
                    a.retain(|kv| !re.is_match(&kv.key));
                }
                Ok(())
            }
            Edit::KeepKeys(o, keys) => {
                if let Some(a) = self.attrs(*o) {
                    a.retain(|kv| keys.contains(&kv.key));
                }
                Ok(())
            }
            Edit::ReplacePattern(target, re, with) => {
                if let Val::Str(s) = self.get(target) {
                    let replaced = re.replace_all(&s, with.as_str()).into_owned();
                    if replaced != s {
                        self.set(target, Val::Str(replaced))?;
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdata::string_attribute;

    fn eval(text: &str, attrs: Vec<KeyValue>) -> Val {
        let value = compile_value(text, Context::Log).unwrap();
        let (mut resource, mut item) = (vec![], attrs);
        let mut env = Env {
            resource: &mut resource,
            scope: None,
            item: Some(&mut item),
            name: None,
            metric_name: None,
            description: None,
            unit: None,
            body: None,
            severity_text: None,
        };
        env.value(&value)
    }

    #[test]
    fn double_and_int_convert_numbers_strings_and_booleans() {
        let int = |k: &str, v: i64| KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(v)),
            }),
            ..Default::default()
        };
        let attrs = || {
            vec![
                string_attribute("s", "2001"),
                string_attribute("f", "0.25"),
                string_attribute("bad", "12abc"),
                int("i", 7),
            ]
        };
        assert_eq!(eval(r#"Int(attributes["s"])"#, attrs()), Val::Int(2001));
        assert_eq!(
            eval(r#"Double(attributes["s"])"#, attrs()),
            Val::Double(2001.0)
        );
        assert_eq!(
            eval(r#"Double(attributes["f"])"#, attrs()),
            Val::Double(0.25)
        );
        assert_eq!(eval(r#"Int(attributes["f"])"#, attrs()), Val::Nil);
        assert_eq!(eval(r#"Int(attributes["bad"])"#, attrs()), Val::Nil);
        assert_eq!(
            eval(r#"Double(attributes["i"])"#, attrs()),
            Val::Double(7.0)
        );
        assert_eq!(
            eval(r#"Int(Double(attributes["f"]))"#, attrs()),
            Val::Int(0)
        );
        assert_eq!(eval(r#"Int(attributes["missing"])"#, attrs()), Val::Nil);
        let value = compile_value(r#"Int(attributes["bad"])"#, Context::Log).unwrap();
        let (mut resource, mut item) = (vec![], attrs());
        let mut env = Env {
            resource: &mut resource,
            scope: None,
            item: Some(&mut item),
            name: None,
            metric_name: None,
            description: None,
            unit: None,
            body: None,
            severity_text: None,
        };
        assert_eq!(
            env.value_or_unconverted(&value),
            Err(Val::Str("12abc".into()))
        );
        assert_eq!(eval(r#"Int(true)"#, attrs()), Val::Int(1));
        assert_eq!(eval(r#""1""#, attrs()), Val::Str("1".into()));
        assert_eq!(eval("1", attrs()), Val::Int(1));
        assert_eq!(
            compile_value("Int(a, b)", Context::Log)
                .unwrap_err()
                .message,
            "Int takes 1 argument(s), got 2"
        );
        assert_eq!(
            compile_value("1 2", Context::Log).unwrap_err().message,
            "unexpected number 2 after the value"
        );
    }
}
