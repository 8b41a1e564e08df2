//! The SSH side of the SFTP backend: connect, check the host key, log in,
//! open the SFTP subsystem. Each failure says which of those went wrong.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey, decode_secret_key};
use russh_sftp::client::SftpSession;

use super::{HostKeyCheck, SftpAuth, SftpOptions};

/// A logged-in SFTP session. The SSH connection lives as long as this does.
pub struct Connection {
    pub sftp: SftpSession,
    _ssh: Handle<HostKeyChecker>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SFTP connection")
    }
}

pub async fn connect(options: &SftpOptions, timeout: Duration) -> anyhow::Result<Connection> {
    let target = format!("{}:{}", options.host, options.port);
    tokio::time::timeout(timeout, connect_inner(options, &target, timeout))
        .await
        .map_err(|_| {
            anyhow!(
                "sftp: no answer from {target} within backend_operation_timeout ({}s): \
                 the server is unreachable or stalled",
                timeout.as_secs()
            )
        })?
}

async fn connect_inner(
    options: &SftpOptions,
    target: &str,
    timeout: Duration,
) -> anyhow::Result<Connection> {
    if matches!(options.host_key, HostKeyCheck::Insecure) {
        tracing::warn!(
            "sftp: the host key of {target} is NOT checked (sftp_insecure_ignore_host_key); \
             anyone on the network path can impersonate the server and read or poison the cache"
        );
    }
    let config = Arc::new(client::Config {
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 3,
        nodelay: true,
        ..client::Config::default()
    });
    let checker = HostKeyChecker {
        check: options.host_key.clone(),
        host: options.host.clone(),
        port: options.port,
        refusal: Arc::new(Mutex::new(None)),
    };
    let refusal = Arc::clone(&checker.refusal);
    let mut ssh =
        match client::connect(config, (options.host.as_str(), options.port), checker).await {
            Ok(ssh) => ssh,
            Err(e) => {
                if let Some(reason) = refusal.lock().ok().and_then(|r| r.clone()) {
                    bail!("sftp: refusing {target}: {reason}");
                }
                bail!("sftp: cannot connect to {target}: {e}");
            }
        };
    log_in(&mut ssh, options, target).await?;
    let channel = ssh
        .channel_open_session()
        .await
        .with_context(|| format!("sftp: cannot open a session on {target}"))?;
    channel
        .request_subsystem(true, "sftp")
        .await
        .with_context(|| format!("sftp: {target} does not offer the sftp subsystem"))?;
    let config = russh_sftp::client::Config {
        request_timeout_secs: timeout.as_secs().max(1),
        ..russh_sftp::client::Config::default()
    };
    let sftp = SftpSession::new_with_config(channel.into_stream(), config)
        .await
        .with_context(|| format!("sftp: cannot start SFTP on {target}"))?;
    Ok(Connection { sftp, _ssh: ssh })
}

async fn log_in(
    ssh: &mut Handle<HostKeyChecker>,
    options: &SftpOptions,
    target: &str,
) -> anyhow::Result<()> {
    let user = &options.username;
    match &options.auth {
        SftpAuth::Password(password) => {
            let result = ssh
                .authenticate_password(user, password.expose())
                .await
                .with_context(|| format!("sftp: password login to {target} failed"))?;
            if !result.success() {
                bail!(
                    "sftp: {target} rejected the password for user '{user}': check \
                     sftp_password and sftp_username"
                );
            }
        }
        SftpAuth::Key {
            key,
            passphrase,
            origin,
        } => {
            let key = decode_secret_key(key.expose(), passphrase.as_ref().map(|p| p.expose()))
                .map_err(|e| match e {
                    russh::keys::Error::KeyIsEncrypted if passphrase.is_none() => {
                        anyhow!("sftp: {origin} is encrypted; set sftp_key_passphrase")
                    }
                    other if passphrase.is_some() => anyhow!(
                        "sftp: cannot read {origin} ({other}); is sftp_key_passphrase right?"
                    ),
                    other => anyhow!("sftp: cannot read {origin}: {other}"),
                })?;
            let hash = ssh.best_supported_rsa_hash().await.ok().flatten().flatten();
            let result = ssh
                .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
                .await
                .with_context(|| format!("sftp: key login to {target} failed"))?;
            if !result.success() {
                bail!(
                    "sftp: {target} rejected {origin} for user '{user}': is its public key in \
                     the server's authorized_keys for that user?"
                );
            }
        }
    }
    Ok(())
}

/// Accepts the server only if its host key matches the configured check,
/// and remembers why it refused, for the error message.
pub struct HostKeyChecker {
    check: HostKeyCheck,
    host: String,
    port: u16,
    refusal: Arc<Mutex<Option<String>>>,
}

impl client::Handler for HostKeyChecker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match offered {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => key.clone(),
            russh::keys::PublicKeyOrCertificate::Certificate(cert) => {
                cert.public_key().clone().into()
            }
        };
        let verdict = verify(&self.check, &self.host, self.port, &key);
        if let (Err(reason), Ok(mut refusal)) = (&verdict, self.refusal.lock()) {
            *refusal = Some(reason.clone());
        }
        Ok(verdict.is_ok())
    }
}

/// Checks `key` against the configuration; the error says what to fix.
pub fn verify(check: &HostKeyCheck, host: &str, port: u16, key: &PublicKey) -> Result<(), String> {
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    let shown = format!("{} {fingerprint}", key.algorithm());
    let rescan = format!("ssh-keyscan -p {port} {host}");
    match check {
        HostKeyCheck::Insecure => Ok(()),
        HostKeyCheck::Fingerprint(expected) if *expected == fingerprint => Ok(()),
        HostKeyCheck::Fingerprint(expected) => Err(format!(
            "its host key is {shown}, not the {expected} in sftp_host_key_fingerprint; \
             if the server's key changed on purpose, update the setting ({rescan} | ssh-keygen -lf -)"
        )),
        HostKeyCheck::KnownHosts { lines, origin } => {
            let known = known_keys(lines, host, port);
            if known.iter().any(|k| k.key_data() == key.key_data()) {
                Ok(())
            } else if known.is_empty() {
                Err(format!(
                    "{origin} has no key for this host (looked for {}); add the output of {rescan}",
                    host_pattern(host, port)
                ))
            } else {
                Err(format!(
                    "its host key {shown} is not the one in {origin}; if the server's key changed \
                     on purpose, update it with {rescan}"
                ))
            }
        }
    }
}

/// `host` for port 22, `[host]:port` otherwise, as known_hosts writes them.
fn host_pattern(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// The keys known_hosts lines give for this host. Plain and hashed host
/// names are read by russh; a line that is only `type base64` (a key with
/// no host) applies to any host.
fn known_keys(lines: &str, host: &str, port: u16) -> Vec<PublicKey> {
    let mut keys = Vec::new();
    let mut with_hosts = String::new();
    for line in lines
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if is_key_type(first) {
            if let Some(key) = fields
                .next()
                .and_then(|b64| russh::keys::parse_public_key_base64(b64).ok())
            {
                keys.push(key);
            }
        } else {
            with_hosts.push_str(line);
            with_hosts.push('\n');
        }
    }
    if !with_hosts.is_empty() {
        keys.extend(keys_for_host(&with_hosts, host, port));
    }
    keys
}

/// Standard known_hosts lines, matched by russh (plain and hashed names).
fn keys_for_host(lines: &str, host: &str, port: u16) -> Vec<PublicKey> {
    let Ok(file) = tempfile::NamedTempFile::new() else {
        return Vec::new();
    };
    if std::fs::write(file.path(), lines).is_err() {
        return Vec::new();
    }
    russh::keys::known_hosts::known_host_keys_path(host, port, file.path())
        .map(|found| found.into_iter().map(|(_, key)| key).collect())
        .unwrap_or_default()
}

fn is_key_type(word: &str) -> bool {
    word.starts_with("ssh-") || word.starts_with("ecdsa-") || word.starts_with("sk-")
}
