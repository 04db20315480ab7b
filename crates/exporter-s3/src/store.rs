//! Building the `object_store` client for each type, and the start-time
//! check that the bucket (or folder) is there and the credentials work.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{Attribute, Attributes, ClientOptions, ObjectStore, RetryConfig};

use crate::config::{FileExporterConfig, GcsExporterConfig, S3ExporterConfig};

/// Where objects go.
#[derive(Clone, Debug)]
pub struct Target {
    /// The client.
    pub store: Arc<dyn ObjectStore>,
    /// `s3://bucket`, `gs://bucket` or the folder, for messages.
    pub describe: String,
    /// Attributes set on every object (storage class).
    pub attributes: Attributes,
    /// Whether content type and encoding are stored with the object.
    pub content_headers: bool,
    /// Other buckets resources may name (`awss3` with
    /// `resource_attrs_to_s3.s3_bucket`).
    pub buckets: Option<Arc<Buckets>>,
}

/// The store could not be built.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {message}")]
pub struct StoreError {
    what: String,
    message: String,
}

fn err(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError {
        what: what.to_string(),
        message: e.to_string(),
    }
}

/// Every attempt is ours (`retry_max_attempts`), so the client never retries.
fn no_retries() -> RetryConfig {
    RetryConfig {
        max_retries: 0,
        ..RetryConfig::default()
    }
}

fn client_options(timeout: Duration, allow_http: bool) -> ClientOptions {
    ClientOptions::new()
        .with_timeout(timeout)
        .with_connect_timeout(timeout.min(Duration::from_secs(5)))
        .with_allow_http(allow_http)
}

fn install_crypto() {
    // reqwest is built without its own provider: ring serves the whole process.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A cloud target: content headers stored, described as `what [at endpoint]`.
fn cloud(
    store: Arc<dyn ObjectStore>,
    what: String,
    endpoint: &str,
    attributes: Attributes,
) -> Target {
    Target {
        store,
        describe: if endpoint.is_empty() {
            what
        } else {
            format!("{what} at {endpoint}")
        },
        attributes,
        content_headers: true,
        buckets: None,
    }
}

/// `https://host` + bucket → `https://bucket.host` (virtual-hosted style).
fn virtual_host(endpoint: &str, bucket: &str) -> String {
    match endpoint.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{bucket}.{rest}"),
        None => format!("https://{bucket}.{endpoint}"),
    }
}

/// The `awss3` client: credentials from the standard AWS chain
/// (environment, profile file, web identity, instance metadata). With
/// `resource_attrs_to_s3.s3_bucket`, the target also reaches the other
/// buckets resources name.
pub fn s3(c: &S3ExporterConfig) -> Result<Target, StoreError> {
    install_crypto();
    let u = &c.s3uploader;
    let endpoint = u.endpoint_url();
    if u.plain_http() {
        tracing::warn!(
            endpoint = %endpoint,
            "awss3: the endpoint is plain http: objects and request signatures travel unencrypted; use https:// unless this is a trusted local network"
        );
    }
    let store = s3_bucket(c, &u.s3_bucket)?;
    let mut attributes = Attributes::new();
    if !u.storage_class.is_empty() {
        attributes.insert(Attribute::StorageClass, u.storage_class.clone().into());
    }
    let mut target = cloud(
        store,
        format!("s3://{}", u.s3_bucket),
        &endpoint,
        attributes,
    );
    if !c.resource_attrs_to_s3.s3_bucket.is_empty() {
        target.buckets = Some(Arc::new(Buckets {
            config: c.clone(),
            built: Mutex::new(HashMap::new()),
        }));
    }
    Ok(target)
}

/// The client of one bucket of an `awss3` config.
fn s3_bucket(c: &S3ExporterConfig, bucket: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
    let u = &c.s3uploader;
    let what = format!("s3://{bucket}");
    let endpoint = u.endpoint_url();
    let plain = u.plain_http();
    let mut options = client_options(c.timeout, plain);
    if !u.acl.is_empty() {
        // Added before signing, so the ACL header is part of the signature.
        let mut headers = http::HeaderMap::new();
        let value = http::HeaderValue::from_str(&u.acl).map_err(|e| err(&what, e))?;
        headers.insert("x-amz-acl", value);
        options = options.with_default_headers(headers);
    }
    let mut b = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_region(&u.region)
        .with_allow_http(plain)
        .with_retry(no_retries())
        .with_client_options(options);
    if !endpoint.is_empty() {
        let (url, virtual_hosted) = if u.s3_force_path_style {
            (endpoint.clone(), false)
        } else {
            (virtual_host(&endpoint, bucket), true)
        };
        b = b
            .with_endpoint(url)
            .with_virtual_hosted_style_request(virtual_hosted);
    } else {
        b = b.with_virtual_hosted_style_request(!u.s3_force_path_style);
    }
    if !u.role_arn.is_empty() {
        if b.get_config_value(&AmazonS3ConfigKey::WebIdentityTokenFile)
            .is_none()
        {
            return Err(err(
                &what,
                "role_arn is set but AWS_WEB_IDENTITY_TOKEN_FILE is not: roles are assumed with a web identity token (EKS IRSA, ECS); \
                 to use a role from static credentials, give the role's credentials through the standard AWS chain and remove role_arn",
            ));
        }
        b = b.with_config(AmazonS3ConfigKey::RoleArn, &u.role_arn);
    }
    Ok(Arc::new(b.build().map_err(|e| err(&what, e))?))
}

/// How many clients of other buckets are kept; past it a client is built
/// for each upload (resources naming that many buckets are unusual, and
/// the values come from senders).
const KEPT_BUCKET_CLIENTS: usize = 64;

/// The clients of the buckets resources name (`resource_attrs_to_s3.s3_bucket`),
/// built on first use with the config's endpoint, region and credentials.
#[derive(Debug)]
pub struct Buckets {
    config: S3ExporterConfig,
    built: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl Buckets {
    /// The client of `bucket`.
    pub fn get(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
        let mut built = self.built.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(store) = built.get(bucket) {
            return Ok(store.clone());
        }
        let store = s3_bucket(&self.config, bucket)?;
        if built.len() < KEPT_BUCKET_CLIENTS {
            built.insert(bucket.to_string(), store.clone());
        }
        Ok(store)
    }
}

/// Whether `name` is a valid S3 bucket name: 3 to 63 lowercase letters,
/// digits, dots and hyphens, starting and ending with a letter or digit.
pub fn valid_bucket_name(name: &str) -> bool {
    let b = name.as_bytes();
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-';
    let edge = |c: Option<&u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    (3..=63).contains(&b.len()) && b.iter().all(inner) && edge(b.first()) && edge(b.last())
}

/// The `googlecloudstorage` client: a key file, else the standard Google
/// chain. With `endpoint` and no credentials at all (an emulator), requests
/// carry a placeholder bearer token.
pub fn gcs(c: &GcsExporterConfig) -> Result<Target, StoreError> {
    install_crypto();
    let what = format!("gs://{}", c.bucket_name());
    let endpoint = c.endpoint.trim().trim_end_matches('/');
    let options = client_options(c.timeout, endpoint.starts_with("http://"));
    let mut b = GoogleCloudStorageBuilder::from_env()
        .with_bucket_name(c.bucket_name())
        .with_retry(no_retries())
        .with_client_options(options);
    if !c.credentials_file.is_empty() {
        b = b.with_service_account_path(&c.credentials_file);
    }
    if !endpoint.is_empty() {
        b = b.with_base_url(endpoint);
        let chain = [
            "GOOGLE_SERVICE_ACCOUNT",
            "GOOGLE_SERVICE_ACCOUNT_PATH",
            "GOOGLE_SERVICE_ACCOUNT_KEY",
            "GOOGLE_APPLICATION_CREDENTIALS",
        ]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
        if c.credentials_file.is_empty() && !chain {
            // An emulator: a placeholder token instead of asking the metadata
            // server (object_store's `skip_signature` is not applied to uploads).
            b = b.with_bearer_token("emulator");
        }
    }
    let store = b.build().map_err(|e| err(&what, e))?;
    let mut attributes = Attributes::new();
    if !c.storage_class.is_empty() {
        attributes.insert(Attribute::StorageClass, c.storage_class.clone().into());
    }
    Ok(cloud(Arc::new(store), what, endpoint, attributes))
}

/// The `file` store: the folder is created if missing.
pub fn file(c: &FileExporterConfig) -> Result<Target, StoreError> {
    let dir = std::path::Path::new(c.directory.trim());
    std::fs::create_dir_all(dir).map_err(|e| err(&format!("creating {}", dir.display()), e))?;
    let store =
        LocalFileSystem::new_with_prefix(dir).map_err(|e| err(&dir.display().to_string(), e))?;
    Ok(Target {
        store: Arc::new(store),
        describe: dir.display().to_string(),
        attributes: Attributes::new(),
        content_headers: false,
        buckets: None,
    })
}

/// Checks at start that the bucket answers and accepts the credentials: one
/// listing of `prefix`. Write-only credentials (listing refused as
/// forbidden) pass with a warning; a missing bucket and rejected or missing
/// credentials fail with what went wrong. An endpoint that does not answer
/// now (an outage, a network not up yet) passes with a warning: what is
/// accepted waits in the sending queue and uploads are retried, so a
/// restart during an outage does not take the collector down.
pub async fn probe(target: &Target, prefix: &str, within: Duration) -> Result<(), String> {
    let path = (!prefix.is_empty()).then(|| Path::from(prefix));
    let listing = tokio::time::timeout(within, target.store.list_with_delimiter(path.as_ref()));
    let e = match listing.await {
        Ok(Ok(_)) => return Ok(()),
        Ok(Err(e)) => e,
        Err(_) => {
            tracing::warn!(
                target = %target.describe,
                "the bucket gave no answer within {}s; starting anyway (uploads are retried, what is accepted waits in the sending queue). If this persists, check that the endpoint is reachable and credentials are available (without any, the instance metadata service is tried)",
                within.as_secs()
            );
            return Ok(());
        }
    };
    // object_store reports most listing failures as `Generic`, with the
    // status and the service's error code in the text.
    let text = e.to_string();
    let has = |needles: &[&str]| needles.iter().any(|n| text.contains(n));
    let denied = matches!(e, object_store::Error::PermissionDenied { .. })
        || has(&["AccessDenied", "403 Forbidden"]);
    let rejected = matches!(e, object_store::Error::Unauthenticated { .. })
        || has(&[
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "401 Unauthorized",
        ]);
    let missing = matches!(e, object_store::Error::NotFound { .. })
        || has(&["NoSuchBucket", "404 Not Found"]);
    if rejected {
        Err(format!(
            "{}: the credentials were rejected: {e}",
            target.describe
        ))
    } else if denied {
        tracing::warn!(
            target = %target.describe,
            "cannot list the bucket ({e}); continuing, as write-only credentials cannot list"
        );
        Ok(())
    } else if missing {
        Err(format!(
            "{}: the bucket does not exist (or the endpoint serves no such bucket): {e}",
            target.describe
        ))
    } else if unreachable(&text) {
        tracing::warn!(
            target = %target.describe,
            "the bucket is unreachable now ({e}); starting anyway: uploads are retried and what is accepted waits in the sending queue"
        );
        Ok(())
    } else {
        Err(format!(
            "{}: the bucket cannot be listed (are credentials available? without any, the instance metadata service is tried): {e}",
            target.describe
        ))
    }
}

/// Whether a listing failed because the endpoint itself did not answer
/// (not the credential chain: its errors name the metadata service or
/// credentials).
fn unreachable(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    let transport = [
        "error sending request",
        "timed out",
        "connection refused",
        "connection reset",
    ]
    .iter()
    .any(|n| lower.contains(n));
    let credentials = ["credential", "169.254.169.254", "imds", "token"]
        .iter()
        .any(|n| lower.contains(n));
    transport && !credentials
}
