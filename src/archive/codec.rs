//! Compressing writers and decompressing readers for the three formats.

use std::io::{self, BufRead, Read, Write};

use flate2::bufread::MultiGzDecoder;

use super::{Compression, gzip_blocks};
use crate::pipe::ReadAhead;

/// Bytes per zstd worker job.
const ZSTD_JOB: u32 = 4 << 20;

/// A writer that compresses into `W`; `finish` writes the trailer and returns `W`.
pub enum Encoder<W: Write> {
    None(W),
    Gzip(gzip_blocks::Writer<W>),
    Zstd(zstd::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    pub fn new(compression: Compression, level: i32, out: W) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => Encoder::None(out),
            Compression::Gzip => Encoder::Gzip(gzip_blocks::Writer::new(out, level.clamp(0, 9))?),
            Compression::Zstd => {
                let mut encoder = zstd::Encoder::new(out, level)?;
                encoder.include_checksum(true)?;
                let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
                if workers > 1 {
                    encoder.multithread(workers as u32)?;
                    // zstd's own job size at level 3 is 8 MiB; 4 MiB halves
                    // its buffers (peak RSS 108 -> 72 MiB on the benchmark
                    // corpus) at the same speed and ratio.
                    encoder.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB))?;
                }
                Encoder::Zstd(encoder)
            }
        })
    }

    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

/// A reader that decompresses `input`, telling the format from its first
/// bytes; every format checks its own integrity (gzip CRC-32 and length per
/// member, zstd content checksum). Decompression runs on other threads:
/// larder's own gzip entries in parallel, member by member; zstd and other
/// gzip one thread ahead. `None` for an empty input.
pub fn decoder<R: BufRead + Send + 'static>(
    mut input: R,
) -> io::Result<Option<(Compression, Box<dyn Read + Send>)>> {
    // Peek far enough for the longest signature, whatever the chunking.
    let mut head = Vec::with_capacity(PEEK);
    while head.len() < PEEK {
        let available = input.fill_buf()?;
        if available.is_empty() {
            break;
        }
        let n = available.len().min(PEEK - head.len());
        head.extend_from_slice(&available[..n]);
        input.consume(n);
    }
    if head.is_empty() {
        return Ok(None);
    }
    let compression = Compression::detect(&head);
    let blocked = gzip_blocks::is_blocked(&head);
    let input = io::Cursor::new(head).chain(input);
    let reader: Box<dyn Read + Send> = match compression {
        Compression::None => Box::new(input),
        Compression::Gzip if blocked => Box::new(gzip_blocks::Reader::new(input)),
        Compression::Gzip => Box::new(ReadAhead::spawn(MultiGzDecoder::new(input))),
        Compression::Zstd => Box::new(ReadAhead::spawn(zstd::Decoder::with_buffer(input)?)),
    };
    Ok(Some((compression, reader)))
}

/// Bytes looked at to tell the format (larder's gzip header is 20).
const PEEK: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
        let mut e = Encoder::new(c, c.default_level(), Vec::new()).unwrap();
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn decompress(c: Compression, data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let (found, mut reader) = decoder(io::Cursor::new(data.to_vec()))?.unwrap();
        assert_eq!(found, c);
        reader.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn round_trips_and_detects_truncation() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for c in [Compression::Gzip, Compression::Zstd] {
            let packed = compress(c, &data);
            assert_eq!(Compression::detect(&packed), c);
            assert_eq!(decompress(c, &packed).unwrap(), data);
            let cut = &packed[..packed.len() - 7];
            assert!(decompress(c, cut).is_err(), "{c}: truncation not detected");
            let mut flipped = packed.clone();
            let middle = flipped.len() / 2;
            flipped[middle] ^= 0x55;
            assert!(
                decompress(c, &flipped).is_err(),
                "{c}: corruption not detected"
            );
        }
    }
}
