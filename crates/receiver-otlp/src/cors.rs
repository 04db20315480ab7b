//! CORS for OTLP/HTTP, with the Go receiver's keys and answers (the Go
//! collector serves it through `rs/cors` with credentials allowed): browser
//! and Electron-based tools send a preflight before their first export.

use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use serde::{Deserialize, Serialize};

use otelcol_core::server::{self, HttpResponse};

/// `protocols.http.cors` (Go `confighttp.CORSConfig`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins that may send: exact (`https://app.example.com`), `*` for
    /// any, or with one `*` inside (`https://*.example.com`). Empty: CORS
    /// is off, as in Go.
    pub allowed_origins: Vec<String>,
    /// Request headers a browser may send besides the ones always allowed
    /// (`Accept`, `Content-Type`, `X-Requested-With`, `Origin`); `*` for any.
    pub allowed_headers: Vec<String>,
    /// Seconds a browser may cache a preflight answer (0: not sent).
    pub max_age: u64,
}

/// Headers a browser may always send.
const ALWAYS_ALLOWED: [&str; 4] = ["accept", "content-type", "x-requested-with", "origin"];

/// Methods a preflight may ask for (`rs/cors` defaults).
const METHODS: [Method; 3] = [Method::GET, Method::POST, Method::HEAD];

impl CorsConfig {
    /// CORS is served only with at least one allowed origin (Go rule).
    pub fn enabled(&self) -> bool {
        !self.allowed_origins.is_empty()
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|p| matches(p, origin))
    }

    fn header_allowed(&self, name: &str) -> bool {
        let name = name.trim();
        name.is_empty()
            || ALWAYS_ALLOWED.iter().any(|h| h.eq_ignore_ascii_case(name))
            || self
                .allowed_headers
                .iter()
                .any(|h| h == "*" || h.eq_ignore_ascii_case(name))
    }

    /// The answer to a preflight (`OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`), or `None` when `headers` are not
    /// one. An origin, method or header not allowed gets a 204 without CORS
    /// headers, so the browser refuses to send (as `rs/cors` answers).
    pub fn preflight(&self, method: &Method, headers: &HeaderMap) -> Option<HttpResponse> {
        if !self.enabled() || method != Method::OPTIONS {
            return None;
        }
        let origin = headers.get(header::ORIGIN)?.to_str().ok()?;
        let wanted = headers
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)?
            .to_str()
            .ok()?
            .to_ascii_uppercase();
        let asked_headers = headers
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mut r = server::response(StatusCode::NO_CONTENT, "text/plain; charset=utf-8", "");
        let h = r.headers_mut();
        h.remove(header::CONTENT_TYPE);
        h.insert(
            header::VARY,
            HeaderValue::from_static(
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
        let allowed = self.origin_allowed(origin)
            && METHODS.iter().any(|m| m.as_str() == wanted)
            && asked_headers.split(',').all(|n| self.header_allowed(n));
        if !allowed {
            return Some(r);
        }
        let put = |h: &mut HeaderMap, k: header::HeaderName, v: &str| {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert(k, v);
            }
        };
        put(h, header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        put(h, header::ACCESS_CONTROL_ALLOW_METHODS, &wanted);
        if !asked_headers.trim().is_empty() {
            put(h, header::ACCESS_CONTROL_ALLOW_HEADERS, asked_headers);
        }
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        if self.max_age > 0 {
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from(self.max_age),
            );
        }
        Some(r)
    }

    /// Adds the CORS headers of an actual request's answer when its
    /// `origin` is allowed.
    pub fn decorate(&self, origin: Option<&HeaderValue>, response: &mut HttpResponse) {
        if !self.enabled() {
            return;
        }
        let h = response.headers_mut();
        h.append(header::VARY, HeaderValue::from_static("Origin"));
        let Some(origin) = origin.filter(|o| o.to_str().is_ok_and(|o| self.origin_allowed(o)))
        else {
            return;
        };
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

/// `pattern` (`*`, exact, or with one `*` inside) against `origin`,
/// ignoring ASCII case as `rs/cors` does.
fn matches(pattern: &str, origin: &str) -> bool {
    let (p, o) = (pattern.to_ascii_lowercase(), origin.to_ascii_lowercase());
    if p == "*" {
        return true;
    }
    match p.split_once('*') {
        None => p == o,
        Some((prefix, suffix)) => {
            o.len() >= prefix.len() + suffix.len() && o.starts_with(prefix) && o.ends_with(suffix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_exactly_by_wildcard_or_any() {
        assert!(matches(
            "https://app.example.com",
            "https://APP.example.com"
        ));
        assert!(!matches(
            "https://app.example.com",
            "https://app.example.com.evil"
        ));
        assert!(matches("https://*.example.com", "https://a.b.example.com"));
        assert!(!matches("https://*.example.com", "https://example.com"));
        assert!(!matches("https://*.example.com", "http://a.example.com"));
        assert!(matches("*", "null"));
    }
}
