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

    fn new(name: &str, kind: EntryType, data: Vec<u8>, link: Option<String>, mode: u32) -> Raw {
        Raw {
            name: name.into(),
            kind,
            data,
            link,
            mode,
        }
    }
}

/// A plain tar holding `entries` exactly as given.
pub fn tar(entries: &[Raw]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for raw in entries {
        let mut header = Header::new_ustar();
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
        header.set_cksum();
        builder.append(&header, raw.data.as_slice()).unwrap();
    }
    builder.into_inner().unwrap()
}
