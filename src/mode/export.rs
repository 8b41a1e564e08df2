//! Export: write a stored entry to one file that GNU tar extracts, for
//! people and scripts outside larder. A chunked entry's chunks are zstd
//! frames, so written in order they are a `.tar.zst`; an archive entry is
//! copied as stored. The file appears only once complete.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, anyhow};
use futures::StreamExt;
use tracing::{info, warn};

use crate::archive::Compression;
use crate::cancel::Cancel;
use crate::chunked::{self, Index};
use crate::human;
use crate::job::{Export, Mode};
use crate::storage::entry::{self, Format};
use crate::storage::transfer::Head;
use crate::storage::{Store, transfer};
use crate::summary::{Outcome, Summary};

pub async fn export(task: &Export, store: &Store, cancel: &Cancel) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let Some((key, meta, head)) = find(task, store).await? else {
        info!(
            "export: miss for key '{}': no entry under '{}' in {} {}; nothing was written",
            task.key, store.root, store.backend, store.location
        );
        return Ok(Summary::new(Mode::Export, Outcome::Miss).key(&task.key));
    };
    let format = entry::format_of(&meta).unwrap_or(Format::Archive(Compression::None));
    let compression = match format {
        Format::Chunked => Compression::Zstd,
        Format::Archive(c) => c,
    };
    let expected = format!(".{}", compression.extension());
    let name = task.output.to_string_lossy();
    if !name.ends_with(&expected) {
        warn!(
            "export: the entry is {compression}; '{}' should end in {expected} for tools \
             that go by the name",
            task.output.display()
        );
    }
    let partial = partial_path(&task.output);
    let written = match format {
        Format::Chunked => {
            let index = chunked::read::read_index_after(store, &meta, head)
                .await?
                .map_err(|why| {
                    anyhow!("entry '{}' is damaged: {why}", store.full(&meta.location))
                })?;
            write_chunks(store, &index, &partial, cancel).await
        }
        Format::Archive(_) => copy_archive(store, &meta, head, &partial, cancel).await,
    };
    let bytes = match written {
        Ok(bytes) => bytes,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.context(format!(
                "could not export key '{key}'; '{}' was not written",
                task.output.display()
            )));
        }
    };
    std::fs::rename(&partial, &task.output).with_context(|| {
        format!(
            "cannot move the export into place at {}",
            task.output.display()
        )
    })?;
    let elapsed = started.elapsed();
    info!(
        "export: wrote key '{key}' ('{}') to {}: {} {compression} in {}; extract it with \
         tar --delay-directory-restore -xf {} (GNU tar; the option keeps directory times)",
        store.full(&meta.location),
        task.output.display(),
        human::bytes(bytes),
        human::seconds(elapsed),
        task.output.display()
    );
    let mut summary = Summary::new(Mode::Export, Outcome::Exact).key(&task.key);
    summary.matched_key = Some(key);
    summary.object = Some(store.full(&meta.location));
    summary.stored_bytes = bytes;
    summary.seconds = elapsed.as_secs_f64();
    Ok(summary)
}

/// The exact key, with its first bytes (read by the lookup, as a restore
/// does), else the newest entry under each restore key in turn.
async fn find(
    task: &Export,
    store: &Store,
) -> anyhow::Result<Option<(String, object_store::ObjectMeta, Head)>> {
    if let Some(opened) = entry::open(store, &task.key).await? {
        return Ok(Some((task.key.clone(), opened.meta, opened.head)));
    }
    for prefix in &task.prefixes {
        if let Some((key, meta)) = entry::newest_with_prefix(store, prefix).await? {
            return Ok(Some((key, meta, Head::none())));
        }
    }
    Ok(None)
}

/// `<file>.larder-partial`, beside the file.
fn partial_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".larder-partial");
    output.with_file_name(name)
}

/// Writes the chunks' frames in order; returns the bytes written.
async fn write_chunks(
    store: &Store,
    index: &Index,
    partial: &Path,
    cancel: &Cancel,
) -> anyhow::Result<u64> {
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(partial)
            .with_context(|| format!("cannot create {}", partial.display()))?,
    );
    let mut runs = std::pin::pin!(chunked::read::frames(store, index));
    let mut bytes = 0u64;
    while let Some(frames) = runs.next().await {
        cancel.check()?;
        for frame in frames? {
            file.write_all(&frame)
                .with_context(|| format!("cannot write {}", partial.display()))?;
            bytes += frame.len() as u64;
        }
    }
    file.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot write {}", partial.display()))?;
    Ok(bytes)
}

/// Copies an archive entry as stored, whose first bytes the lookup read.
async fn copy_archive(
    store: &Store,
    meta: &object_store::ObjectMeta,
    head: Head,
    partial: &Path,
    cancel: &Cancel,
) -> anyhow::Result<u64> {
    let download = transfer::download(store.clone(), meta.clone(), head, cancel.clone()).await?;
    let failure = download.failure_handle();
    let partial = partial.to_path_buf();
    let copied = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
        let mut reader = download.into_reader();
        let mut file = std::fs::File::create(&partial)?;
        let bytes = std::io::copy(&mut reader, &mut file)?;
        file.sync_all()?;
        Ok(bytes)
    })
    .await
    .map_err(|e| anyhow!("the copy stopped unexpectedly: {e}"))?;
    match (copied, failure.get()) {
        (Ok(bytes), _) => Ok(bytes),
        (Err(_), Some(cause)) => Err(anyhow!("{cause}")),
        (Err(e), None) => Err(anyhow!("cannot write the export: {e}")),
    }
}
