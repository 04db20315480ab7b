//! CORS on OTLP/HTTP with a real browser: headless Chromium loads a page
//! from one loopback origin that posts OTLP/JSON to the collector on
//! another. `application/json` is not a simple content type, so the
//! browser sends a preflight first and only posts when the collector's
//! answer allows the page's origin. A page from an origin that is not
//! allowed must fail in the browser, and nothing of it may arrive.
//!
//! Needs `chromium` (Debian's package; `cargo xtask test-tools` installs it
//! where it can). Without it the test fails and says so. The browser runs
//! with a fresh profile, no background services, and every non-loopback
//! request sent to a proxy port that refuses, so nothing leaves 127.0.0.1.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use otelcol_core::pdata::proto::metrics::v1::metric::Data;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The browser: `CHROMIUM` if set, else `chromium` or `chromium-browser` on the path.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return p.into();
    }
    for name in ["chromium", "chromium-browser"] {
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "this test needs Chromium: install Debian's `chromium` package (cargo xtask test-tools does it when run as root) or set CHROMIUM to a Chromium binary"
    );
}

/// The page: posts one OTLP/JSON metrics request with a JSON content type
/// and writes what happened into the document.
fn page(collector_http: u16, value: f64) -> String {
    format!(
        r#"<!doctype html><html><body>pending<script>
const body = JSON.stringify({{resourceMetrics: [{{
  resource: {{attributes: [{{key: "service.name", value: {{stringValue: "browser-tool"}}}}]}},
  scopeMetrics: [{{metrics: [{{name: "browser.token.usage", unit: "tokens",
    sum: {{aggregationTemporality: 1, isMonotonic: true, dataPoints: [{{
      timeUnixNano: "1795255210000000000", asDouble: {value},
      attributes: [{{key: "user.email", value: {{stringValue: "ana@example.com"}}}}]}}]}}}}]}}]}}]}});
fetch("http://127.0.0.1:{collector_http}/v1/metrics", {{
  method: "POST", headers: {{"Content-Type": "application/json", "X-Team": "web"}}, body
}}).then(r => r.text().then(() => {{ document.body.textContent = "answered " + r.status; }}))
  .catch(e => {{ document.body.textContent = "refused " + e.name; }});
</script></body></html>"#
    )
}

/// A loopback listener for a page, and its port (the page's origin).
async fn page_listener() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

/// Serves `html` to every request on `listener` until aborted.
fn serve_page(listener: TcpListener, html: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let html = html.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let _ = conn.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{html}",
                    html.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    })
}

/// Loads `url` in headless Chromium and returns the document's text once
/// the page's network work is done (bounded by a virtual-time budget and
/// a 60 s wall-clock limit).
async fn load(url: &str) -> String {
    let profile = std::env::temp_dir().join(format!(
        "otelcol-browser-{}-{}",
        std::process::id(),
        free_port()
    ));
    // A proxy port that refuses: anything that is not loopback goes there.
    let dead_proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = format!(
        "--proxy-server=http://127.0.0.1:{}",
        dead_proxy.local_addr().unwrap().port()
    );
    drop(dead_proxy);
    std::fs::create_dir_all(&profile).unwrap();
    let stdout = profile.join("dom.html");
    let stderr = profile.join("stderr.txt");
    let mut child = std::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-domain-reliability",
            "--metrics-recording-only",
            &proxy,
            &format!("--user-data-dir={}", profile.join("user").display()),
            "--virtual-time-budget=15000",
            "--dump-dom",
            url,
        ])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("chromium starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let dom = std::fs::read_to_string(&stdout).unwrap_or_default();
    let errors = std::fs::read_to_string(&stderr).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        dom.contains("<body>"),
        "chromium printed no document (exit {:?}): {errors}",
        status.code()
    );
    let body = dom.split("<body>").nth(1).unwrap_or_default();
    body.split('<')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn received_values(captured: &Captured) -> Vec<f64> {
    let mut values = vec![];
    for batch in captured.metrics.lock().unwrap().iter() {
        for m in batch
            .data
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
        {
            if let Some(Data::Sum(s)) = &m.data {
                for p in &s.data_points {
                    if let Some(
                        otelcol_core::pdata::proto::metrics::v1::number_data_point::Value::AsDouble(
                            v,
                        ),
                    ) = p.value
                    {
                        values.push(v);
                    }
                }
            }
        }
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_posts_after_its_preflight_only_from_an_allowed_origin() {
    let browser = chromium();
    assert!(browser.exists(), "{}", browser.display());
    // The allowed page's origin must be known before the collector starts.
    let (allowed, allowed_port) = page_listener().await;
    let (mut service, captured, ports) = start_capture_service(&format!(
        ", cors: {{allowed_origins: ['http://127.0.0.1:{allowed_port}'], allowed_headers: [X-Team], max_age: 60}}"
    ))
    .await;

    // Allowed: the preflight passes, the post is answered 200 and its
    // point arrives.
    let page_task = serve_page(allowed, page(ports.http, 42.5));
    let seen = load(&format!("http://127.0.0.1:{allowed_port}/")).await;
    assert_eq!(seen, "answered 200");
    assert_eq!(received_values(&captured), vec![42.5]);

    // Not allowed: the browser refuses to send the post after the
    // preflight, so the page sees a network error and nothing arrives.
    let (other, other_port) = page_listener().await;
    let other_task = serve_page(other, page(ports.http, 7.0));
    let seen = load(&format!("http://127.0.0.1:{other_port}/")).await;
    assert_eq!(seen, "refused TypeError");
    assert_eq!(received_values(&captured), vec![42.5]);

    page_task.abort();
    other_task.abort();
    service.shutdown().await;
}
