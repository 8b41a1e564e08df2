//! The stream digest: an xxh3-64 hash of the whole tar stream, written as a
//! PAX global header (`LARDER.digest`) after the last entry.
//!
//! gzip and zstd check their own data, but a plain tar has no checksum for
//! file contents, and none of the formats covers the tar structure end to
//! end. With the digest, any changed byte of any entry is caught before the
//! restore touches the workspace. xxh3 runs at memory speed, so the check
//! costs nothing next to decompression. (It guards against corruption, not
//! against someone with write access to the bucket, who could rewrite both.)

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::rc::Rc;

use xxhash_rust::xxh3::Xxh3;

use super::pax::TAR_BLOCK;

/// PAX keyword of the trailer record.
pub const PAX_KEY: &str = "LARDER.digest";

pub fn format(hash: u64) -> String {
    format!("xxh3-64:{hash:016x}")
}

/// Counts and hashes the bytes written through it.
pub struct Tally<W> {
    pub inner: W,
    pub count: u64,
    hasher: Xxh3,
}

impl<W: Write> Tally<W> {
    pub fn new(inner: W) -> Self {
        Tally {
            inner,
            count: 0,
            hasher: Xxh3::new(),
        }
    }

    pub fn digest(&self) -> u64 {
        self.hasher.digest()
    }
}

impl<W: Write> Write for Tally<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The reading side: hashes everything read except the most recent block,
/// so when the tar reader has just read the trailer's header block, the
/// hash covers exactly the stream before it. Also notes whether the input
/// ran out, which is how a missing end-of-archive marker shows.
///
/// The state is shared (`progress`) because the tar reader owns the
/// `Verifier` while the extractor needs the hash mid-stream.
pub struct Verifier<R> {
    inner: R,
    progress: Rc<RefCell<Progress>>,
}

pub struct Progress {
    hasher: Xxh3,
    /// Bytes read but not yet hashed: the last block.
    held: Vec<u8>,
    pub count: u64,
    pub hit_eof: bool,
    /// The input (decompression or download) failed: the entry's bytes are
    /// bad or missing, as opposed to a failure writing them out.
    pub input_failed: bool,
    /// Most bytes of tar stream to read before failing.
    pub limit: u64,
    /// The stream went past `limit`.
    pub over_limit: bool,
}

impl Progress {
    /// The hash of every byte before the last block read, and that length.
    pub fn digest_before_last_block(&self) -> (u64, u64) {
        (self.hasher.digest(), self.count - self.held.len() as u64)
    }

    fn add(&mut self, data: &[u8]) {
        self.count += data.len() as u64;
        if data.len() >= TAR_BLOCK {
            self.hasher.update(&self.held);
            self.held.clear();
            let split = data.len() - TAR_BLOCK;
            self.hasher.update(&data[..split]);
            self.held.extend_from_slice(&data[split..]);
        } else {
            self.held.extend_from_slice(data);
            if self.held.len() > TAR_BLOCK {
                let extra = self.held.len() - TAR_BLOCK;
                self.hasher.update(&self.held[..extra]);
                self.held.drain(..extra);
            }
        }
    }
}

impl<R: Read> Verifier<R> {
    /// Reads `inner`, failing once more than `limit` bytes have come through.
    pub fn new(inner: R, limit: u64) -> Self {
        Verifier {
            inner,
            progress: Rc::new(RefCell::new(Progress {
                hasher: Xxh3::new(),
                held: Vec::with_capacity(2 * TAR_BLOCK),
                count: 0,
                hit_eof: false,
                input_failed: false,
                limit,
                over_limit: false,
            })),
        }
    }

    pub fn progress(&self) -> Rc<RefCell<Progress>> {
        Rc::clone(&self.progress)
    }
}

impl<R: Read> Read for Verifier<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf);
        let mut progress = self.progress.borrow_mut();
        let n = match read {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                progress.input_failed = true;
                return Err(e);
            }
        };
        if n == 0 && !buf.is_empty() {
            progress.hit_eof = true;
        }
        progress.add(&buf[..n]);
        if progress.count > progress.limit {
            progress.over_limit = true;
            return Err(io::Error::other(format!(
                "the entry unpacks to more than max_restore_size ({} bytes)",
                progress.limit
            )));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_hashes_all_but_the_last_block() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        for chunk in [1, 100, 512, 700, 5000] {
            let mut v = Verifier::new(&data[..], u64::MAX);
            let progress = v.progress();
            let mut buf = vec![0; chunk];
            while v.read(&mut buf).unwrap() > 0 {}
            let (hash, len) = progress.borrow().digest_before_last_block();
            assert_eq!(len, (data.len() - TAR_BLOCK) as u64);
            assert_eq!(
                hash,
                xxhash_rust::xxh3::xxh3_64(&data[..data.len() - TAR_BLOCK]),
                "chunk {chunk}"
            );
            assert!(progress.borrow().hit_eof);
        }
    }

    #[test]
    fn tally_matches_a_one_shot_hash() {
        let mut t = Tally::new(Vec::new());
        t.write_all(b"hello ").unwrap();
        t.write_all(b"world").unwrap();
        assert_eq!(t.digest(), xxhash_rust::xxh3::xxh3_64(b"hello world"));
        assert_eq!(t.count, 11);
    }
}
