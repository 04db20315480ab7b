//! OTLP over TLS and mutual TLS, HTTP and gRPC, with certificates made by
//! the test (a CA, a server certificate for `localhost`, a client certificate).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use otelcol_core::component::{
    CreateSettings, Host, Kind, Lifecycle, ReceiverFactory, SignalConsumers,
};
use otelcol_core::consumer::{Batch, Consumer, ConsumerError};
use otelcol_core::pdata::proto::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use otelcol_core::pdata::Metrics;
use otelcol_core::ComponentId;
use otelcol_receiver_otlp::OtlpReceiverFactory;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

#[derive(Default)]
struct Count(Mutex<usize>);

#[async_trait]
impl Consumer<Metrics> for Count {
    async fn consume(&self, _: Batch<Metrics>) -> Result<(), ConsumerError> {
        *self.0.lock().unwrap() += 1;
        Ok(())
    }
}

struct Pki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
    ca_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
}

fn make_pki() -> Pki {
    let dir = std::env::temp_dir().join(format!("otelcol-tls-{}-{}", std::process::id(), port()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(vec!["client.local".to_string()]).unwrap();
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = client_params.signed_by(&client_key, &ca).unwrap();
    std::fs::write(dir.join("server.crt"), server.pem()).unwrap();
    std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
    Pki {
        dir,
        ca_pem: ca.pem(),
        ca,
        client_cert_pem: client.pem(),
        client_key_pem: client_key.serialize_pem(),
    }
}

fn port() -> u16 {
    otelcol_core::net::unused_loopback_port()
}

async fn start(
    pki: &Pki,
    mutual: bool,
) -> (Arc<Count>, Arc<dyn Lifecycle>, SocketAddr, SocketAddr) {
    let d = pki.dir.display();
    let ca = if mutual {
        format!(", client_ca_file: '{d}/ca.crt'")
    } else {
        String::new()
    };
    start_with(&format!(
        "cert_file: '{d}/server.crt', key_file: '{d}/server.key'{ca}"
    ))
    .await
}

/// The receiver on both transports with `tls: {<tls>}`.
async fn start_with(tls: &str) -> (Arc<Count>, Arc<dyn Lifecycle>, SocketAddr, SocketAddr) {
    let (http, grpc) = (port(), port());
    let tls = format!("tls: {{{tls}}}");
    let yaml = format!(
        "protocols:\n  http: {{endpoint: '127.0.0.1:{http}', {tls}}}\n  grpc: {{endpoint: '127.0.0.1:{grpc}', {tls}}}\n"
    );
    let config: otelcol_core::config::RawConfig = serde_yaml::from_str(&yaml).unwrap();
    let count = Arc::new(Count::default());
    let next = SignalConsumers {
        metrics: Some(count.clone()),
        ..Default::default()
    };
    let settings = CreateSettings::standalone(ComponentId::new("otlp"), Kind::Receiver);
    let receiver = OtlpReceiverFactory.create(settings, &config, next).unwrap();
    receiver
        .start(&Host::new(Default::default(), Default::default()))
        .await
        .unwrap();
    (
        count,
        receiver,
        format!("127.0.0.1:{http}").parse().unwrap(),
        format!("127.0.0.1:{grpc}").parse().unwrap(),
    )
}

fn client_config(pki: &Pki, with_cert: bool) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    if with_cert {
        let chain = vec![CertificateDer::from_pem_slice(pki.client_cert_pem.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(pki.client_key_pem.as_bytes()).unwrap();
        builder.with_client_auth_cert(chain, key).unwrap()
    } else {
        builder.with_no_client_auth()
    }
}

async fn https_post(addr: SocketAddr, config: rustls::ClientConfig) -> Result<u16, String> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::post("/v1/metrics")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"m","gauge":{"dataPoints":[{"asDouble":1}]}}]}]}]}"#,
        )))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    Ok(status)
}

fn one_point() -> Metrics {
    serde_json::from_str(r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"m","gauge":{"dataPoints":[{"asDouble":1}]}}]}]}]}"#).unwrap()
}

async fn grpc_export(addr: SocketAddr, pki: &Pki, with_cert: bool) -> Result<(), String> {
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("localhost");
    if with_cert {
        tls = tls.identity(Identity::from_pem(
            &pki.client_cert_pem,
            &pki.client_key_pem,
        ));
    }
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    MetricsServiceClient::new(channel)
        .export(one_point())
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn tls_serves_http_and_grpc() {
    let pki = make_pki();
    let (count, receiver, http, grpc) = start(&pki, false).await;
    assert_eq!(https_post(http, client_config(&pki, false)).await, Ok(200));
    grpc_export(grpc, &pki, false).await.expect("gRPC over TLS");
    assert_eq!(*count.0.lock().unwrap(), 2);
    let plain = tokio::time::timeout(Duration::from_secs(5), async {
        let tcp = tokio::net::TcpStream::connect(http).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        sender
            .send_request(
                http::Request::post("/v1/metrics")
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await
    })
    .await
    .expect("plain HTTP answered or closed in time");
    assert!(plain.is_err(), "plain HTTP on the TLS port is not served");
    receiver.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&pki.dir);
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate() {
    let pki = make_pki();
    let (count, receiver, http, grpc) = start(&pki, true).await;
    assert!(
        https_post(http, client_config(&pki, false)).await.is_err(),
        "no client certificate: refused"
    );
    assert_eq!(https_post(http, client_config(&pki, true)).await, Ok(200));
    assert!(
        grpc_export(grpc, &pki, false).await.is_err(),
        "no client certificate: refused"
    );
    grpc_export(grpc, &pki, true)
        .await
        .expect("gRPC with a client certificate");
    assert_eq!(*count.0.lock().unwrap(), 2);
    receiver.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&pki.dir);
}

#[tokio::test]
async fn missing_certificate_files_fail_the_start_with_the_path() {
    let yaml = "protocols:\n  http: {endpoint: '127.0.0.1:0', tls: {cert_file: /nonexistent/server.crt, key_file: /nonexistent/server.key}}\n";
    let config: otelcol_core::config::RawConfig = serde_yaml::from_str(yaml).unwrap();
    let settings = CreateSettings::standalone(ComponentId::new("otlp"), Kind::Receiver);
    let receiver = OtlpReceiverFactory
        .create(
            settings,
            &config,
            SignalConsumers {
                metrics: Some(Arc::new(Count::default())),
                ..Default::default()
            },
        )
        .unwrap();
    let err = receiver
        .start(&Host::new(Default::default(), Default::default()))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "protocols.http: reading tls.cert_file `/nonexistent/server.crt`: No such file or directory (os error 2)"
    );
}

/// A TLS handshake (ALPN h2 and http/1.1) with a client that speaks only
/// `versions`; the error text when it fails.
async fn handshake(
    addr: SocketAddr,
    pki: &Pki,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn min_and_max_version_hold_on_http_and_grpc() {
    let pki = make_pki();
    let d = pki.dir.display();
    let files = format!("cert_file: '{d}/server.crt', key_file: '{d}/server.key'");
    let (count, receiver, http, grpc) = start_with(&format!("{files}, min_version: '1.3'")).await;
    for addr in [http, grpc] {
        let refused = handshake(addr, &pki, &[&rustls::version::TLS12]).await;
        assert!(refused.is_err(), "{addr}: a TLS 1.2 client is refused");
        handshake(addr, &pki, &[&rustls::version::TLS13])
            .await
            .unwrap_or_else(|e| panic!("{addr}: a TLS 1.3 client is served: {e}"));
    }
    grpc_export(grpc, &pki, false)
        .await
        .expect("gRPC over TLS 1.3");
    assert_eq!(*count.0.lock().unwrap(), 1);
    receiver.shutdown().await.unwrap();

    let (_, receiver, http, grpc) = start_with(&format!("{files}, max_version: '1.2'")).await;
    for addr in [http, grpc] {
        let refused = handshake(addr, &pki, &[&rustls::version::TLS13]).await;
        assert!(refused.is_err(), "{addr}: a TLS 1.3-only client is refused");
        handshake(addr, &pki, &[&rustls::version::TLS12])
            .await
            .unwrap_or_else(|e| panic!("{addr}: a TLS 1.2 client is served: {e}"));
    }
    receiver.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&pki.dir);
}

#[tokio::test]
async fn inline_pem_serves_as_the_files_do() {
    let pki = make_pki();
    let cert = std::fs::read_to_string(pki.dir.join("server.crt")).unwrap();
    let key = std::fs::read_to_string(pki.dir.join("server.key")).unwrap();
    let inline = format!(
        "cert_pem: {}, key_pem: {}",
        serde_json::to_string(&cert).unwrap(),
        serde_json::to_string(&key).unwrap()
    );
    let (count, receiver, http, grpc) = start_with(&inline).await;
    assert_eq!(https_post(http, client_config(&pki, false)).await, Ok(200));
    grpc_export(grpc, &pki, false).await.expect("gRPC over TLS");
    assert_eq!(*count.0.lock().unwrap(), 2);
    receiver.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&pki.dir);
}

/// A new server certificate for `localhost` from the same CA, written over
/// the files the receiver was started with; its DER.
fn rotate(pki: &Pki) -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &pki.ca)
        .unwrap();
    std::fs::write(pki.dir.join("server.key"), key.serialize_pem()).unwrap();
    std::fs::write(pki.dir.join("server.crt"), cert.pem()).unwrap();
    cert.der().to_vec()
}

/// The leaf certificate `addr` serves.
async fn served_cert(addr: SocketAddr, pki: &Pki) -> Vec<u8> {
    let mut config = client_config(pki, false);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake");
    tls.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec()
}

#[tokio::test]
async fn reload_interval_serves_a_rotated_certificate_on_both_transports() {
    let pki = make_pki();
    let d = pki.dir.display();
    let first = std::fs::read(pki.dir.join("server.crt")).unwrap();
    let first = CertificateDer::from_pem_slice(&first).unwrap().to_vec();
    let (_, receiver, http, grpc) = start_with(&format!(
        "cert_file: '{d}/server.crt', key_file: '{d}/server.key', reload_interval: 200ms"
    ))
    .await;
    assert_eq!(served_cert(http, &pki).await, first);
    assert_eq!(served_cert(grpc, &pki).await, first);
    // A broken pair (a certificate without its key yet) keeps the old one.
    std::fs::write(pki.dir.join("server.key"), "not a key").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        served_cert(http, &pki).await,
        first,
        "a broken pair is not served"
    );
    let second = rotate(&pki);
    assert_ne!(second, first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(served_cert(http, &pki).await, second);
    assert_eq!(served_cert(grpc, &pki).await, second);
    grpc_export(grpc, &pki, false)
        .await
        .expect("gRPC on the new certificate");
    receiver.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&pki.dir);
}

/// `client_ca_file_reload`: a client CA written over `client_ca_file` is
/// used from the next check on (here every 200 ms, `reload_interval`) on
/// both transports: a client of the new CA gets in, one of the old CA no
/// longer does; a file that does not load keeps the CAs in use.
#[tokio::test]
async fn client_ca_file_reload_takes_a_rotated_client_ca() {
    let pki = make_pki();
    let d = pki.dir.display();
    let (count, receiver, http, grpc) = start_with(&format!(
        "cert_file: '{d}/server.crt', key_file: '{d}/server.key', client_ca_file: '{d}/ca.crt', client_ca_file_reload: true, reload_interval: 200ms"
    ))
    .await;
    // A client whose certificate another CA signed (it trusts the server's CA).
    let other = make_pki();
    let new_ca = other.ca_pem.clone();
    let newcomer = Pki {
        dir: other.dir.clone(),
        ca: other.ca,
        ca_pem: pki.ca_pem.clone(),
        client_cert_pem: other.client_cert_pem.clone(),
        client_key_pem: other.client_key_pem.clone(),
    };
    assert_eq!(https_post(http, client_config(&pki, true)).await, Ok(200));
    assert!(https_post(http, client_config(&newcomer, true))
        .await
        .is_err());

    std::fs::write(pki.dir.join("ca.crt"), "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        https_post(http, client_config(&pki, true)).await,
        Ok(200),
        "a file that does not load keeps the CAs in use"
    );

    std::fs::write(pki.dir.join("ca.crt"), &new_ca).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        https_post(http, client_config(&newcomer, true)).await,
        Ok(200)
    );
    assert!(
        https_post(http, client_config(&pki, true)).await.is_err(),
        "the old CA no longer signs for clients"
    );
    grpc_export(grpc, &newcomer, true)
        .await
        .expect("gRPC with a certificate of the new CA");
    assert!(grpc_export(grpc, &pki, true).await.is_err());
    assert_eq!(*count.0.lock().unwrap(), 4);
    receiver.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&pki.dir);
    let _ = std::fs::remove_dir_all(&other.dir);
}
