//! Compressing writers and decompressing readers for the three formats.

use std::io::{self, BufRead, Read, Write};

use flate2::bufread::MultiGzDecoder;
use flate2::write::GzEncoder;

use super::Compression;

/// A writer that compresses into `W`; `finish` writes the trailer and returns `W`.
pub enum Encoder<W: Write> {
    None(W),
    Gzip(GzEncoder<W>),
    Zstd(zstd::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    pub fn new(compression: Compression, level: i32, out: W) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => Encoder::None(out),
            Compression::Gzip => Encoder::Gzip(GzEncoder::new(
                out,
                flate2::Compression::new(level.clamp(1, 9) as u32),
            )),
            Compression::Zstd => {
                let mut encoder = zstd::Encoder::new(out, level)?;
                encoder.include_checksum(true)?;
                let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
                if workers > 1 {
                    encoder.multithread(workers as u32)?;
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

/// A reader that decompresses; every format checks its own integrity
/// (gzip CRC-32 and length per member, zstd content checksum).
pub enum Decoder<R: BufRead> {
    None(R),
    Gzip(Box<MultiGzDecoder<R>>),
    Zstd(Box<zstd::Decoder<'static, R>>),
}

impl<R: BufRead> Decoder<R> {
    pub fn new(compression: Compression, input: R) -> io::Result<Self> {
        Ok(match compression {
            Compression::None => Decoder::None(input),
            Compression::Gzip => Decoder::Gzip(Box::new(MultiGzDecoder::new(input))),
            Compression::Zstd => Decoder::Zstd(Box::new(zstd::Decoder::with_buffer(input)?)),
        })
    }
}

impl<R: BufRead> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::None(r) => r.read(buf),
            Decoder::Gzip(d) => d.read(buf),
            Decoder::Zstd(d) => d.read(buf),
        }
    }
}

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
        Decoder::new(c, data)?.read_to_end(&mut out)?;
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
