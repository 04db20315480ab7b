//! Object keys: `{prefix}/{partition}/{file_prefix}{signal}_{id}.{ext}[.gz|.zst]`,
//! the partition formatted from the data's own time.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, FixedOffset, Local, Utc};

/// The Go exporter's default partition.
pub const DEFAULT_PARTITION_FORMAT: &str = "year=%Y/month=%m/day=%d/hour=%H/minute=%M";

#[derive(Clone, Debug, PartialEq, Eq)]
enum Zone {
    Utc,
    Local,
    Fixed(FixedOffset),
    /// An IANA zone (`Europe/Berlin`), from the system's tz database or
    /// the copy built in; its offset follows daylight saving time.
    Named(jiff::tz::TimeZone),
}

/// A validated strftime pattern and the time zone it is rendered in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionFormat {
    pattern: String,
    zone: Zone,
}

impl PartitionFormat {
    /// Parses `pattern` (strftime) and `zone` (`""`/`UTC`, `Local`, an IANA
    /// name like `Europe/Berlin`, or an offset like `+02:00`). The message
    /// names what is wrong.
    pub fn parse(pattern: &str, zone: &str) -> Result<Self, String> {
        let pattern = pattern.trim().trim_matches('/');
        if pattern.is_empty() {
            return Err(
                "is empty (the default is year=%Y/month=%m/day=%d/hour=%H/minute=%M)".into(),
            );
        }
        if StrftimeItems::new(pattern).any(|i| matches!(i, Item::Error)) {
            return Err(format!(
                "`{pattern}` is not a valid strftime pattern (use %Y, %m, %d, %H, %M, %S, %j, …)"
            ));
        }
        if pattern.split('/').any(|seg| seg == ".." || seg == ".") {
            return Err(format!("`{pattern}` must not contain `.` or `..` segments"));
        }
        let zone = match zone.trim() {
            "" | "UTC" | "utc" | "Z" => Zone::Utc,
            "Local" | "local" => Zone::Local,
            other => match other.parse::<FixedOffset>() {
                Ok(fixed) => Zone::Fixed(fixed),
                Err(_) => Zone::Named(jiff::tz::TimeZone::get(other).map_err(|_| {
                    format!("time zone `{other}` is not UTC, Local, an IANA name like Europe/Berlin or a fixed offset like +02:00")
                })?),
            },
        };
        Ok(Self {
            pattern: pattern.to_string(),
            zone,
        })
    }

    /// The partition of a moment given in nanoseconds since the epoch.
    pub fn render(&self, unix_nanos: u64) -> String {
        let secs = (unix_nanos / 1_000_000_000) as i64;
        let nanos = (unix_nanos % 1_000_000_000) as u32;
        let utc = DateTime::<Utc>::from_timestamp(secs, nanos).unwrap_or_default();
        let mut out = String::with_capacity(self.pattern.len() + 16);
        let _ = match &self.zone {
            Zone::Utc => write!(out, "{}", utc.format(&self.pattern)),
            Zone::Local => write!(out, "{}", utc.with_timezone(&Local).format(&self.pattern)),
            Zone::Fixed(o) => write!(out, "{}", utc.with_timezone(o).format(&self.pattern)),
            Zone::Named(tz) => {
                let offset = jiff::Timestamp::from_second(secs)
                    .map(|t| tz.to_offset(t).seconds())
                    .ok()
                    .and_then(FixedOffset::east_opt);
                match offset {
                    Some(o) => write!(out, "{}", utc.with_timezone(&o).format(&self.pattern)),
                    None => write!(out, "{}", utc.format(&self.pattern)),
                }
            }
        };
        out
    }
}

/// Joins the non-empty parts of a key with single `/`.
pub fn join(parts: &[&str]) -> String {
    let mut out = String::new();
    for p in parts
        .iter()
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty())
    {
        if !out.is_empty() {
            out.push('/');
        }
        out.push_str(p);
    }
    out
}

/// The file name: `{file_prefix}{signal}_{id}.{ext}{suffix}`.
pub fn file_name(file_prefix: &str, signal: &str, id: &str, ext: &str, suffix: &str) -> String {
    format!("{file_prefix}{signal}_{id}.{ext}{suffix}")
}

/// A new time-ordered id (UUID version 7), fixed for one object before its
/// first upload attempt so that a retry overwrites rather than duplicates.
pub fn new_object_id() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    let mut random = [0u8; 10];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random).is_err() {
        // No system randomness: fall back to the clock's nanoseconds and a counter.
        random = fallback_random();
    }
    b[6..].copy_from_slice(&random);
    b[6] = (b[6] & 0x0f) | 0x70; // version 7
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{byte:02x}");
    }
    s
}

fn fallback_random() -> [u8; 10] {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or_default()
        ^ COUNTER.fetch_add(1, Ordering::Relaxed).rotate_left(32);
    let mut out = [0u8; 10];
    out[..8].copy_from_slice(&n.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-21T13:47:05.5Z
    const T: u64 = 1_795_268_825_500_000_000;

    #[test]
    fn default_format_renders_in_utc() {
        let f = PartitionFormat::parse(DEFAULT_PARTITION_FORMAT, "").unwrap();
        assert_eq!(f.render(T), "year=2026/month=11/day=21/hour=13/minute=47");
    }

    #[test]
    fn fixed_offset_and_custom_pattern() {
        let f = PartitionFormat::parse("/dt=%Y-%m-%d/%H/", "+02:00").unwrap();
        assert_eq!(f.render(T), "dt=2026-11-21/15");
    }

    #[test]
    fn iana_zones_follow_daylight_saving_time() {
        let f = PartitionFormat::parse("dt=%Y-%m-%d/%H", "Europe/Berlin").unwrap();
        // 2026-11-21T13:45Z: CET, +01:00.
        assert_eq!(f.render(T), "dt=2026-11-21/14");
        // 2026-07-01T23:30Z: CEST, +02:00, already the next day in Berlin.
        assert_eq!(f.render(1_782_948_600 * 1_000_000_000), "dt=2026-07-02/01");
        let ny = PartitionFormat::parse("%H", "America/New_York").unwrap();
        assert_eq!(ny.render(T), "08");
    }

    #[test]
    fn invalid_patterns_and_zones_are_named() {
        assert_eq!(
            PartitionFormat::parse("year=%Y/%Q", "").unwrap_err(),
            "`year=%Y/%Q` is not a valid strftime pattern (use %Y, %m, %d, %H, %M, %S, %j, …)"
        );
        assert_eq!(
            PartitionFormat::parse("%Y", "Mars/Olympus").unwrap_err(),
            "time zone `Mars/Olympus` is not UTC, Local, an IANA name like Europe/Berlin or a fixed offset like +02:00"
        );
        assert!(PartitionFormat::parse("%Y/../x", "").is_err());
        assert!(PartitionFormat::parse("", "").is_err());
    }

    #[test]
    fn keys_join_without_empty_segments() {
        assert_eq!(
            join(&["", "/base/", "p", "year=2026", "f.json"]),
            "base/p/year=2026/f.json"
        );
        assert_eq!(
            file_name("ai-", "metrics", "id", "json", ".gz"),
            "ai-metrics_id.json.gz"
        );
    }

    #[test]
    fn ids_are_uuid_v7_and_distinct() {
        let (a, b) = (new_object_id(), new_object_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "7");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
    }
}
