//! `backend: azure`: Azure Blob Storage, with an account key or a Microsoft
//! Entra login (client secret, workload identity, managed identity). The
//! container setting is honoured (drone-cache's was silently ignored), and a
//! custom endpoint covers Azurite and sovereign clouds.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use http::Method;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use object_store::CredentialProvider;
use object_store::azure::{AzureCredential, MicrosoftAzureBuilder, authority_hosts};
use object_store::client::{
    HttpClient, HttpConnector, HttpRequest, HttpRequestBody, ReqwestConnector,
};
use tokio::sync::Mutex;
use url::Url;

use super::http::{CaCerts, client_options, retry_config};
use super::{Opened, Scratch};
use crate::secret::Secret;

#[derive(Clone, Debug)]
pub struct AzureOptions {
    pub account: String,
    pub auth: AzureAuth,
    pub container: String,
    /// The account's blob endpoint; `None` for https://<account>.blob.core.windows.net.
    pub endpoint: Option<Url>,
    /// Microsoft Entra's endpoint; `None` for https://login.microsoftonline.com.
    pub authority_host: Option<Url>,
    pub ca_certs: CaCerts,
}

/// How larder logs in to the storage account.
#[derive(Clone, Debug)]
pub enum AzureAuth {
    /// The account key (shared key).
    Key(Secret),
    /// A service principal's client secret.
    ClientSecret {
        client_id: String,
        tenant_id: String,
        secret: Secret,
    },
    /// Workload identity federation: a token from elsewhere (AKS, the CI
    /// server) exchanged for one of the app registration `client_id`.
    WorkloadIdentity {
        client_id: String,
        tenant_id: String,
        token: FederatedToken,
    },
    /// The managed identity of where larder runs; `client_id` picks a
    /// user-assigned one.
    ManagedIdentity {
        client_id: Option<String>,
        endpoint: Option<String>,
    },
}

#[derive(Clone, Debug)]
pub enum FederatedToken {
    /// A file, re-read at each renewal (AKS writes it).
    File(String),
    /// The token itself (`oidc_token_id`).
    Token(Secret),
}

impl fmt::Display for AzureAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AzureAuth::Key(_) => f.write_str("the account key"),
            AzureAuth::ClientSecret {
                client_id,
                tenant_id,
                ..
            } => write!(f, "the client secret of {client_id} in tenant {tenant_id}"),
            AzureAuth::WorkloadIdentity {
                client_id,
                tenant_id,
                token,
            } => write!(
                f,
                "workload identity {client_id} in tenant {tenant_id}, with {}",
                match token {
                    FederatedToken::File(path) => format!("the token in {path}"),
                    FederatedToken::Token(_) => "the token in oidc_token_id".to_string(),
                }
            ),
            AzureAuth::ManagedIdentity { client_id, .. } => match client_id {
                Some(id) => write!(f, "the managed identity {id}"),
                None => f.write_str("the managed identity"),
            },
        }
    }
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
    let client = client_options(timeout, allow_http, &options.ca_certs);
    let mut builder = MicrosoftAzureBuilder::new()
        .with_account(&options.account)
        .with_container_name(&options.container)
        .with_client_options(client)
        .with_retry(retry_config(timeout));
    let authority = options
        .authority_host
        .as_ref()
        .map(|a| a.as_str().trim_end_matches('/').to_string());
    if let Some(authority) = &authority {
        builder = builder.with_authority_host(authority);
    }
    tracing::debug!("azure: logging in with {}", options.auth);
    builder = match &options.auth {
        AzureAuth::Key(key) => builder.with_access_key(key.expose()),
        AzureAuth::ClientSecret {
            client_id,
            tenant_id,
            secret,
        } => builder
            .with_credential_type("client_secret")
            .with_client_secret_authorization(client_id, secret.expose(), tenant_id),
        AzureAuth::WorkloadIdentity {
            client_id,
            tenant_id,
            token: FederatedToken::File(path),
        } => builder
            .with_credential_type("workload_identity")
            .with_client_id(client_id)
            .with_tenant_id(tenant_id)
            .with_federated_token_file(path),
        AzureAuth::WorkloadIdentity {
            client_id,
            tenant_id,
            token: FederatedToken::Token(token),
        } => {
            // object_store reads federated tokens from files only; this one
            // is exchanged here, with the same request.
            let http = ReqwestConnector::default()
                .connect(&client_options(
                    timeout,
                    authority
                        .as_deref()
                        .is_some_and(|a| a.starts_with("http://")),
                    &options.ca_certs,
                ))
                .context("cannot set up the HTTP client for Microsoft Entra")?;
            builder.with_credentials(Arc::new(ClientAssertion {
                token_url: format!(
                    "{}/{tenant_id}/oauth2/v2.0/token",
                    authority
                        .as_deref()
                        .unwrap_or(authority_hosts::AZURE_PUBLIC_CLOUD)
                ),
                client_id: client_id.clone(),
                assertion: token.clone(),
                client: http,
                timeout,
                cached: Mutex::new(None),
            }))
        }
        AzureAuth::ManagedIdentity {
            client_id,
            endpoint,
        } => {
            let mut builder = builder.with_credential_type("managed_identity");
            if let Some(id) = client_id {
                builder = builder.with_client_id(id);
            }
            if let Some(endpoint) = endpoint {
                builder = builder.with_msi_endpoint(endpoint);
            }
            builder
        }
    };
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

/// Microsoft Entra's client-credentials grant with a federated token as the
/// client assertion: what object_store's workload identity sends, with the
/// token from memory instead of a file.
struct ClientAssertion {
    token_url: String,
    client_id: String,
    assertion: Secret,
    client: HttpClient,
    /// The most one renewal may take, retries included.
    timeout: Duration,
    cached: Mutex<Option<(Arc<AzureCredential>, Instant)>>,
}

impl fmt::Debug for ClientAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "client assertion of {} at {}",
            self.client_id, self.token_url
        )
    }
}

/// The token endpoint's answer.
#[derive(serde::Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: u64,
}

/// The token endpoint's error answer.
#[derive(serde::Deserialize, Default)]
struct TokenError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

impl ClientAssertion {
    async fn fetch(&self) -> Result<(Arc<AzureCredential>, Instant), String> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", &self.client_id)
            .append_pair("scope", "https://storage.azure.com/.default")
            .append_pair(
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            )
            .append_pair("client_assertion", self.assertion.expose())
            .append_pair("grant_type", "client_credentials")
            .finish();
        let mut last = String::new();
        for attempt in 0..4u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            let mut request = HttpRequest::new(HttpRequestBody::from(body.clone()));
            *request.method_mut() = Method::POST;
            *request.uri_mut() = self
                .token_url
                .parse()
                .map_err(|e| format!("{} is not a usable URL: {e}", self.token_url))?;
            request.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
            request
                .headers_mut()
                .insert(ACCEPT, HeaderValue::from_static("application/json"));
            let response = match self.client.execute(request).await {
                Ok(response) => response,
                Err(e) => {
                    last = super::chain(&e);
                    continue;
                }
            };
            let status = response.status();
            let bytes = match response.into_body().bytes().await {
                Ok(bytes) => bytes,
                Err(e) => {
                    last = super::chain(&e);
                    continue;
                }
            };
            if status.is_success() {
                let answer: TokenAnswer = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("the answer is not a token ({e})"))?;
                return Ok((
                    Arc::new(AzureCredential::BearerToken(answer.access_token)),
                    Instant::now() + Duration::from_secs(answer.expires_in),
                ));
            }
            let error: TokenError = serde_json::from_slice(&bytes).unwrap_or_default();
            last = format!("HTTP {status}: {} {}", error.error, error.error_description)
                .trim()
                .to_string();
            if !(status.is_server_error() || status.as_u16() == 429) {
                break;
            }
        }
        Err(last)
    }
}

#[async_trait]
impl CredentialProvider for ClientAssertion {
    type Credential = AzureCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AzureCredential>> {
        let mut cached = self.cached.lock().await;
        if let Some((token, expires)) = cached.as_ref()
            && expires.saturating_duration_since(Instant::now()) > Duration::from_secs(300)
        {
            return Ok(Arc::clone(token));
        }
        let fetched = tokio::time::timeout(self.timeout, self.fetch())
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "no answer within backend_operation_timeout ({})",
                    humantime::format_duration(self.timeout)
                ))
            });
        let (token, expires) = fetched.map_err(|e| object_store::Error::Generic {
            store: "MicrosoftAzure",
            source: format!(
                "getting a token for {} with the federated token in oidc_token_id from {} \
                 failed: {e}. Check azure_client_id, azure_tenant_id and the app registration's \
                 federated credential (issuer, subject, audience)",
                self.client_id, self.token_url
            )
            .into(),
        })?;
        *cached = Some((Arc::clone(&token), expires));
        Ok(token)
    }
}
