//! The SSH side of the SFTP backend: connect, check the host key, log in,
//! open the SFTP subsystem. Each failure says which of those went wrong.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use hmac::{Hmac, KeyInit, Mac};
use russh::client::{self, Handle};
use russh::keys::ssh_key::known_hosts;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey, decode_secret_key};
use russh_sftp::client::SftpSession;
use sha1::Sha1;

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

/// The keys known_hosts lines give for this host, as OpenSSH matches them:
/// plain names and `[host]:port`, `*` and `?` wildcards, `!` negations and
/// hashed names (`|1|salt|hash`). `@revoked` and `@cert-authority` lines are
/// not host keys and are left out. A line that is only `type base64` (a key
/// with no host) applies to any host.
fn known_keys(lines: &str, host: &str, port: u16) -> Vec<PublicKey> {
    let name = host_pattern(host, port);
    let mut keys = Vec::new();
    for line in lines
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if is_key_type(first) {
            keys.extend(
                fields
                    .next()
                    .and_then(|b64| russh::keys::parse_public_key_base64(b64).ok()),
            );
            continue;
        }
        let Ok(entry) = line.parse::<known_hosts::Entry>() else {
            continue;
        };
        if entry.marker().is_none() && matches_host(entry.host_patterns(), &name) {
            keys.push(entry.public_key().clone());
        }
    }
    keys
}

fn matches_host(patterns: &known_hosts::HostPatterns, name: &str) -> bool {
    match patterns {
        known_hosts::HostPatterns::HashedName { salt, hash } => Hmac::<Sha1>::new_from_slice(salt)
            .is_ok_and(|mac| mac.chain_update(name).verify_slice(hash).is_ok()),
        known_hosts::HostPatterns::Patterns(patterns) => {
            let matching = |pattern: &str| wildcard(pattern.as_bytes(), name.as_bytes());
            let negated = patterns
                .iter()
                .filter_map(|p| p.strip_prefix('!'))
                .any(matching);
            !negated
                && patterns
                    .iter()
                    .filter(|p| !p.starts_with('!'))
                    .any(|p| matching(p))
        }
    }
}

/// OpenSSH's host pattern match: `*` is any run of characters, `?` any one;
/// everything else (`[host]:port` included) matches itself.
fn wildcard(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.split_first(), name.split_first()) {
        (None, None) => true,
        (Some((b'*', rest)), _) => {
            wildcard(rest, name)
                || name
                    .split_first()
                    .is_some_and(|(_, n)| wildcard(pattern, n))
        }
        (Some((b'?', rest)), Some((_, n))) => wildcard(rest, n),
        (Some((p, rest)), Some((c, n))) => p.eq_ignore_ascii_case(c) && wildcard(rest, n),
        _ => false,
    }
}

fn is_key_type(word: &str) -> bool {
    word.starts_with("ssh-") || word.starts_with("ecdsa-") || word.starts_with("sk-")
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIJwhFhUtz0183SotlzCjmG8SPVXaivvOBXzh8rK2ohDR";

    fn found(lines: &str, host: &str, port: u16) -> usize {
        known_keys(lines, host, port).len()
    }

    fn hashed(name: &str) -> String {
        let salt = b"0123456789abcdefghij".to_vec();
        let mac = Hmac::<Sha1>::new_from_slice(&salt)
            .unwrap()
            .chain_update(name)
            .finalize()
            .into_bytes();
        let hash: [u8; 20] = mac.into();
        known_hosts::HostPatterns::HashedName { salt, hash }.to_string()
    }

    #[test]
    fn known_hosts_match_as_openssh_matches_them() {
        let line = |hosts: &str| format!("{hosts} ssh-ed25519 {KEY}\n");
        assert_eq!(
            found(&line("cache.example.com"), "cache.example.com", 22),
            1
        );
        assert_eq!(
            found(&line("cache.example.com"), "cache.example.com", 2222),
            0
        );
        assert_eq!(
            found(&line("[cache.example.com]:2222"), "cache.example.com", 2222),
            1
        );
        assert_eq!(found(&line("a,b,cache"), "cache", 22), 1);
        assert_eq!(found(&line("*.example.com"), "cache.example.com", 22), 1);
        assert_eq!(
            found(
                &line("*.example.com,!cache.example.com"),
                "cache.example.com",
                22
            ),
            0
        );
        assert_eq!(found(&line(&hashed("[cache]:2222")), "cache", 2222), 1);
        assert_eq!(found(&line(&hashed("cache")), "other", 22), 0);
        assert_eq!(
            found(&format!("@revoked {}", line("cache")), "cache", 22),
            0
        );
        assert_eq!(found(&format!("ssh-ed25519 {KEY}"), "anything", 22), 1);
        assert_eq!(found("# a comment\n\ngarbage line here\n", "cache", 22), 0);
    }
}
