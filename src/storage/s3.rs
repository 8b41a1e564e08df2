//! `backend: s3`: AWS S3 and S3-compatible servers (MinIO, Ceph, Garage, R2...).
//!
//! What enterprise buckets ask of a writer is added around object_store's
//! client: roles assumed through STS (`sts.rs`), server-side encryption
//! (object_store's own), a canned ACL and a storage class on the objects
//! larder creates (`S3Store` below).

use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::aws::{
    AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, AwsCredential, AwsCredentialProvider,
};
use object_store::client::{HttpConnector, ReqwestConnector};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, CopyOptions, GetOptions, GetResult, HeaderMap, HeaderValue,
    ListResult, MultipartId, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, StaticCredentialProvider, UploadPart,
};
use url::{Host, Url};

use super::http::{CaCerts, client_options, retry_config};
use super::{Opened, Scratch};
use crate::secret::Secret;
use sts::{AssumedRole, default_endpoint};

pub mod sts;
pub use sts::Role;

#[derive(Clone, Debug)]
pub struct S3Options {
    pub bucket: String,
    pub endpoint: Option<Url>,
    pub region: Option<String>,
    /// `path_style` when it was set; `None` lets the endpoint decide
    /// (`path_style_for`).
    pub path_style: Option<bool>,
    /// Static keys; `None` means the AWS credential chain.
    pub keys: Option<S3Keys>,
    /// The AWS credential chain's variables (`CREDENTIAL_CHAIN_VARS`) that
    /// are set, used when `keys` is `None`.
    pub credential_env: Vec<(String, String)>,
    /// Roles assumed in turn, each with the credentials before it: the
    /// first with `keys` or the chain (or with its own web identity token),
    /// the next (`user_role_arn`) with the first role's keys.
    pub roles: Vec<Role>,
    /// Where STS is; `None` for the region's public endpoint.
    pub sts_endpoint: Option<Url>,
    pub encryption: Option<Encryption>,
    /// A canned ACL for the objects larder creates (`x-amz-acl`).
    pub acl: Option<String>,
    /// The storage class of entries (`x-amz-storage-class`).
    pub storage_class: Option<String>,
    pub ca_certs: CaCerts,
}

#[derive(Clone, Debug)]
pub struct S3Keys {
    pub access_key: Secret,
    pub secret_key: Secret,
    pub session_token: Option<Secret>,
}

/// Server-side encryption of the objects larder writes.
#[derive(Clone, Debug, PartialEq)]
pub struct Encryption {
    /// `AES256`, `aws:kms` or `aws:kms:dsse`, as S3 spells them.
    pub algorithm: &'static str,
    /// The KMS key for `aws:kms` and `aws:kms:dsse`; `None` for the
    /// bucket's default key (or `aws/s3`).
    pub kms_key_id: Option<String>,
    /// `x-amz-server-side-encryption-bucket-key-enabled`, when set.
    pub bucket_key: Option<bool>,
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
    let client = client_options(timeout, allow_http, &options.ca_certs);
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(&options.bucket)
        .with_region(&region)
        .with_client_options(client.clone())
        .with_retry(retry_config(timeout));
    builder = with_base_credentials(builder, options);
    if let Some(credentials) = assumed_roles(options, &builder, &region, timeout)? {
        builder = builder.with_credentials(credentials);
    }
    if let Some(encryption) = &options.encryption {
        builder = with_encryption(builder, encryption);
    }
    let (path_style, why) = path_style_for(options.endpoint.as_ref(), options.path_style);
    match why {
        PathStyle::IpOverridesSetting => tracing::warn!(
            "path_style: false is ignored: the endpoint is an IP address, and a bucket cannot be \
             a subdomain of one (the AWS SDKs use path style there too)"
        ),
        PathStyle::Ip | PathStyle::Localhost => tracing::debug!(
            "s3: addressing the bucket as endpoint/bucket (path style): the endpoint is {}",
            if why == PathStyle::Ip {
                "an IP address"
            } else {
                "localhost, whose subdomains do not resolve everywhere"
            }
        ),
        PathStyle::Setting | PathStyle::Default => {}
    }
    // With a custom endpoint, address the bucket as the AWS SDKs do:
    // endpoint/bucket for path style, bucket.endpoint otherwise.
    let endpoint = match &options.endpoint {
        Some(endpoint) if path_style => Some(endpoint.clone()),
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
    builder = builder.with_virtual_hosted_style_request(!path_style);
    let setup = || format!("cannot set up S3 access to {location}");
    let plain = builder.clone().build().with_context(setup)?;
    // The ACL is a signed header on every request of the client that sends
    // it, so a second client, with the same credentials, only creates objects.
    let create = match &options.acl {
        Some(acl) => {
            let mut headers = HeaderMap::new();
            headers.insert(
                "x-amz-acl",
                HeaderValue::from_str(acl).context("acl is not a header value")?,
            );
            Some(
                builder
                    .with_client_options(client.with_default_headers(headers))
                    .with_credentials(Arc::clone(plain.credentials()))
                    .build()
                    .with_context(setup)?,
            )
        }
        None => None,
    };
    let store: Arc<dyn ObjectStore> = if create.is_none() && options.storage_class.is_none() {
        Arc::new(plain)
    } else {
        Arc::new(S3Store {
            plain,
            create,
            storage_class: options.storage_class.clone(),
        })
    };
    Ok(Opened {
        store,
        location,
        scratch: Scratch::None,
    })
}

/// Static keys, or the chain's variables for object_store to find its own.
fn with_base_credentials(mut builder: AmazonS3Builder, options: &S3Options) -> AmazonS3Builder {
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
            if let Some(sts) = &options.sts_endpoint {
                // The chain's web identity (IRSA) asks the same STS.
                builder = builder.with_config(
                    AmazonS3ConfigKey::StsEndpoint,
                    sts.as_str().trim_end_matches('/'),
                );
            }
        }
    }
    builder
}

/// The credentials of the last role in `options.roles`, each assumed with
/// the one before; `None` without roles.
fn assumed_roles(
    options: &S3Options,
    base_builder: &AmazonS3Builder,
    region: &str,
    timeout: Duration,
) -> anyhow::Result<Option<AwsCredentialProvider>> {
    if options.roles.is_empty() {
        return Ok(None);
    }
    let endpoint = options
        .sts_endpoint
        .clone()
        .unwrap_or_else(|| default_endpoint(region));
    let allow_http = endpoint.scheme() == "http";
    let client = ReqwestConnector::default()
        .connect(&client_options(timeout, allow_http, &options.ca_certs))
        .context("cannot set up the HTTP client for STS")?;
    let mut previous: Option<AwsCredentialProvider> = match &options.keys {
        Some(keys) => Some(Arc::new(StaticCredentialProvider::new(AwsCredential {
            key_id: keys.access_key.expose().to_string(),
            secret_key: keys.secret_key.expose().to_string(),
            token: keys.session_token.as_ref().map(|t| t.expose().to_string()),
        }))),
        None => None,
    };
    for role in &options.roles {
        let base = match (&role.web_identity_token, previous.take()) {
            (Some(_), _) => None,
            (None, Some(base)) => Some(base),
            // No keys: what object_store's own chain finds (IRSA, ECS,
            // instance profile), taken from a client built for nothing else.
            (None, None) => Some(Arc::clone(
                base_builder
                    .clone()
                    .build()
                    .context("cannot set up the AWS credential chain")?
                    .credentials(),
            )),
        };
        tracing::debug!(
            "s3: credentials from {} {} as session {}{}",
            if role.web_identity_token.is_some() {
                "AssumeRoleWithWebIdentity of"
            } else {
                "AssumeRole of"
            },
            role.arn,
            role.session_name,
            if role.external_id.is_some() {
                " with an external id"
            } else {
                ""
            }
        );
        previous = Some(Arc::new(AssumedRole::new(
            role.clone(),
            endpoint.clone(),
            region.to_string(),
            base,
            client.clone(),
            timeout,
        )));
    }
    Ok(previous)
}

fn with_encryption(builder: AmazonS3Builder, encryption: &Encryption) -> AmazonS3Builder {
    // object_store does not export the encryption key enum; its names parse.
    let key = |name: &str| AmazonS3ConfigKey::from_str(name).expect("object_store's own key");
    let mut builder = builder.with_config(key("aws_server_side_encryption"), encryption.algorithm);
    if let Some(id) = &encryption.kms_key_id {
        builder = builder.with_config(key("aws_sse_kms_key_id"), id);
    }
    if let Some(enabled) = encryption.bucket_key {
        builder = builder.with_config(key("aws_sse_bucket_key_enabled"), enabled.to_string());
    }
    builder
}

/// Why the bucket is addressed the way it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PathStyle {
    /// As `path_style` says.
    Setting,
    /// Not set: virtual host, as on AWS.
    Default,
    /// An IP address: always path style, as the AWS SDKs do.
    Ip,
    /// An IP address, with `path_style: false` set (and ignored).
    IpOverridesSetting,
    /// `localhost` or `*.localhost`, with `path_style` not set.
    Localhost,
}

/// Whether to address the bucket as endpoint/bucket. An IP address cannot
/// have the bucket as a subdomain, so it always means path style (the AWS
/// SDKs' endpoint rules do the same). `localhost` and `*.localhost` mean
/// path style unless `path_style: false` is set: glibc does not resolve
/// `bucket.localhost`, though a server configured for it (MinIO's
/// MINIO_DOMAIN) and systemd-resolved would.
fn path_style_for(endpoint: Option<&Url>, setting: Option<bool>) -> (bool, PathStyle) {
    let host = endpoint.and_then(Url::host);
    let is_ip = match &host {
        Some(Host::Ipv4(_) | Host::Ipv6(_)) => true,
        Some(Host::Domain(name)) => name.parse::<IpAddr>().is_ok(),
        None => false,
    };
    let is_localhost = matches!(&host, Some(Host::Domain(name))
        if name.eq_ignore_ascii_case("localhost")
            || name.to_ascii_lowercase().ends_with(".localhost"));
    match setting {
        _ if is_ip && setting == Some(false) => (true, PathStyle::IpOverridesSetting),
        Some(true) => (true, PathStyle::Setting),
        _ if is_ip => (true, PathStyle::Ip),
        Some(false) => (false, PathStyle::Setting),
        None if is_localhost => (true, PathStyle::Localhost),
        None => (false, PathStyle::Default),
    }
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

/// The S3 store with what larder's writes must carry: the storage class on
/// entries, and the canned ACL on every object created.
///
/// - The storage class goes on entries only (CreateMultipartUpload): claims
///   and damage reports live for minutes, and the infrequent-access classes
///   bill 30 days (and 128 KiB) for each object.
/// - The ACL is a signed default header of `create`, a second client used
///   for PutObject and CreateMultipartUpload (and CopyObject) only; the
///   parts, the completion, reads, lists and deletes go through `plain`, so
///   no request carries a header its API does not define.
#[derive(Debug)]
struct S3Store {
    plain: AmazonS3,
    create: Option<AmazonS3>,
    storage_class: Option<String>,
}

impl fmt::Display for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.plain, f)
    }
}

impl S3Store {
    fn creator(&self) -> &AmazonS3 {
        self.create.as_ref().unwrap_or(&self.plain)
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.creator().put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        mut opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        if let Some(class) = &self.storage_class {
            opts.attributes
                .insert(Attribute::StorageClass, AttributeValue::from(class.clone()));
        }
        let Some(create) = &self.create else {
            return self.plain.put_multipart_opts(location, opts).await;
        };
        let id = create.create_multipart_opts(location, opts).await?;
        Ok(Box::new(Upload {
            store: Arc::new(self.plain.clone()),
            location: location.clone(),
            id,
            next: 0,
            parts: Arc::new(Mutex::new(Vec::new())),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.plain.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.plain.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.plain.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.plain.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.plain.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.plain.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.creator().copy_opts(from, to, options).await
    }
}

/// A multipart upload created by the ACL client and carried on by the
/// plain one (the upload id is the bucket's, whichever client asks).
#[derive(Debug)]
struct Upload {
    store: Arc<AmazonS3>,
    location: Path,
    id: MultipartId,
    next: usize,
    parts: Arc<Mutex<Vec<(usize, PartId)>>>,
}

#[async_trait]
impl MultipartUpload for Upload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let index = self.next;
        self.next += 1;
        let store = Arc::clone(&self.store);
        let location = self.location.clone();
        let id = self.id.clone();
        let parts = Arc::clone(&self.parts);
        Box::pin(async move {
            let part = store.put_part(&location, &id, index, data).await?;
            parts.lock().expect("parts lock").push((index, part));
            Ok(())
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let mut parts = std::mem::take(&mut *self.parts.lock().expect("parts lock"));
        parts.sort_by_key(|(index, _)| *index);
        if parts.len() != self.next || parts.iter().enumerate().any(|(i, (index, _))| i != *index) {
            return Err(object_store::Error::Generic {
                store: "S3",
                source: format!(
                    "completing the upload of {} with {} of {} parts uploaded",
                    self.location,
                    parts.len(),
                    self.next
                )
                .into(),
            });
        }
        let parts = parts.into_iter().map(|(_, part)| part).collect();
        self.store
            .complete_multipart(&self.location, &self.id, parts)
            .await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.store.abort_multipart(&self.location, &self.id).await
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

    #[test]
    fn ip_and_localhost_endpoints_use_path_style() {
        let style =
            |endpoint: &str, setting| path_style_for(Some(&Url::parse(endpoint).unwrap()), setting);
        use PathStyle::*;
        assert_eq!(style("http://10.0.0.5:9000", None), (true, Ip));
        assert_eq!(style("http://[::1]:9000", None), (true, Ip));
        assert_eq!(
            style("http://127.0.0.1:9000", Some(false)),
            (true, IpOverridesSetting)
        );
        assert_eq!(style("http://127.0.0.1:9000", Some(true)), (true, Setting));
        assert_eq!(style("http://localhost:9000", None), (true, Localhost));
        assert_eq!(
            style("http://minio.LOCALHOST:9000", None),
            (true, Localhost)
        );
        assert_eq!(
            style("http://localhost:9000", Some(false)),
            (false, Setting)
        );
        assert_eq!(style("https://minio.example.com", None), (false, Default));
        assert_eq!(
            style("https://minio.example.com", Some(true)),
            (true, Setting)
        );
        // A name that merely starts like an address is a host name.
        assert_eq!(style("https://10.0.0.5.nip.io", None), (false, Default));
        assert_eq!(path_style_for(None, None), (false, Default));
        assert_eq!(path_style_for(None, Some(true)), (true, Setting));
    }
}
