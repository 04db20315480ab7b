//! Health documents computed from the status board.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use otelcol_core::status::{CollectorState, ComponentStatus, Status, StatusBoard};
use serde_json::{json, Value};

use crate::config::ComponentHealth;

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-21T10:00:00.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// The v1 document: `{"status":"Server available","upSince":…,"uptime":…}`.
pub fn v1(board: &StatusBoard) -> (bool, Value) {
    let healthy = board.state() == CollectorState::Running;
    let uptime = SystemTime::now()
        .duration_since(board.started_at())
        .unwrap_or_default();
    let doc = json!({
        "status": if healthy { "Server available" } else { "Server not available" },
        "upSince": rfc3339(board.started_at()),
        "uptime": format!("{:.3}s", uptime.as_secs_f64()),
    });
    (healthy, doc)
}

fn priority(s: &Status) -> u8 {
    match s {
        Status::Ok => 0,
        Status::Starting => 1,
        Status::RecoverableError(_) => 2,
        Status::Stopped => 3,
        Status::Stopping => 4,
        Status::PermanentError(_) => 5,
        Status::FatalError(_) => 6,
    }
}

fn component_healthy(c: &ComponentStatus, policy: &ComponentHealth, now: SystemTime) -> bool {
    match &c.event.status {
        Status::Ok | Status::Starting => true,
        Status::PermanentError(_) => !policy.include_permanent_errors,
        Status::RecoverableError(_) => {
            let age = now.duration_since(c.event.at).unwrap_or(Duration::ZERO);
            !(policy.include_recoverable_errors && age >= policy.recovery_duration)
        }
        Status::FatalError(_) | Status::Stopping | Status::Stopped => false,
    }
}

fn entry(healthy: bool, status: &Status, at: SystemTime) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("healthy".into(), healthy.into());
    m.insert("status".into(), status.go_name().into());
    if let Some(e) = status.error() {
        m.insert("error".into(), e.into());
    }
    m.insert("status_time".into(), rfc3339(at).into());
    m
}

/// The v2 document for the whole collector, or for one pipeline when
/// `pipeline` names one (`metrics`, `logs/raw`). `None` if no such pipeline.
pub fn v2(
    board: &StatusBoard,
    policy: &ComponentHealth,
    pipeline: Option<&str>,
) -> Option<(bool, Value)> {
    let now = SystemTime::now();
    let mut groups: BTreeMap<String, Vec<&ComponentStatus>> = BTreeMap::new();
    let snapshot = board.snapshot();
    for c in &snapshot {
        if c.pipelines.is_empty() {
            groups.entry("extensions".into()).or_default().push(c);
        }
        for p in &c.pipelines {
            groups.entry(p.clone()).or_default().push(c);
        }
    }
    if let Some(p) = pipeline {
        let key = format!("pipeline:{p}");
        groups.retain(|k, _| *k == key);
        if groups.is_empty() {
            return None;
        }
    }
    let running = board.state() == CollectorState::Running;
    let mut all_healthy = running;
    let mut worst = if running {
        Status::Ok
    } else {
        Status::Stopping
    };
    let mut components = serde_json::Map::new();
    for (group, members) in &groups {
        let mut g_healthy = true;
        let mut g_worst = Status::Ok;
        let mut g_at = board.started_at();
        let mut inner = serde_json::Map::new();
        for c in members {
            let h = component_healthy(c, policy, now);
            g_healthy &= h;
            if priority(&c.event.status) > priority(&g_worst) {
                g_worst = c.event.status.clone();
            }
            g_at = g_at.max(c.event.at);
            let key = format!("{}:{}", c.kind, c.id);
            inner.insert(key, Value::Object(entry(h, &c.event.status, c.event.at)));
        }
        all_healthy &= g_healthy;
        if priority(&g_worst) > priority(&worst) {
            worst = g_worst.clone();
        }
        let mut g = entry(g_healthy, &g_worst, g_at);
        g.insert("components".into(), Value::Object(inner));
        components.insert(group.clone(), Value::Object(g));
    }
    let mut doc = entry(all_healthy, &worst, now);
    doc.insert("start_time".into(), rfc3339(board.started_at()).into());
    doc.insert("components".into(), Value::Object(components));
    Some((all_healthy, Value::Object(doc)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use otelcol_core::component::Kind;
    use otelcol_core::ComponentId;

    #[test]
    fn formats_rfc3339() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_255_200_123);
        assert_eq!(rfc3339(t), "2026-11-21T10:00:00.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn v2_follows_the_component_health_policy() {
        let board = StatusBoard::new();
        let exp = ComponentId::new("multitudes");
        board.register(Kind::Exporter, exp.clone(), vec!["pipeline:metrics".into()]);
        board.register(
            Kind::Receiver,
            ComponentId::new("otlp"),
            vec!["pipeline:metrics".into()],
        );
        board.report(Kind::Receiver, &ComponentId::new("otlp"), Status::Ok);
        board.set_state(CollectorState::Running);
        board.report(
            Kind::Exporter,
            &exp,
            Status::PermanentError("401 from endpoint".into()),
        );

        let lenient = ComponentHealth::default();
        let (healthy, doc) = v2(&board, &lenient, None).unwrap();
        assert!(healthy);
        assert_eq!(doc["status"], "StatusPermanentError");
        let strict = ComponentHealth {
            include_permanent_errors: true,
            ..Default::default()
        };
        let (healthy, doc) = v2(&board, &strict, Some("metrics")).unwrap();
        assert!(!healthy);
        let exp_doc = &doc["components"]["pipeline:metrics"]["components"]["exporter:multitudes"];
        assert_eq!(exp_doc["error"], "401 from endpoint");
        assert_eq!(exp_doc["healthy"], false);
        assert!(v2(&board, &strict, Some("logs")).is_none());

        board.report(
            Kind::Exporter,
            &exp,
            Status::RecoverableError("timeout".into()),
        );
        let recoverable = ComponentHealth {
            include_recoverable_errors: true,
            recovery_duration: Duration::ZERO,
            ..Default::default()
        };
        assert!(!v2(&board, &recoverable, None).unwrap().0);
        let patient = ComponentHealth {
            include_recoverable_errors: true,
            recovery_duration: Duration::from_secs(300),
            ..Default::default()
        };
        assert!(v2(&board, &patient, None).unwrap().0);
    }
}
