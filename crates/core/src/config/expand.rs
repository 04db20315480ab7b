//! `${…}` references in config values, expanded after parsing as the Go
//! collector does: only string values are touched, never keys.
//!
//! - `${env:VAR}` and `${VAR}`: the variable's value; unset → empty, with a warning.
//! - `${env:VAR:-default}`: `default` when the variable is unset or empty.
//! - `$$`: a literal `$`.
//! - A value that is wholly one `${…}` takes the YAML the variable holds when
//!   that is written as a map or a list; a scalar stays as written, and is read as a
//!   number or boolean where the setting asks for one.

use figment::value::Value;

use super::ConfigError;

/// Expands every string in `value` in place. `lookup` reads a variable;
/// warnings (unset variables) are appended to `warnings`.
pub fn expand(
    value: &mut Value,
    lookup: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    expand_at(value, "", lookup, warnings)
}

fn expand_at(
    value: &mut Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match value {
        Value::Dict(_, dict) => {
            for (k, v) in dict.iter_mut() {
                expand_at(v, &join(k), lookup, warnings)?;
            }
        }
        Value::Array(_, items) => {
            for (i, v) in items.iter_mut().enumerate() {
                expand_at(v, &format!("{path}[{i}]"), lookup, warnings)?;
            }
        }
        Value::String(tag, s) if s.contains('$') => {
            let whole = is_single_reference(s);
            let expanded =
                expand_str(s, lookup, warnings).map_err(|m| ConfigError::invalid(path, m))?;
            *value = match whole {
                true => structured(&expanded).unwrap_or(Value::String(*tag, expanded)),
                false => Value::String(*tag, expanded),
            };
        }
        _ => {}
    }
    Ok(())
}

fn is_single_reference(s: &str) -> bool {
    let t = s.trim();
    t.starts_with("${") && t.ends_with('}') && t.find('}') == Some(t.len() - 1)
}

/// The value as YAML, when it is written as a map or a list: flow style
/// (`[a, b]`, `{k: v}`) or several lines. A one-line scalar such as a token
/// that happens to hold `: ` is never turned into a map.
fn structured(text: &str) -> Option<Value> {
    let t = text.trim();
    if !(t.starts_with('[') || t.starts_with('{') || t.contains('\n')) {
        return None;
    }
    match serde_yaml::from_str::<Value>(text) {
        Ok(v @ (Value::Dict(..) | Value::Array(..))) => Some(v),
        _ => None,
    }
}

/// Expands the references in one string.
pub(crate) fn expand_str(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unterminated `${{` in `{s}`"))?;
            out.push_str(&resolve(&body[..end], lookup, warnings)?);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn resolve(
    reference: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Result<String, String> {
    let spec = match reference.split_once(':') {
        Some(("env", rest)) => rest,
        Some((scheme, rest)) if !rest.starts_with('-') => {
            return Err(format!(
            "unsupported config source `{scheme}` in `${{{reference}}}` (only `env` is available)"
        ))
        }
        _ => reference,
    };
    let (name, default) = match spec.split_once(":-") {
        Some((n, d)) => (n, Some(d)),
        None => (spec, None),
    };
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "invalid environment variable name `{name}` in `${{{reference}}}`"
        ));
    }
    match (lookup(name), default) {
        (Some(v), Some(d)) if v.is_empty() => Ok(d.to_string()),
        (Some(v), _) => Ok(v),
        (None, Some(d)) => Ok(d.to_string()),
        (None, None) => {
            warnings.push(format!(
                "environment variable `{name}` is not set; using an empty value"
            ));
            Ok(String::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::value::{Dict, Tag};

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("collector.local".into()),
            "PORT" => Some("4317".into()),
            "EMPTY" => Some(String::new()),
            "LIST" => Some("[a, b]".into()),
            "MAP" => Some("{endpoint: 'x:1'}".into()),
            "TOKEN" => Some("sk-123: not a map?".into()),
            _ => None,
        }
    }

    fn run(s: &str) -> (Result<String, String>, Vec<String>) {
        let mut w = vec![];
        (expand_str(s, &env, &mut w), w)
    }

    #[test]
    fn every_reference_form() {
        assert_eq!(
            run("${env:HOST}:${PORT}").0.unwrap(),
            "collector.local:4317"
        );
        assert_eq!(run("${env:NOPE:-fallback}").0.unwrap(), "fallback");
        assert_eq!(run("${env:EMPTY:-fallback}").0.unwrap(), "fallback");
        assert_eq!(run("${env:HOST:-fallback}").0.unwrap(), "collector.local");
        assert_eq!(run("${NOPE:-plain}").0.unwrap(), "plain");
        assert_eq!(run("cost $$5 and $HOME").0.unwrap(), "cost $5 and $HOME");
        assert_eq!(run("$${env:HOST}").0.unwrap(), "${env:HOST}");
    }

    #[test]
    fn unset_variable_is_empty_with_a_warning() {
        let (r, w) = run("a${env:NOPE}b");
        assert_eq!(r.unwrap(), "ab");
        assert_eq!(
            w,
            vec!["environment variable `NOPE` is not set; using an empty value"]
        );
    }

    #[test]
    fn bad_references_are_errors() {
        assert_eq!(
            run("${file:/etc/x}").0.unwrap_err(),
            "unsupported config source `file` in `${file:/etc/x}` (only `env` is available)"
        );
        assert_eq!(
            run("${env:HOST").0.unwrap_err(),
            "unterminated `${` in `${env:HOST`"
        );
        assert_eq!(
            run("${env:9X}").0.unwrap_err(),
            "invalid environment variable name `9X` in `${env:9X}`"
        );
    }

    #[test]
    fn whole_references_take_yaml_structure_but_keep_scalars_as_written() {
        let mut dict = Dict::new();
        for (k, v) in [
            ("list", "${env:LIST}"),
            ("map", "${MAP}"),
            ("port", "${env:PORT}"),
            ("token", "${env:TOKEN}"),
        ] {
            dict.insert(k.into(), Value::from(v.to_string()));
        }
        let mut v = Value::Dict(Tag::Default, dict);
        let mut w = vec![];
        expand(&mut v, &env, &mut w).unwrap();
        let d = v.into_dict().unwrap();
        assert_eq!(d["list"].clone().into_array().unwrap().len(), 2);
        assert_eq!(
            d["map"].find_ref("endpoint").and_then(|v| v.as_str()),
            Some("x:1")
        );
        assert_eq!(d["port"].as_str(), Some("4317"));
        assert_eq!(d["token"].as_str(), Some("sk-123: not a map?"));
    }
}
