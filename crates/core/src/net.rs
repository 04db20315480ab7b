//! Loopback ports for tests and tools that must name a port before the
//! process that binds it starts.

use std::sync::atomic::{AtomicU32, Ordering};

const LOW: u32 = 20_000;
const SPAN: u32 = 12_000;

/// A TCP port on 127.0.0.1 that nothing listens on now, chosen below the
/// ephemeral range (32768 and up on Linux), so that the local end of an
/// outgoing connection cannot take it between this call and the bind that
/// follows. Each process walks its own sequence (offset by its pid) and
/// never hands out the same port twice.
pub fn unused_loopback_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = (std::process::id() % 97) * (SPAN / 97);
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (offset + n) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    // Every port in the range is taken: let the system choose.
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ports_are_distinct_below_the_ephemeral_range_and_bindable() {
        let ports: Vec<u16> = (0..50).map(|_| super::unused_loopback_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 50);
        assert!(ports.iter().all(|p| (20_000..32_000).contains(p)));
        assert!(std::net::TcpListener::bind(("127.0.0.1", ports[0])).is_ok());
    }
}

/// `url` as it may appear in a log line or printed config: a password in
/// the userinfo and every query value replaced by `***`, the fragment
/// dropped. `https://u:p@h/x?api_key=K&a` → `https://u:***@h/x?api_key=***&a`.
pub fn redact_url(url: &str) -> String {
    let url = url.split('#').next().unwrap_or_default();
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let mut out = match head.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let authority = match authority.rsplit_once('@') {
                Some((userinfo, host)) => {
                    let user = userinfo.split(':').next().unwrap_or_default();
                    if userinfo.contains(':') {
                        format!("{user}:***@{host}")
                    } else {
                        format!("***@{host}")
                    }
                }
                None => authority.to_string(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => head.to_string(),
    };
    if let Some(q) = query {
        out.push('?');
        let parts: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) => format!("{k}=***"),
                None => kv.to_string(),
            })
            .collect();
        out.push_str(&parts.join("&"));
    }
    out
}

#[cfg(test)]
mod redact_tests {
    use super::redact_url;

    #[test]
    fn secrets_in_urls_are_redacted() {
        assert_eq!(
            redact_url("https://u:p4ss@h.example:8443/x/y?api_key=K1&flag&b=2#frag"),
            "https://u:***@h.example:8443/x/y?api_key=***&flag&b=***"
        );
        assert_eq!(redact_url("http://tok@h/x"), "http://***@h/x");
        assert_eq!(
            redact_url("https://integrations.multitudes.co/ai/otel"),
            "https://integrations.multitudes.co/ai/otel"
        );
        assert_eq!(redact_url("http://h:1?k=v"), "http://h:1?k=***");
    }
}
