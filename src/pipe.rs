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

/// A `Read` over chunks from an async producer. The producer reports a
/// failure as an `Err` item; a closed channel is the end of the data.
pub struct ChunkReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl ChunkReader {
    pub fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        ChunkReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
