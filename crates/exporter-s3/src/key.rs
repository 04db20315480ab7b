//! Object keys: `{prefix}/{partition}/{file_prefix}{signal}_{id}.{ext}[.gz|.zst]`,
//! the partition formatted from the data's own time.

use std::fmt::Write as _;

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
}
