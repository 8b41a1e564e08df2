//! Parallel gzip: the stream is cut into blocks, each compressed on its own
//! thread with libdeflate into a complete gzip member. Concatenated members
//! are a standard gzip file (RFC 1952 §2.2): `gzip -d`, GNU tar and every
//! other reader accept it. Each member's header carries an extra field
//! (`LR`, 4 bytes) with the member's total size, as BGZF does, so a restore
//! can find the members without inflating them and decompress them in
//! parallel too. Members cost about 0.1% in size against one long stream.
//!
//! libdeflate checks each member's CRC-32 and length on decompression.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use libdeflater::{CompressionLvl, Compressor, Decompressor};

use crate::pool::{self, Msg, Pool};

/// Uncompressed bytes per member.
pub const MEMBER_DATA: usize = 1 << 20;
/// Header: 10 fixed bytes, XLEN, and one 8-byte subfield.
const HEADER: usize = 20;
const TRAILER: usize = 8;
/// Largest member a reader accepts: `MEMBER_DATA` bytes that did not compress,
/// with room to spare. A damaged size field cannot make us allocate more.
const MAX_MEMBER: usize = 2 * MEMBER_DATA;

/// The first error a reader or writer met. Later calls return it again
/// instead of waiting for results that will never come.
#[derive(Default)]
struct Failure(Option<(io::ErrorKind, String)>);

impl Failure {
    fn check(&self) -> io::Result<()> {
        match &self.0 {
            Some((kind, message)) => Err(io::Error::new(*kind, message.clone())),
            None => Ok(()),
        }
    }

    fn record<T>(&mut self, result: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &result {
            self.0.get_or_insert_with(|| (e.kind(), e.to_string()));
        }
        result
    }
}

/// A `Write` that compresses in parallel into `out`.
pub struct Writer<W: Write> {
    out: Option<W>,
    pool: Pool<Vec<u8>, Vec<u8>>,
    block: Vec<u8>,
    next_seq: u64,
    next_out: u64,
    done: BTreeMap<u64, Vec<u8>>,
    limit: u64,
    failure: Failure,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W, level: i32) -> io::Result<Self> {
        let level = CompressionLvl::new(level)
            .map_err(|_| io::Error::other(format!("{level} is not a gzip level")))?;
        let threads = pool::threads();
        let (pool, _) = Pool::new(threads, move || Compressor::new(level), compress_member);
        Ok(Writer {
            out: Some(out),
            pool,
            block: Vec::with_capacity(MEMBER_DATA),
            next_seq: 0,
            next_out: 0,
            done: BTreeMap::new(),
            limit: threads as u64 * 2,
            failure: Failure::default(),
        })
    }

    fn submit_block(&mut self) -> io::Result<()> {
        let block = std::mem::replace(&mut self.block, Vec::with_capacity(MEMBER_DATA));
        while self.next_seq - self.next_out >= self.limit {
            self.collect_one()?;
        }
        self.pool.submit(self.next_seq, block)?;
        self.next_seq += 1;
        Ok(())
    }

    /// Waits for one member and writes every member that is now in order.
    fn collect_one(&mut self) -> io::Result<()> {
        let Msg::Done(seq, member) = self.pool.next()? else {
            return Err(io::Error::other("the gzip worker threads stopped"));
        };
        self.done.insert(seq, member?);
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| io::Error::other("writer finished"))?;
        while let Some(member) = self.done.remove(&self.next_out) {
            out.write_all(&member)?;
            self.next_out += 1;
        }
        Ok(())
    }

    /// Compresses what is left and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.failure.check()?;
        if !self.block.is_empty() || self.next_seq == 0 {
            self.submit_block()?;
        }
        while self.next_out < self.next_seq {
            self.collect_one()?;
        }
        self.out
            .take()
            .ok_or_else(|| io::Error::other("writer finished"))
    }
}

impl<W: Write> Write for Writer<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.failure.check()?;
        let n = data.len().min(MEMBER_DATA - self.block.len());
        self.block.extend_from_slice(&data[..n]);
        if self.block.len() == MEMBER_DATA {
            let submitted = self.submit_block();
            self.failure.record(submitted)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One complete gzip member holding `data`, with its size in the header.
fn compress_member(compressor: &mut Compressor, data: Vec<u8>) -> io::Result<Vec<u8>> {
    let bound = compressor.deflate_compress_bound(data.len());
    let mut member = vec![0u8; HEADER + bound + TRAILER];
    let deflated = compressor
        .deflate_compress(&data, &mut member[HEADER..HEADER + bound])
        .map_err(|e| io::Error::other(format!("compression failed: {e:?}")))?;
    let total = HEADER + deflated + TRAILER;
    member.truncate(total);
    member[..12].copy_from_slice(&[
        0x1f, 0x8b, 8, 0x04, // magic, deflate, FEXTRA
        0, 0, 0, 0, // no mtime
        0, 255, // no extra flags, unknown OS
        8, 0, // XLEN
    ]);
    member[12..16].copy_from_slice(&[b'L', b'R', 4, 0]);
    member[16..20].copy_from_slice(&(total as u32).to_le_bytes());
    let trailer = HEADER + deflated;
    member[trailer..trailer + 4].copy_from_slice(&libdeflater::crc32(&data).to_le_bytes());
    member[trailer + 4..].copy_from_slice(&(data.len() as u32).to_le_bytes());
    Ok(member)
}

/// Whether a stream starts with one of our members (and so can be read in parallel).
pub fn is_blocked(head: &[u8]) -> bool {
    head.len() >= HEADER
        && head[..4] == [0x1f, 0x8b, 8, 0x04]
        && head[10..12] == [8, 0]
        && head[12..16] == [b'L', b'R', 4, 0]
}

/// A `Read` that decompresses blocked gzip members in parallel, in order.
pub struct Reader {
    /// One token per member the feeder may have in flight; returned as
    /// members are read, so memory stays at a few members.
    tokens: SyncSender<()>,
    /// Set when the reader is dropped: the feeder stops before its next
    /// member instead of reading the tokens still queued.
    stop: Arc<AtomicBool>,
    pool: Pool<Vec<u8>, Vec<u8>>,
    next: u64,
    done: BTreeMap<u64, Vec<u8>>,
    current: Vec<u8>,
    position: usize,
    /// How many members there are, once the feeder has reached the end.
    total: Option<u64>,
    failure: Failure,
}

impl Reader {
    pub fn new(input: impl Read + Send + 'static) -> Self {
        let threads = pool::threads();
        let (pool, results) = Pool::new(threads, Decompressor::new, decompress_member);
        let limit = threads * 2;
        let (tokens, token_rx) = sync_channel(limit);
        for _ in 0..limit {
            let _ = tokens.send(());
        }
        let jobs = pool.jobs();
        let stop = Arc::new(AtomicBool::new(false));
        let feeder_stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let end = feed(input, jobs, token_rx, &feeder_stop);
            let _ = results.send(Msg::End(end));
        });
        Reader {
            tokens,
            stop,
            pool,
            next: 0,
            done: BTreeMap::new(),
            current: Vec::new(),
            position: 0,
            total: None,
            failure: Failure::default(),
        }
    }

    /// The next member's data, in order; `None` after the last one.
    fn next_member(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(data) = self.done.remove(&self.next) {
                self.next += 1;
                let _ = self.tokens.send(());
                return Ok(Some(data));
            }
            if self.total == Some(self.next) {
                return Ok(None);
            }
            match self.pool.next()? {
                Msg::Done(seq, data) => {
                    self.done.insert(seq, data?);
                }
                Msg::End(total) => self.total = Some(total?),
            }
        }
    }
}

impl Read for Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.failure.check()?;
        while self.position == self.current.len() {
            let next = self.next_member();
            match self.failure.record(next)? {
                Some(data) => {
                    self.current = data;
                    self.position = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.position);
        buf[..n].copy_from_slice(&self.current[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

impl Drop for Reader {
    /// Stops the feeder and leaves the threads to end on their own: a
    /// feeder stuck on a stalled download must not hold up the caller,
    /// which is usually on its way to report an error.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.pool.detach();
    }
}

/// Splits the input into members using the size in each header; returns
/// how many there were. A short member is a truncated stream.
fn feed(
    mut input: impl Read,
    jobs: Option<SyncSender<(u64, Vec<u8>)>>,
    tokens: Receiver<()>,
    stop: &AtomicBool,
) -> io::Result<u64> {
    let jobs = jobs.ok_or_else(|| io::Error::other("the gzip worker threads stopped"))?;
    let mut seq = 0;
    loop {
        // The reader went away: stop quietly.
        if tokens.recv().is_err() || stop.load(Ordering::Relaxed) {
            return Ok(seq);
        }
        let mut header = [0u8; HEADER];
        let got = read_full(&mut input, &mut header)?;
        if got == 0 {
            return Ok(seq);
        }
        if got < HEADER {
            return Err(truncated());
        }
        if !is_blocked(&header) {
            return Err(io::Error::other(format!(
                "gzip member {seq} lacks larder's block header; the entry is damaged"
            )));
        }
        let total = u32::from_le_bytes([header[16], header[17], header[18], header[19]]) as usize;
        if !(HEADER + TRAILER..=MAX_MEMBER).contains(&total) {
            return Err(io::Error::other(format!(
                "gzip member {seq} claims {total} bytes; the entry is damaged"
            )));
        }
        let mut member = vec![0u8; total];
        member[..HEADER].copy_from_slice(&header);
        if read_full(&mut input, &mut member[HEADER..])? < total - HEADER {
            return Err(truncated());
        }
        if jobs.send((seq, member)).is_err() {
            return Ok(seq);
        }
        seq += 1;
    }
}

fn decompress_member(decompressor: &mut Decompressor, member: Vec<u8>) -> io::Result<Vec<u8>> {
    let size = u32::from_le_bytes(
        member[member.len() - 4..]
            .try_into()
            .map_err(|_| io::Error::other("short gzip member"))?,
    ) as usize;
    if size > MEMBER_DATA {
        return Err(io::Error::other(
            "gzip member too large; the entry is damaged",
        ));
    }
    let mut out = vec![0u8; size];
    let n = decompressor
        .gzip_decompress(&member, &mut out)
        .map_err(|e| io::Error::other(format!("corrupt gzip data: {e}")))?;
    if n != size {
        return Err(io::Error::other("corrupt gzip data: length mismatch"));
    }
    Ok(out)
}

fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn truncated() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "the gzip stream is truncated")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i % 251) as u8 ^ (i / 4096) as u8)
            .collect()
    }

    fn compress(data: &[u8]) -> Vec<u8> {
        let mut w = Writer::new(Vec::new(), 6).unwrap();
        w.write_all(data).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn round_trips_and_is_plain_gzip() {
        for len in [0, 10, MEMBER_DATA, 3 * MEMBER_DATA + 17] {
            let data = sample(len);
            let packed = compress(&data);
            assert!(is_blocked(&packed));
            let mut out = Vec::new();
            Reader::new(std::io::Cursor::new(packed.clone()))
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data, "parallel reader, {len} bytes");
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(&packed[..])
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data, "standard reader, {len} bytes");
        }
    }

    #[test]
    fn dropping_a_reader_midway_stops_its_threads() {
        let packed = compress(&sample(8 * MEMBER_DATA));
        let mut reader = Reader::new(std::io::Cursor::new(packed));
        let mut first = vec![0u8; 1000];
        reader.read_exact(&mut first).unwrap();
        drop(reader); // must return, not hang
    }

    /// Runs `f` on another thread and fails the test if it has not
    /// returned within `limit` (instead of hanging the test run).
    fn returns_within<T: Send + 'static>(limit: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(f()));
        rx.recv_timeout(std::time::Duration::from_secs(limit))
            .expect("did not return: blocked")
    }

    /// An input that delivers 64 KiB every 200 ms, like a slow download.
    struct Slow(std::io::Cursor<Vec<u8>>);

    impl Read for Slow {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            std::thread::sleep(std::time::Duration::from_millis(200));
            let n = buf.len().min(64 * 1024);
            self.0.read(&mut buf[..n])
        }
    }

    /// Bytes that do not compress, so each member is a whole `MEMBER_DATA`.
    fn noise(len: usize) -> Vec<u8> {
        crate::testing::noise(len, 1)
    }

    #[test]
    fn dropping_a_reader_does_not_wait_for_a_slow_input() {
        // Each member takes the slow input about 3 s to deliver.
        let packed = compress(&noise(16 * MEMBER_DATA));
        returns_within(5, move || {
            let mut reader = Reader::new(Slow(std::io::Cursor::new(packed)));
            let mut first = vec![0u8; 1000];
            reader.read_exact(&mut first).unwrap();
            // Reading the members still queued would take seconds.
            drop(reader);
        });
    }

    #[test]
    fn an_error_is_returned_again_not_waited_for() {
        let packed = compress(&sample(3 * MEMBER_DATA));
        let cut = packed[..packed.len() / 2].to_vec();
        let (first, second) = returns_within(10, move || {
            let mut reader = Reader::new(std::io::Cursor::new(cut));
            let mut out = Vec::new();
            let first = reader.read_to_end(&mut out).map_err(|e| e.to_string());
            let second = reader.read(&mut [0u8; 16]).map_err(|e| e.to_string());
            (first, second)
        });
        assert!(first.unwrap_err().contains("truncated"));
        assert!(second.unwrap_err().contains("truncated"));
    }

    #[test]
    fn a_member_claiming_a_huge_size_is_refused() {
        let mut packed = compress(&sample(MEMBER_DATA));
        packed[16..20].copy_from_slice(&(4u32 << 20).to_le_bytes());
        let mut out = Vec::new();
        let err = Reader::new(std::io::Cursor::new(packed))
            .read_to_end(&mut out)
            .unwrap_err();
        assert!(err.to_string().contains("claims"), "{err}");
    }

    #[test]
    fn truncation_and_corruption_are_errors() {
        let packed = compress(&sample(3 * MEMBER_DATA));
        for cut in [packed.len() - 1, packed.len() - 9, packed.len() / 2, 25] {
            let mut out = Vec::new();
            let err =
                Reader::new(std::io::Cursor::new(packed[..cut].to_vec())).read_to_end(&mut out);
            assert!(err.is_err(), "cut at {cut} not detected");
        }
        let mut flipped = packed.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x40;
        let mut out = Vec::new();
        assert!(
            Reader::new(std::io::Cursor::new(flipped))
                .read_to_end(&mut out)
                .is_err()
        );
    }
}
