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
