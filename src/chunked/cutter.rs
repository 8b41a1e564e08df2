//! Cutting a stream into content-defined chunks as it is written.
//!
//! FastCDC (v2020, normalisation level 1, the crate's default gear table)
//! finds cut points from the bytes themselves, so an insertion shifts only
//! the chunks around it and the rest are found again, already stored. The
//! crate cuts slices and reads from a `Read`; the tar writer pushes into a
//! `Write`, so this adapter buffers until a whole maximum-size window is
//! there and cuts exactly where `fastcdc::v2020::StreamCDC` would (it, too,
//! cuts only with a full window or at the end of the stream).

use std::io;

use bytes::{Bytes, BytesMut};
use fastcdc::v2020::{Normalization, cut, select_masks};

use super::Params;

/// A `Write` that hands each chunk, in order, to `sink`.
pub struct Cutter<F: FnMut(Bytes) -> io::Result<()>> {
    buffer: BytesMut,
    params: Params,
    masks: (u64, u64),
    sink: F,
}

impl<F: FnMut(Bytes) -> io::Result<()>> Cutter<F> {
    pub fn new(params: Params, sink: F) -> Self {
        Cutter {
            buffer: BytesMut::with_capacity(2 * params.max),
            masks: select_masks(params.avg, Normalization::Level1),
            params,
            sink,
        }
    }

    /// Cuts what is left (the end of the stream) and returns the sink.
    pub fn finish(mut self) -> io::Result<F> {
        while !self.buffer.is_empty() {
            self.cut_one()?;
        }
        Ok(self.sink)
    }

    fn cut_one(&mut self) -> io::Result<()> {
        let Params { min, avg, max } = self.params;
        let (s, l) = self.masks;
        let (_, length) = cut(&self.buffer, min, avg, max, s, l, s << 1, l << 1);
        // `cut` never returns 0 for a non-empty buffer; guard anyway so a
        // surprise cannot loop forever.
        let length = length.clamp(1, self.buffer.len());
        let chunk = self.buffer.split_to(length).freeze();
        (self.sink)(chunk)
    }
}

impl<F: FnMut(Bytes) -> io::Result<()>> io::Write for Cutter<F> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(data);
        while self.buffer.len() >= self.params.max {
            self.cut_one()?;
        }
        if self.buffer.capacity() - self.buffer.len() < self.params.max {
            self.buffer.reserve(2 * self.params.max);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::testing::noise;

    fn chunks(params: Params, data: &[u8], piece: usize) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut cutter = Cutter::new(params, |c| {
            out.push(c);
            Ok(())
        });
        for part in data.chunks(piece) {
            cutter.write_all(part).unwrap();
        }
        let _sink = cutter.finish().unwrap();
        out
    }

    #[test]
    fn cuts_where_the_crate_cuts_whatever_the_write_sizes() {
        let params = Params::SMALL;
        let data = noise(3 << 20, 1);
        let expected: Vec<usize> =
            fastcdc::v2020::StreamCDC::new(data.as_slice(), params.min, params.avg, params.max)
                .map(|c| c.unwrap().length)
                .collect();
        for piece in [1, 3587, 1 << 20] {
            let ours: Vec<usize> = chunks(params, &data, piece)
                .iter()
                .map(|c| c.len())
                .collect();
            assert_eq!(ours, expected, "writes of {piece} bytes");
        }
        assert!(expected.len() > 10, "{} chunks", expected.len());
    }

    #[test]
    fn an_insertion_changes_only_the_chunks_around_it() {
        let params = Params::SMALL;
        let data = noise(4 << 20, 2);
        let mut changed = data.clone();
        changed.splice(1 << 20..1 << 20, noise(5000, 3));
        let before: std::collections::HashSet<Bytes> =
            chunks(params, &data, 65536).into_iter().collect();
        let after = chunks(params, &changed, 65536);
        let new = after.iter().filter(|c| !before.contains(*c)).count();
        assert!(new <= 3, "{new} of {} chunks are new", after.len());
        let joined: Vec<u8> = after.iter().flat_map(|c| c.iter().copied()).collect();
        assert_eq!(joined, changed);
    }
}
