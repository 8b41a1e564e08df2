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
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use libdeflater::{CompressionLvl, Compressor, Decompressor};

/// Uncompressed bytes per member.
pub const BLOCK: usize = 1 << 20;
/// Header: 10 fixed bytes, XLEN, and one 8-byte subfield.
const HEADER: usize = 20;
const TRAILER: usize = 8;
/// Largest member a reader accepts; ours are about `BLOCK`.
const MAX_MEMBER: usize = 16 << 20;

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// What a pool reports: a finished job, or (from a feeder) the end.
enum Msg<T> {
    Done(u64, io::Result<T>),
    End(io::Result<u64>),
}

/// Worker threads: numbered jobs in, numbered results out in any order.
/// Results are unbounded so a worker never blocks; callers bound how many
/// jobs are in flight.
struct Pool<T> {
    jobs: Option<SyncSender<(u64, Vec<u8>)>>,
    results: Receiver<Msg<T>>,
    results_tx: Sender<Msg<T>>,
    workers: Vec<JoinHandle<()>>,
}

impl<T: Send + 'static> Pool<T> {
    fn new<S: 'static>(
        threads: usize,
        state: impl Fn() -> S + Send + Sync + Clone + 'static,
        work: fn(&mut S, Vec<u8>) -> io::Result<T>,
    ) -> Pool<T> {
        let (jobs, job_rx) = sync_channel::<(u64, Vec<u8>)>(threads);
        let (results_tx, results) = channel();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let workers = (0..threads)
            .map(|_| {
                let job_rx = Arc::clone(&job_rx);
                let results_tx = results_tx.clone();
                let state = state.clone();
                std::thread::spawn(move || {
                    let mut state = state();
                    loop {
                        let job = match job_rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok((seq, data)) = job else {
                            return;
                        };
                        if results_tx
                            .send(Msg::Done(seq, work(&mut state, data)))
                            .is_err()
                        {
                            return;
                        }
                    }
                })
            })
            .collect();
        Pool {
            jobs: Some(jobs),
            results,
            results_tx,
            workers,
        }
    }

    fn submit(&self, seq: u64, data: Vec<u8>) -> io::Result<()> {
        self.jobs
            .as_ref()
            .and_then(|jobs| jobs.send((seq, data)).ok())
            .ok_or_else(stopped)
    }

    fn next(&self) -> io::Result<Msg<T>> {
        self.results.recv().map_err(|_| stopped())
    }
}

impl<T> Drop for Pool<T> {
    fn drop(&mut self) {
        self.jobs.take();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

fn stopped() -> io::Error {
    io::Error::other("the gzip worker threads stopped")
}

/// A `Write` that compresses in parallel into `out`.
pub struct Writer<W: Write> {
    out: Option<W>,
    pool: Pool<Vec<u8>>,
    block: Vec<u8>,
    next_seq: u64,
    next_out: u64,
    done: BTreeMap<u64, Vec<u8>>,
    limit: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W, level: i32) -> io::Result<Self> {
        let level = CompressionLvl::new(level)
            .map_err(|_| io::Error::other(format!("{level} is not a gzip level")))?;
        let threads = threads();
        Ok(Writer {
            out: Some(out),
            pool: Pool::new(threads, move || Compressor::new(level), compress_member),
            block: Vec::with_capacity(BLOCK),
            next_seq: 0,
            next_out: 0,
            done: BTreeMap::new(),
            limit: threads as u64 * 2,
        })
    }

    fn submit_block(&mut self) -> io::Result<()> {
        let block = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
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
            return Err(stopped());
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
        let n = data.len().min(BLOCK - self.block.len());
        self.block.extend_from_slice(&data[..n]);
        if self.block.len() == BLOCK {
            self.submit_block()?;
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
    /// members are read, so memory stays at a few members. Declared before
    /// `pool` so that dropping a reader first stops the feeder, whose
    /// handle on the job queue would otherwise keep the workers waiting.
    tokens: SyncSender<()>,
    pool: Pool<Vec<u8>>,
    next: u64,
    done: BTreeMap<u64, Vec<u8>>,
    current: Vec<u8>,
    position: usize,
    /// How many members there are, once the feeder has reached the end.
    total: Option<u64>,
}

impl Reader {
    pub fn new(input: impl Read + Send + 'static) -> Self {
        let threads = threads();
        let pool = Pool::new(threads, Decompressor::new, decompress_member);
        let limit = threads * 2;
        let (tokens, token_rx) = sync_channel(limit);
        for _ in 0..limit {
            let _ = tokens.send(());
        }
        let jobs = pool.jobs.clone();
        let results = pool.results_tx.clone();
        std::thread::spawn(move || {
            let end = feed(input, jobs, token_rx);
            let _ = results.send(Msg::End(end));
        });
        Reader {
            tokens,
            pool,
            next: 0,
            done: BTreeMap::new(),
            current: Vec::new(),
            position: 0,
            total: None,
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
        while self.position == self.current.len() {
            match self.next_member()? {
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

/// Splits the input into members using the size in each header; returns
/// how many there were. A short member is a truncated stream.
fn feed(
    mut input: impl Read,
    jobs: Option<SyncSender<(u64, Vec<u8>)>>,
    tokens: Receiver<()>,
) -> io::Result<u64> {
    let jobs = jobs.ok_or_else(stopped)?;
    let mut seq = 0;
    loop {
        // The reader went away: stop quietly.
        if tokens.recv().is_err() {
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
    if size > MAX_MEMBER {
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
        for len in [0, 10, BLOCK, 3 * BLOCK + 17] {
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
        let packed = compress(&sample(8 * BLOCK));
        let mut reader = Reader::new(std::io::Cursor::new(packed));
        let mut first = vec![0u8; 1000];
        reader.read_exact(&mut first).unwrap();
        drop(reader); // must return, not hang
    }

    #[test]
    fn truncation_and_corruption_are_errors() {
        let packed = compress(&sample(3 * BLOCK));
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
