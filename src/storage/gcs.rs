//! `backend: gcs`: Google Cloud Storage with a service account key, or the
//! runner's own Google credentials (workload identity, metadata server).
//!
//! Note for testing: object_store talks to GCS's XML API, which no
//! emulator installable here accepts writes on (fake-gcs-server has no XML
//! PUT or multipart). larder's GCS reads are tested against
//! fake-gcs-server; writes are not. GCS's S3-compatible endpoint with HMAC
//! keys (backend s3) is the tested alternative for writing.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use object_store::gcp::GoogleCloudStorageBuilder;
use url::Url;

use super::http::{CaCerts, client_options, retry_config};
use super::{Opened, Scratch};
use crate::secret::Secret;

#[derive(Clone, Debug)]
pub struct GcsOptions {
    pub bucket: String,
    /// A custom API endpoint (an emulator); `None` for storage.googleapis.com.
    pub endpoint: Option<Url>,
    pub credentials: GcsCredentials,
    pub ca_certs: CaCerts,
}

#[derive(Clone, Debug)]
pub enum GcsCredentials {
    /// A service account key (JSON text).
    KeyJson(Secret),
    /// Application default credentials or the metadata server.
    Default,
}

pub fn open(options: &GcsOptions, timeout: Duration) -> anyhow::Result<Opened> {
    let allow_http = options
        .endpoint
        .as_ref()
        .is_some_and(|e| e.scheme() == "http");
    let endpoint = options
        .endpoint
        .as_ref()
        .map(|e| e.as_str().trim_end_matches('/').to_string());
    let location = format!(
        "gs://{}{}",
        options.bucket,
        endpoint
            .as_ref()
            .map(|e| format!(" at {e}"))
            .unwrap_or_default()
    );
    let mut builder = GoogleCloudStorageBuilder::new()
        .with_bucket_name(&options.bucket)
        .with_client_options(client_options(timeout, allow_http, &options.ca_certs))
        .with_retry(retry_config(timeout));
    if let GcsCredentials::KeyJson(json) = &options.credentials {
        builder = builder.with_service_account_key(json.expose());
    }
    if let Some(endpoint) = &endpoint {
        builder = builder.with_base_url(endpoint);
    }
    let store = builder
        .build()
        .with_context(|| format!("cannot set up access to {location}"))?;
    Ok(Opened {
        store: Arc::new(store),
        location,
        scratch: Scratch::None,
    })
}
