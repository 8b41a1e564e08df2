//! Hand-made tar archives with entries no honest writer produces: names
//! with `..`, absolute names, links out of the tree. Written with raw header
//! fields, because the tar crate (rightly) refuses to build such names.

use tar::{EntryType, Header};

pub struct Raw {
    name: String,
    kind: EntryType,
    data: Vec<u8>,
    link: Option<String>,
    mode: u32,
    /// The header's size field, when it should not say `data.len()`.
    size_field: Option<[u8; 12]>,
    /// For a GNU sparse file: its real size; `data` is its last bytes.
    sparse_size: Option<u64>,
}

impl Raw {
    pub fn file(name: &str, data: &[u8]) -> Raw {
        Raw::new(name, EntryType::Regular, data.to_vec(), None, 0o644)
    }

    pub fn dir(name: &str) -> Raw {
        Raw::new(name, EntryType::Directory, Vec::new(), None, 0o755)
    }

    pub fn symlink(name: &str, target: &str) -> Raw {
        Raw::new(
            name,
            EntryType::Symlink,
            Vec::new(),
            Some(target.into()),
            0o777,
        )
    }

    pub fn hardlink(name: &str, target: &str) -> Raw {
        Raw::new(
            name,
            EntryType::Link,
            Vec::new(),
            Some(target.into()),
            0o644,
        )
    }

    pub fn special(name: &str, kind: EntryType) -> Raw {
        Raw::new(name, kind, Vec::new(), None, 0o644)
    }

    pub fn mode(mut self, mode: u32) -> Raw {
        self.mode = mode;
        self
    }

    /// An entry whose type byte is `byte` (e.g. `b'Z'`, which no tar knows).
    pub fn typed(name: &str, byte: u8) -> Raw {
        Raw::new(name, EntryType::new(byte), Vec::new(), None, 0o644)
    }

    /// A PAX global header holding one record.
    pub fn global(key: &str, value: &str) -> Raw {
        let record = format!(" {key}={value}\n");
        let mut len = record.len() + 1;
        while len != record.len() + len.to_string().len() {
            len = record.len() + len.to_string().len();
        }
        let data = format!("{len}{record}").into_bytes();
        Raw::new(
            "pax_global_header",
            EntryType::XGlobalHeader,
            data,
            None,
            0o644,
        )
    }

    /// Claims `size` bytes in the header, whatever the data holds.
    pub fn declared_size(mut self, size: u64) -> Raw {
        self.size_field = Some(number(size));
        self
    }

    /// A size field in base-256 that is negative (GNU's binary encoding).
    pub fn negative_size(mut self) -> Raw {
        self.size_field = Some([0xff; 12]);
        self
    }

    /// A GNU sparse file of `real` bytes: holes, then `tail` at the end.
    /// A few hundred bytes of archive that unpack to `real` bytes of disk.
    pub fn sparse(name: &str, real: u64, tail: &[u8]) -> Raw {
        let mut raw = Raw::new(name, EntryType::GNUSparse, tail.to_vec(), None, 0o644);
        raw.sparse_size = Some(real);
        raw
    }

    fn new(name: &str, kind: EntryType, data: Vec<u8>, link: Option<String>, mode: u32) -> Raw {
        Raw {
            name: name.into(),
            kind,
            data,
            link,
            mode,
            size_field: None,
            sparse_size: None,
        }
    }
}

/// A plain tar holding `entries` exactly as given.
pub fn tar(entries: &[Raw]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for raw in entries {
        let mut header = match raw.sparse_size {
            Some(_) => Header::new_gnu(),
            None => Header::new_ustar(),
        };
        let name = raw.name.as_bytes();
        assert!(name.len() < 100, "keep hostile names short");
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_entry_type(raw.kind);
        header.set_mode(raw.mode);
        header.set_mtime(1_700_000_000);
        header.set_size(raw.data.len() as u64);
        if let Some(link) = &raw.link {
            header.set_link_name_literal(link.as_bytes()).unwrap();
        }
        if let Some(real) = raw.sparse_size {
            let gnu = header.as_gnu_mut().unwrap();
            let len = raw.data.len() as u64;
            gnu.sparse[0].offset = number(real - len);
            gnu.sparse[0].numbytes = number(len);
            gnu.realsize = number(real);
        }
        if let Some(size) = raw.size_field {
            header.as_old_mut().size = size;
        }
        header.set_cksum();
        builder.append(&header, raw.data.as_slice()).unwrap();
    }
    builder.into_inner().unwrap()
}

/// A larder manifest naming `mounts`, with the declared size of each
/// (entries, bytes) when given.
pub fn manifest(mounts: &[&str], totals: &[(u64, u64)]) -> Raw {
    let totals: Vec<String> = totals
        .iter()
        .map(|(entries, bytes)| format!(r#"{{"entries":{entries},"bytes":{bytes}}}"#))
        .collect();
    let mounts: Vec<String> = mounts.iter().map(|m| format!("\"{m}\"")).collect();
    let json = format!(
        r#"{{"version":1,"writer":"test","mounts":[{}],"totals":[{}]}}"#,
        mounts.join(","),
        totals.join(",")
    );
    Raw::global("LARDER.manifest", &json)
}

/// A 12-byte tar number: octal when it fits, else GNU's base-256.
fn number(n: u64) -> [u8; 12] {
    if n < 8u64.pow(11) {
        return *format!("{n:011o}\0").as_bytes().first_chunk().unwrap();
    }
    let mut field = [0u8; 12];
    field[4..].copy_from_slice(&n.to_be_bytes());
    field[0] = 0x80;
    field
}
