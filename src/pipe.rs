//! Bridges between the blocking archive code and async transfers.
//!
//! Archiving and extraction are plain `Write`/`Read` code on a blocking
//! thread; uploads and downloads are async. They meet in bounded channels of
//! byte chunks, so memory stays at a few chunks however large the cache is.

use std::io::{self, Read, Write};

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

/// Size of the chunks handed across; transfers regroup them into parts.
pub const CHUNK: usize = 1 << 20;

/// A `Write` that sends full chunks to an async consumer.
pub struct ChunkWriter {
    tx: mpsc::Sender<Bytes>,
    buf: BytesMut,
    written: u64,
}

impl ChunkWriter {
    pub fn new(tx: mpsc::Sender<Bytes>) -> Self {
        ChunkWriter {
            tx,
            buf: BytesMut::with_capacity(CHUNK),
            written: 0,
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.written += chunk.len() as u64;
        self.buf.reserve(CHUNK);
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }

    /// Sends what is buffered and returns the number of bytes written.
    pub fn finish(mut self) -> io::Result<u64> {
        self.send()?;
        Ok(self.written)
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A `BufRead` over batches of chunks from an async producer (one batch
/// per downloaded range). The producer reports a failure as an `Err` item;
/// a closed channel is the end of the data. Chunks are read in place.
pub struct ChunkReader {
    rx: mpsc::Receiver<io::Result<Vec<Bytes>>>,
    queue: std::collections::VecDeque<Bytes>,
    waited: Waited,
}

impl ChunkReader {
    /// A reader of `rx` that adds the time it waits for a batch to `waited`.
    pub fn new(rx: mpsc::Receiver<io::Result<Vec<Bytes>>>, waited: Waited) -> Self {
        ChunkReader {
            rx,
            queue: std::collections::VecDeque::new(),
            waited,
        }
    }
}

/// How long a reader waited for its producer, summed: what tells a restore
/// bound by the download from one bound by its own unpacking.
#[derive(Clone, Debug, Default)]
pub struct Waited(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl Waited {
    fn add(&self, time: std::time::Duration) {
        let nanos = u64::try_from(time.as_nanos()).unwrap_or(u64::MAX);
        self.0
            .fetch_add(nanos, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn total(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.0.load(std::sync::atomic::Ordering::Relaxed))
    }
}

impl io::BufRead for ChunkReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.queue.front().is_none_or(|c| c.is_empty()) {
            if self.queue.pop_front().is_some() {
                continue;
            }
            let asked = std::time::Instant::now();
            let received = self.rx.blocking_recv();
            self.waited.add(asked.elapsed());
            match received {
                Some(Ok(batch)) => self.queue.extend(batch),
                Some(Err(e)) => return Err(e),
                None => return Ok(&[]),
            }
        }
        Ok(self.queue.front().map_or(&[], |c| &c[..]))
    }

    fn consume(&mut self, amount: usize) {
        if let Some(chunk) = self.queue.front_mut() {
            bytes::Buf::advance(chunk, amount.min(chunk.len()));
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = io::BufRead::fill_buf(self)?;
        let n = buf.len().min(available.len());
        buf[..n].copy_from_slice(&available[..n]);
        io::BufRead::consume(self, n);
        Ok(n)
    }
}

/// Runs a reader (a decompressor) on its own thread, a few chunks ahead of
/// the consumer, so decompression overlaps with what consumes its output.
/// Buffers go back and forth between the threads instead of being
/// reallocated.
pub struct ReadAhead {
    chunks: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    spare: std::sync::mpsc::SyncSender<Vec<u8>>,
    current: Vec<u8>,
    position: usize,
}

impl ReadAhead {
    const CHUNK: usize = 256 * 1024;
    const DEPTH: usize = 4;

    pub fn spawn(mut inner: impl Read + Send + 'static) -> ReadAhead {
        let (chunk_tx, chunks) = std::sync::mpsc::sync_channel(Self::DEPTH);
        let (spare, spare_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(Self::DEPTH + 2);
        std::thread::spawn(move || {
            loop {
                let mut buf = spare_rx.try_recv().unwrap_or_default();
                buf.resize(Self::CHUNK, 0);
                let mut filled = 0;
                let result = loop {
                    match inner.read(&mut buf[filled..]) {
                        Ok(0) => break Ok(()),
                        Ok(n) => {
                            filled += n;
                            if filled == buf.len() {
                                break Ok(());
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                buf.truncate(filled);
                let end = filled == 0 || result.is_err();
                let message = match result {
                    Ok(()) => Ok(buf),
                    Err(e) => Err(e),
                };
                if (filled > 0 || message.is_err()) && chunk_tx.send(message).is_err() {
                    return;
                }
                if end {
                    return;
                }
            }
        });
        ReadAhead {
            chunks,
            spare,
            current: Vec::new(),
            position: 0,
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.position == self.current.len() {
            match self.chunks.recv() {
                Ok(Ok(chunk)) => {
                    let used = std::mem::replace(&mut self.current, chunk);
                    let _ = self.spare.try_send(used);
                    self.position = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.position);
        buf[..n].copy_from_slice(&self.current[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}
