//! AWS STS for `backend: s3`: temporary keys of an IAM role, as an
//! object_store `CredentialProvider`.
//!
//! object_store has web identity from a token *file* (IRSA) built in, but no
//! plain AssumeRole. This provider does both calls the drone-cache fork
//! made: `AssumeRole` (signed with the base credentials: static keys, the
//! AWS chain, or the previous role of a chain, with an optional external id)
//! and `AssumeRoleWithWebIdentity` (unsigned, with a CI-issued OIDC token
//! given as text). The keys are cached and renewed five minutes before they
//! expire, so a long rebuild never signs with expired keys.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use http::Method;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use object_store::CredentialProvider;
use object_store::aws::{AwsAuthorizer, AwsCredential, AwsCredentialProvider};
use object_store::client::{HttpClient, HttpRequest, HttpRequestBody};
use tokio::sync::Mutex;
use url::Url;

use crate::secret::Secret;

/// The session name when `assume_role_session_name` is not set: the name
/// both drone-cache and its fork used, so trust policies and CloudTrail
/// queries written for them keep matching.
pub const DEFAULT_SESSION_NAME: &str = "drone-cache";

/// How long the keys are asked for. One hour is the most a chained role
/// (a role assumed with a role's keys) may get, and what every role allows.
const DURATION_SECS: u64 = 3600;

/// Keys with less than this left are renewed before use.
const RENEW_BEFORE: Duration = Duration::from_secs(5 * 60);

/// Attempts per STS call: transport errors, throttling and 5xx are retried.
const ATTEMPTS: u32 = 4;

/// One role to assume.
#[derive(Clone, Debug, PartialEq)]
pub struct Role {
    pub arn: String,
    pub session_name: String,
    /// Sent as `ExternalId`, for trust policies that require `sts:ExternalId`.
    pub external_id: Option<Secret>,
    /// An OIDC token (a JWT): call `AssumeRoleWithWebIdentity` with it
    /// instead of a signed `AssumeRole`.
    pub web_identity_token: Option<Secret>,
}

impl Role {
    fn action(&self) -> &'static str {
        if self.web_identity_token.is_some() {
            "AssumeRoleWithWebIdentity"
        } else {
            "AssumeRole"
        }
    }
}

/// The STS endpoint for `region` when none is configured.
pub fn default_endpoint(region: &str) -> Url {
    let domain = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    Url::parse(&format!("https://sts.{region}.{domain}/")).expect("a valid URL")
}

/// Temporary keys of `role`, fetched from STS and cached.
pub struct AssumedRole {
    role: Role,
    endpoint: Url,
    region: String,
    /// Signs `AssumeRole`; `None` for web identity, which is not signed.
    base: Option<AwsCredentialProvider>,
    client: HttpClient,
    /// The most one renewal may take, retries included.
    timeout: Duration,
    cached: Mutex<Option<Cached>>,
}

enum Cached {
    Keys {
        credential: Arc<AwsCredential>,
        expires: SystemTime,
    },
    /// A refusal, given again to the requests of the next seconds instead
    /// of asking STS once for each of them.
    Failed { error: String, at: Instant },
}

/// How long a failed STS call answers for the calls after it.
const REMEMBER_FAILURE: Duration = Duration::from_secs(10);

impl fmt::Debug for AssumedRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} as {} at {}",
            self.role.action(),
            self.role.arn,
            self.role.session_name,
            self.endpoint
        )
    }
}

impl AssumedRole {
    pub fn new(
        role: Role,
        endpoint: Url,
        region: String,
        base: Option<AwsCredentialProvider>,
        client: HttpClient,
        timeout: Duration,
    ) -> AssumedRole {
        AssumedRole {
            role,
            endpoint,
            region,
            base,
            client,
            timeout,
            cached: Mutex::new(None),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} of {} (session {}) at {}",
            self.role.action(),
            self.role.arn,
            self.role.session_name,
            self.endpoint.as_str().trim_end_matches('/')
        )
    }

    fn body(&self) -> String {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("Action", self.role.action())
            .append_pair("Version", "2011-06-15")
            .append_pair("RoleArn", &self.role.arn)
            .append_pair("RoleSessionName", &self.role.session_name)
            .append_pair("DurationSeconds", &DURATION_SECS.to_string());
        if let Some(token) = &self.role.web_identity_token {
            form.append_pair("WebIdentityToken", token.expose());
        }
        if let Some(id) = &self.role.external_id {
            form.append_pair("ExternalId", id.expose());
        }
        form.finish()
    }

    async fn request(&self, body: &str) -> Result<HttpRequest, StsError> {
        let mut request = HttpRequest::new(HttpRequestBody::from(body.to_string()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self
            .endpoint
            .as_str()
            .parse()
            .map_err(|e| StsError(format!("{}: not a usable URL: {e}", self.describe())))?;
        let headers = request.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
        );
        headers.insert(ACCEPT, HeaderValue::from_static("application/xml"));
        if let Some(base) = &self.base {
            let credential = base.get_credential().await.map_err(|e| {
                StsError(format!(
                    "{}: no base credentials to sign it with: {}",
                    self.describe(),
                    crate::storage::chain(&e)
                ))
            })?;
            AwsAuthorizer::new(&credential, "sts", &self.region)
                .try_authorize(&mut request, None)
                .map_err(|e| StsError(format!("{}: cannot sign it: {e}", self.describe())))?;
        }
        Ok(request)
    }

    /// Calls STS, retrying what may pass on a second try.
    async fn fetch(&self) -> Result<(Arc<AwsCredential>, SystemTime), StsError> {
        let body = self.body();
        let mut last = String::new();
        // Whether STS answered (a refusal) rather than not being reached.
        let mut answered = false;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            // Signed again each time: the signature carries the time.
            let request = self.request(&body).await?;
            let response = match self.client.execute(request).await {
                Ok(response) => response,
                Err(e) => {
                    last = crate::storage::chain(&e);
                    continue;
                }
            };
            let status = response.status();
            let text = match response.into_body().bytes().await {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(e) => {
                    last = crate::storage::chain(&e);
                    continue;
                }
            };
            if status.is_success() {
                return parse_credentials(&text)
                    .ok_or_else(|| {
                        StsError(format!(
                            "{}: the answer holds no credentials (HTTP {status})",
                            self.describe()
                        ))
                    })
                    .map(|(credential, expires)| {
                        (
                            Arc::new(credential),
                            expires.unwrap_or_else(|| {
                                // Unreadable expiry: renew well before any role's least.
                                SystemTime::now() + Duration::from_secs(15 * 60)
                            }),
                        )
                    });
            }
            answered = true;
            let code = tag(&text, "Code").unwrap_or_default();
            let message = tag(&text, "Message").unwrap_or_default();
            last = match (code.is_empty(), message.is_empty()) {
                (true, true) => format!("HTTP {status}"),
                _ => format!("HTTP {status}: {code}: {message}"),
            };
            let transient = status.is_server_error()
                || status.as_u16() == 429
                || code.contains("Throttl")
                || code == "IDPCommunicationError";
            if !transient {
                break;
            }
        }
        let last = last.trim_end_matches('.');
        if !answered {
            // Not reached: the storage error's own hints (DNS, refused,
            // timeout) apply to what follows.
            return Err(StsError(format!("{} failed: {last}", self.describe())));
        }
        Err(StsError(format!(
            "{} failed: {last}. Check that {} may assume the role: the role's trust policy{} \
             and, for a custom sts_endpoint, the endpoint and region",
            self.describe(),
            if self.role.web_identity_token.is_some() {
                "the OIDC token in oidc_token_id (its issuer and audience)"
            } else {
                "the base credentials"
            },
            if self.role.external_id.is_some() {
                ", the external id"
            } else {
                ""
            }
        )))
    }
}

#[async_trait]
impl CredentialProvider for AssumedRole {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let failed = |error: String| object_store::Error::Generic {
            store: "S3",
            source: Box::new(StsError(error)),
        };
        let mut cached = self.cached.lock().await;
        match cached.as_ref() {
            Some(Cached::Keys {
                credential,
                expires,
            }) if expires
                .duration_since(SystemTime::now())
                .is_ok_and(|left| left > RENEW_BEFORE) =>
            {
                return Ok(Arc::clone(credential));
            }
            Some(Cached::Failed { error, at }) if at.elapsed() < REMEMBER_FAILURE => {
                return Err(failed(error.clone()));
            }
            _ => {}
        }
        let fetched = tokio::time::timeout(self.timeout, self.fetch())
            .await
            .unwrap_or_else(|_| {
                Err(StsError(format!(
                    "{} did not answer within backend_operation_timeout ({})",
                    self.describe(),
                    humantime::format_duration(self.timeout)
                )))
            });
        match fetched {
            Ok((credential, expires)) => {
                tracing::debug!(
                    "s3: {} gave keys valid until {}",
                    self.describe(),
                    humantime::format_rfc3339_seconds(expires)
                );
                *cached = Some(Cached::Keys {
                    credential: Arc::clone(&credential),
                    expires,
                });
                Ok(credential)
            }
            Err(StsError(error)) => {
                *cached = Some(Cached::Failed {
                    error: error.clone(),
                    at: Instant::now(),
                });
                Err(failed(error))
            }
        }
    }
}

/// A failed STS call, described without any secret.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StsError(String);

/// The keys and their expiry in an `AssumeRole(WithWebIdentity)Response`.
fn parse_credentials(xml: &str) -> Option<(AwsCredential, Option<SystemTime>)> {
    let credentials = section(xml, "Credentials")?;
    let credential = AwsCredential {
        key_id: tag(credentials, "AccessKeyId")?,
        secret_key: tag(credentials, "SecretAccessKey")?,
        token: tag(credentials, "SessionToken"),
    };
    let expires = tag(credentials, "Expiration").and_then(|text| {
        chrono::DateTime::parse_from_rfc3339(&text)
            .ok()
            .map(SystemTime::from)
    });
    Some((credential, expires))
}

/// The text between `<name>` and `</name>` (the first such element).
fn section<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(&xml[start..end])
}

/// An element's text, with XML's character entities decoded.
fn tag(xml: &str, name: &str) -> Option<String> {
    let text = section(xml, name)?.trim();
    Some(
        text.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = r#"<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleResult>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/cache/drone-cache</Arn>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>FwoG&amp;token</SessionToken>
      <SecretAccessKey>wJalr/secret+key</SecretAccessKey>
      <Expiration>2031-07-15T23:28:33.359Z</Expiration>
      <AccessKeyId>ASIAEXAMPLE</AccessKeyId>
    </Credentials>
  </AssumeRoleResult>
</AssumeRoleResponse>"#;

    #[test]
    fn reads_the_keys_and_their_expiry() {
        let (credential, expires) = parse_credentials(ANSWER).unwrap();
        assert_eq!(credential.key_id, "ASIAEXAMPLE");
        assert_eq!(credential.secret_key, "wJalr/secret+key");
        assert_eq!(credential.token.as_deref(), Some("FwoG&token"));
        let expires = expires.unwrap();
        assert_eq!(
            humantime::format_rfc3339_seconds(expires).to_string(),
            "2031-07-15T23:28:33Z"
        );
        assert!(parse_credentials("<ErrorResponse/>").is_none());
    }

    #[test]
    fn error_answers_name_code_and_message() {
        let xml = "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>\
                   <Message>not authorized to perform: sts:AssumeRole</Message></Error></ErrorResponse>";
        assert_eq!(tag(xml, "Code").unwrap(), "AccessDenied");
        assert_eq!(
            tag(xml, "Message").unwrap(),
            "not authorized to perform: sts:AssumeRole"
        );
    }

    #[test]
    fn the_request_carries_role_session_and_external_id() {
        let role = Role {
            arn: "arn:aws:iam::1:role/cache".into(),
            session_name: "larder build".into(),
            external_id: Some(Secret::new("ext&1")),
            web_identity_token: None,
        };
        let provider = AssumedRole::new(
            role.clone(),
            default_endpoint("eu-west-1"),
            "eu-west-1".into(),
            None,
            object_store::client::HttpClient::new(NoService),
            Duration::from_secs(1),
        );
        assert_eq!(
            provider.body(),
            "Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fcache\
             &RoleSessionName=larder+build&DurationSeconds=3600&ExternalId=ext%261"
        );
        assert_eq!(
            provider.endpoint.as_str(),
            "https://sts.eu-west-1.amazonaws.com/"
        );
        // Nothing secret in what is printed.
        let web = AssumedRole::new(
            Role {
                web_identity_token: Some(Secret::new("eyJhbGciOi.jwt")),
                ..role
            },
            default_endpoint("cn-north-1"),
            "cn-north-1".into(),
            None,
            object_store::client::HttpClient::new(NoService),
            Duration::from_secs(1),
        );
        assert!(web.body().contains("WebIdentityToken=eyJhbGciOi.jwt"));
        let shown = format!("{web:?} {}", web.describe());
        assert!(!shown.contains("eyJ") && !shown.contains("ext"), "{shown}");
        assert!(shown.contains("sts.cn-north-1.amazonaws.com.cn"), "{shown}");
    }

    #[derive(Debug)]
    struct NoService;

    #[async_trait]
    impl object_store::client::HttpService for NoService {
        async fn call(
            &self,
            _: HttpRequest,
        ) -> Result<object_store::client::HttpResponse, object_store::client::HttpError> {
            unreachable!("no request in this test")
        }
    }
}
