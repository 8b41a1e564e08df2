//! `backend: s3`: AWS S3 and S3-compatible servers (MinIO, Ceph, Garage, R2...).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use url::Url;

use super::http::{CaCerts, client_options, retry_config};
use super::{Opened, Scratch};
use crate::secret::Secret;

#[derive(Clone, Debug)]
pub struct S3Options {
    pub bucket: String,
    pub endpoint: Option<Url>,
    pub region: Option<String>,
    pub path_style: bool,
    /// Static keys; `None` means the AWS credential chain.
    pub keys: Option<S3Keys>,
    /// The AWS credential chain's variables (`CREDENTIAL_CHAIN_VARS`) that
    /// are set, used when `keys` is `None`.
    pub credential_env: Vec<(String, String)>,
    pub ca_certs: CaCerts,
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
pub const CREDENTIAL_CHAIN_VARS: &[&str] = &[
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

pub fn open(options: &S3Options, timeout: Duration) -> anyhow::Result<Opened> {
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
            for (var, value) in &options.credential_env {
                if let Ok(key) = AmazonS3ConfigKey::from_str(&var.to_ascii_lowercase()) {
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
    Ok(Opened {
        store: Arc::new(store),
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
