//! Buffers for decompressed chunks, handed back once the extractor is done
//! with them. A restore decompresses hundreds of megabytes a chunk at a
//! time; fresh buffers cost a page fault per 4 KiB each time (a third of a
//! restore's system time on the benchmark corpus), reused ones do not.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// A bounded stack of spare buffers.
#[derive(Clone)]
pub struct Buffers {
    spare: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Spare buffers kept at most.
    kept: usize,
}

impl Default for Buffers {
    /// For decompressed chunks: about the chunks waiting for the extractor.
    fn default() -> Buffers {
        Buffers::keeping(48)
    }
}

impl Buffers {
    /// A pool that keeps at most `kept` spare buffers: pools of buffers of
    /// different sizes are kept apart, or each spare grows to the largest.
    pub fn keeping(kept: usize) -> Buffers {
        Buffers {
            spare: Arc::default(),
            kept,
        }
    }

    /// An empty buffer with room for `size` bytes.
    pub fn take(&self, size: usize) -> Vec<u8> {
        let spare = self.spare.lock().ok().and_then(|mut spare| spare.pop());
        let mut buffer = spare.unwrap_or_default();
        buffer.clear();
        buffer.reserve(size);
        buffer
    }

    /// `buffer` as `Bytes` that return it here when the last clone is dropped.
    pub fn share(&self, buffer: Vec<u8>) -> Bytes {
        Bytes::from_owner(Lent {
            buffer,
            home: self.clone(),
        })
    }
}

struct Lent {
    buffer: Vec<u8>,
    home: Buffers,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Ok(mut spare) = self.home.spare.lock()
            && spare.len() < self.home.kept
        {
            spare.push(std::mem::take(&mut self.buffer));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_comes_back_once_its_bytes_are_dropped() {
        let buffers = Buffers::default();
        let mut buffer = buffers.take(1000);
        buffer.extend_from_slice(b"chunk");
        let address = buffer.as_ptr();
        let bytes = buffers.share(buffer);
        let clone = bytes.slice(1..3);
        assert_eq!(&clone[..], b"hu");
        drop(bytes);
        assert!(
            buffers.spare.lock().unwrap().is_empty(),
            "a clone still reads it"
        );
        drop(clone);
        let again = buffers.take(10);
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), address);
    }
}
