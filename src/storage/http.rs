//! What the HTTP backends (S3, Azure, GCS) share: timeouts, retries and
//! the extra CA certificates of `ca_cert`.

use std::time::Duration;

use object_store::{Certificate, ClientOptions, RetryConfig};

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

/// Every request is bounded by the operation timeout; connecting by at most
/// 10 s. Certificates from `ca_cert` are trusted on top of the system's.
pub fn client_options(timeout: Duration, allow_http: bool, ca: &CaCerts) -> ClientOptions {
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
pub fn retry_config(timeout: Duration) -> RetryConfig {
    RetryConfig {
        max_retries: 3,
        retry_timeout: timeout,
        ..RetryConfig::default()
    }
}
