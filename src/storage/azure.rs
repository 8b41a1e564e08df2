//! `backend: azure`: Azure Blob Storage, with an account key. The container
//! setting is honoured (drone-cache's was silently ignored), and a custom
//! endpoint covers Azurite and sovereign clouds.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use object_store::azure::MicrosoftAzureBuilder;
use url::Url;

use super::http::{CaCerts, client_options, retry_config};
use super::{Opened, Scratch};
use crate::secret::Secret;

#[derive(Clone, Debug)]
pub struct AzureOptions {
    pub account: String,
    pub key: Secret,
    pub container: String,
    /// The account's blob endpoint; `None` for https://<account>.blob.core.windows.net.
    pub endpoint: Option<Url>,
    pub ca_certs: CaCerts,
}

pub fn open(options: &AzureOptions, timeout: Duration) -> anyhow::Result<Opened> {
    let endpoint = options
        .endpoint
        .as_ref()
        .map(|e| e.as_str().trim_end_matches('/').to_string());
    let allow_http = options
        .endpoint
        .as_ref()
        .is_some_and(|e| e.scheme() == "http");
    let location = format!(
        "container '{}' at {}",
        options.container,
        endpoint
            .clone()
            .unwrap_or_else(|| format!("https://{}.blob.core.windows.net", options.account))
    );
    let mut builder = MicrosoftAzureBuilder::new()
        .with_account(&options.account)
        .with_access_key(options.key.expose())
        .with_container_name(&options.container)
        .with_client_options(client_options(timeout, allow_http, &options.ca_certs))
        .with_retry(retry_config(timeout));
    if let Some(endpoint) = endpoint {
        builder = builder.with_endpoint(endpoint);
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
