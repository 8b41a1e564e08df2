//! First writer wins: a rebuild claims its key before uploading.
//!
//! The claim is a small object created with a conditional put (S3
//! `If-None-Match: *`, a hard link on the filesystem), so of two rebuilds of
//! one key exactly one gets it; the other skips. The holder renews it while
//! uploading; a claim left by a killed step expires after `LEASE` and can
//! then be taken over. The entry itself is always written with a multipart
//! upload that becomes visible only when complete, so even two writers can
//! never produce a torn entry: the claim only saves the duplicate upload.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use object_store::PutMode;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use super::Store;

/// How long a claim stays valid without renewal.
pub const LEASE: Duration = Duration::from_secs(120);
/// How often the holder renews it.
const RENEW_EVERY: Duration = Duration::from_secs(30);
/// A claim found ours this recently, whose record stays valid for at least
/// `SAFE_FOR` more, is removed without reading it again (see `release`).
const FRESH: Duration = Duration::from_secs(10);
const SAFE_FOR: Duration = Duration::from_secs(60);

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    holder: String,
    token: String,
    /// Unix seconds after which the claim is abandoned.
    expires: u64,
}

pub enum Claimed {
    /// This process holds the key until `release`.
    Won(Claim),
    /// Another rebuild holds it; the text says which.
    Held(String),
}

pub struct Claim {
    store: Store,
    path: Path,
    token: String,
    renewer: Option<JoinHandle<()>>,
    /// Unix seconds at which the last record this process stored (the
    /// claim, then each renewal) expires.
    valid_until: Arc<AtomicU64>,
    /// When `still_ours` last asked and found the claim ours.
    confirmed: Mutex<Option<Instant>>,
}

/// Tries to claim `path` for `holder` (a description such as "build 42").
pub async fn claim(store: &Store, path: &Path, holder: &str) -> anyhow::Result<Claimed> {
    let token = uuid::Uuid::new_v4().to_string();
    for _ in 0..2 {
        let record = Record {
            holder: holder.to_string(),
            token: token.clone(),
            expires: now() + LEASE.as_secs(),
        };
        match store.write(path, body(&record), PutMode::Create).await {
            Ok(true) => return Ok(Claimed::Won(Claim::start(store, path, token, record))),
            Ok(false) => match read(store, path).await? {
                Found::Live(holder) => return Ok(Claimed::Held(holder)),
                Found::Gone => {}
                Found::Stale(holder) => {
                    tracing::info!(
                        "taking over an abandoned claim on '{}' left by {holder}",
                        store.full(path)
                    );
                    store.delete(path).await?;
                }
            },
            Err(e) => {
                // The server may have stored the claim and failed to say so
                // (it died mid-request): remove it if it is ours, or every
                // rebuild of the key would skip until it expires.
                Claim::start(store, path, token.clone(), record)
                    .release()
                    .await;
                return Err(e.context("cannot claim the key"));
            }
        }
    }
    Ok(Claimed::Held(
        "another rebuild that took over the same abandoned claim".into(),
    ))
}

impl Claim {
    fn start(store: &Store, path: &Path, token: String, record: Record) -> Claim {
        let valid_until = Arc::new(AtomicU64::new(record.expires));
        let renewed = Arc::clone(&valid_until);
        let renew_store = store.clone();
        let renew_path = path.clone();
        let renewer = tokio::spawn(async move {
            let mut record = record;
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                record.expires = now() + LEASE.as_secs();
                let put = renew_store
                    .write(&renew_path, body(&record), PutMode::Overwrite)
                    .await;
                match put {
                    Ok(_) => renewed.store(record.expires, Ordering::Relaxed),
                    Err(e) => tracing::warn!("could not renew the claim: {e:#}"),
                }
            }
        });
        Claim {
            store: store.clone(),
            path: path.clone(),
            token,
            renewer: Some(renewer),
            valid_until,
            confirmed: Mutex::new(None),
        }
    }

    /// Whether the claim still carries our token. Checked just before the
    /// entry is published: if a server's conditional put was not atomic, or
    /// a slow upload's claim was taken over, only one writer publishes.
    pub async fn still_ours(&self) -> anyhow::Result<bool> {
        let asked = Instant::now();
        let ours = read_record(&self.store, &self.path)
            .await?
            .is_some_and(|(record, _)| record.is_some_and(|r| r.token == self.token));
        if ours {
            // (A poisoned lock still holds a valid time.)
            *self.confirmed.lock().unwrap_or_else(|e| e.into_inner()) = Some(asked);
        }
        Ok(ours)
    }

    /// Whether the claim is certainly still ours without asking: found ours
    /// a moment ago, and its record valid for another minute, so no other
    /// rebuild can have taken it over as abandoned since (with clocks up to
    /// a minute apart). Saves the release a round trip.
    fn surely_ours(&self) -> bool {
        let confirmed = *self.confirmed.lock().unwrap_or_else(|e| e.into_inner());
        let valid_until = self.valid_until.load(Ordering::Relaxed);
        confirmed.is_some_and(|at| at.elapsed() < FRESH) && valid_until > now() + SAFE_FOR.as_secs()
    }

    /// Stops renewing and removes the claim if it is still ours (asking
    /// storage unless `surely_ours`). Storage that just failed the upload
    /// may be back in a moment, so a failed removal is retried for a few
    /// seconds: a claim left behind makes every rebuild of the key skip
    /// until it expires.
    pub async fn release(mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        let mut failure = None;
        for wait in RELEASE_RETRIES {
            tokio::time::sleep(wait).await;
            let ours = match self.surely_ours() {
                true => Ok(true),
                false => self.still_ours().await,
            };
            let removed = match ours {
                Ok(true) => self.store.delete(&self.path).await,
                Ok(false) => Ok(()),
                Err(e) => Err(e),
            };
            match removed {
                Ok(()) => return,
                Err(e) => failure = Some(e),
            }
        }
        if let Some(e) = failure {
            tracing::warn!(
                "{e:#}; the claim stays until it expires, within {} s, and rebuilds of this key \
                 are skipped until then",
                LEASE.as_secs()
            );
        }
    }
}

/// Waits before each attempt to remove a claim: at once, then over 7 s.
const RELEASE_RETRIES: [Duration; 4] = [
    Duration::ZERO,
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
    }
}

fn body(record: &Record) -> Vec<u8> {
    serde_json::to_vec(record).unwrap_or_default()
}

/// What an existing claim says.
enum Found {
    /// Held by a live rebuild (the text says which).
    Live(String),
    /// Expired; the text names who left it.
    Stale(String),
    /// Removed since the conditional put failed.
    Gone,
}

async fn read(store: &Store, path: &Path) -> anyhow::Result<Found> {
    Ok(match read_record(store, path).await? {
        None => Found::Gone,
        Some((Some(record), _)) if record.expires > now() => Found::Live(record.holder),
        Some((Some(record), _)) => Found::Stale(record.holder),
        // Unreadable: another writer's claim may be half written on a server
        // without atomic writes. Only its age can say it is abandoned.
        Some((None, modified)) if now().saturating_sub(modified) > LEASE.as_secs() => {
            Found::Stale("an unreadable claim".into())
        }
        Some((None, _)) => Found::Live("another rebuild".into()),
    })
}

/// The claim's record (if it parses) and its modification time in Unix seconds.
async fn read_record(store: &Store, path: &Path) -> anyhow::Result<Option<(Option<Record>, u64)>> {
    Ok(store.read(path).await?.map(|(bytes, meta)| {
        let modified = u64::try_from(meta.last_modified.timestamp()).unwrap_or(0);
        (serde_json::from_slice(&bytes).ok(), modified)
    }))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
