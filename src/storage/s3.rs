//! `backend: s3`: AWS S3 and S3-compatible servers (MinIO, Ceph, Garage, R2...).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::{Certificate, ClientOptions, RetryConfig};
use url::Url;

use super::{Scratch, Store};
use crate::settings::Secret;

#[derive(Clone, Debug)]
pub struct S3Options {
    pub bucket: String,
    pub endpoint: Option<Url>,
    pub region: Option<String>,
    pub path_style: bool,
    /// Static keys; `None` means the AWS credential chain.
    pub keys: Option<S3Keys>,
    pub ca_certs: CaCerts,
}

/// CA certificates from the `ca_cert` setting, trusted for https besides
/// the system's (the image's bundle). Shared by the HTTP backends.
#[derive(Clone, Default)]
pub struct CaCerts {
    /// Where they came from, for messages: "ca_cert", "ca_cert file /x.pem".
    pub origin: String,
    pub certs: Vec<Certificate>,
}

impl std::fmt::Debug for CaCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.certs.len() {
            0 => f.write_str("none"),
            n => write!(f, "{n} from {}", self.origin),
        }
    }
}

#[derive(Clone, Debug)]
pub struct S3Keys {
    pub access_key: Secret,
    pub secret_key: Secret,
    pub session_token: Option<Secret>,
}

/// AWS credential-chain variables passed through when no static keys are set:
/// web identity (EKS IRSA), ECS and EKS Pod Identity container credentials,
/// and the instance metadata service.
const CREDENTIAL_CHAIN_VARS: &[&str] = &[
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_ENDPOINT_URL_STS",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_METADATA_ENDPOINT",
    "AWS_IMDSV1_FALLBACK",
];

pub fn open(options: &S3Options, timeout: Duration) -> anyhow::Result<Store> {
    let region = options.region.clone().unwrap_or_else(|| "us-east-1".into());
    let allow_http = options
        .endpoint
        .as_ref()
        .is_some_and(|e| e.scheme() == "http");
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(&options.bucket)
        .with_region(&region)
        .with_client_options(client_options(timeout, allow_http, &options.ca_certs))
        .with_retry(retry_config(timeout));
    match &options.keys {
        Some(keys) => {
            builder = builder
                .with_access_key_id(keys.access_key.expose())
                .with_secret_access_key(keys.secret_key.expose());
            if let Some(token) = &keys.session_token {
                builder = builder.with_token(token.expose());
            }
        }
        None => {
            for var in CREDENTIAL_CHAIN_VARS {
                if let (Ok(value), Ok(key)) = (
                    std::env::var(var),
                    AmazonS3ConfigKey::from_str(&var.to_ascii_lowercase()),
                ) {
                    builder = builder.with_config(key, value);
                }
            }
        }
    }
    // With a custom endpoint, address the bucket as the AWS SDKs do:
    // endpoint/bucket for path style, bucket.endpoint otherwise.
    let endpoint = match &options.endpoint {
        Some(endpoint) if options.path_style => Some(endpoint.clone()),
        Some(endpoint) => Some(virtual_host(endpoint, &options.bucket)?),
        None => None,
    };
    let location = match &endpoint {
        Some(endpoint) => {
            let endpoint = endpoint.as_str().trim_end_matches('/');
            builder = builder.with_endpoint(endpoint);
            format!("s3://{} at {endpoint}", options.bucket)
        }
        None => format!("s3://{} ({region})", options.bucket),
    };
    // object_store expects the bucket in a virtual-hosted endpoint already.
    builder = builder.with_virtual_hosted_style_request(!options.path_style);
    let store = builder
        .build()
        .with_context(|| format!("cannot set up S3 access to {location}"))?;
    Ok(Store {
        inner: Arc::new(store),
        backend: "s3",
        location,
        scratch: Scratch::None,
    })
}

/// `https://bucket.host:port`, as the AWS SDKs address a bucket on a custom
/// endpoint when path style is off.
fn virtual_host(endpoint: &Url, bucket: &str) -> anyhow::Result<Url> {
    let host = endpoint.host_str().unwrap_or_default();
    let mut url = endpoint.clone();
    url.set_host(Some(&format!("{bucket}.{host}")))
        .with_context(|| {
            format!("bucket '{bucket}' cannot be used as a host name; set path_style: true")
        })?;
    Ok(url)
}

/// Every request is bounded by the operation timeout; connecting by at most
/// 10 s. Certificates from `ca_cert` are trusted on top of the system's.
pub(crate) fn client_options(timeout: Duration, allow_http: bool, ca: &CaCerts) -> ClientOptions {
    let mut options = ClientOptions::new()
        .with_timeout(timeout)
        .with_connect_timeout(timeout.min(Duration::from_secs(10)))
        .with_allow_http(allow_http)
        .with_user_agent(
            concat!("larder/", env!("CARGO_PKG_VERSION"))
                .parse()
                .expect("static user agent is a valid header"),
        );
    for cert in &ca.certs {
        options = options.with_root_certificate(cert.clone());
    }
    options
}

/// A few retries for transient errors, all within the operation timeout.
pub(crate) fn retry_config(timeout: Duration) -> RetryConfig {
    RetryConfig {
        max_retries: 3,
        retry_timeout: timeout,
        ..RetryConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_host_prefixes_the_bucket() {
        let url = Url::parse("https://minio.example.com:9000").unwrap();
        assert_eq!(
            virtual_host(&url, "ci-cache").unwrap().as_str(),
            "https://ci-cache.minio.example.com:9000/"
        );
    }
}
