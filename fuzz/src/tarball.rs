//! Archives built by hand, member by member, with names and links that no
//! honest writer produces (the tar crate's path setters refuse `..` and
//! absolute names, so names go into the raw header fields).

use std::io::{self, Write};

use larder::archive::Compression;
use larder::archive::codec::Encoder;
use larder::archive::digest::{self, Tally};
use larder::archive::manifest::{self, Manifest};
use larder::archive::pax::append_global;
use tar::{Builder, EntryType, Header};

/// One tar member.
#[derive(Clone, Debug)]
pub struct Member {
    pub name: Vec<u8>,
    pub kind: EntryType,
    pub data: Vec<u8>,
    pub link: Option<Vec<u8>>,
    pub mode: u32,
    /// The size written in the header, when it should lie.
    pub size: Option<u64>,
}

impl Member {
    pub fn new(name: impl AsRef<[u8]>, kind: EntryType) -> Member {
        Member {
            name: name.as_ref().to_vec(),
            kind,
            data: Vec::new(),
            link: None,
            mode: if kind == EntryType::Directory {
                0o755
            } else {
                0o644
            },
            size: None,
        }
    }

    pub fn file(name: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> Member {
        Member {
            data: data.as_ref().to_vec(),
            ..Member::new(name, EntryType::Regular)
        }
    }

    pub fn dir(name: impl AsRef<[u8]>) -> Member {
        Member::new(name, EntryType::Directory)
    }

    pub fn symlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Member {
        Member {
            link: Some(target.as_ref().to_vec()),
            mode: 0o777,
            ..Member::new(name, EntryType::Symlink)
        }
    }

    pub fn hardlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Member {
        Member {
            link: Some(target.as_ref().to_vec()),
            ..Member::new(name, EntryType::Link)
        }
    }

    pub fn mode(mut self, mode: u32) -> Member {
        self.mode = mode;
        self
    }
}

/// Appends `member`; a name or link too long for the header goes into a
/// PAX record, as GNU tar writes it.
pub fn append<W: Write>(builder: &mut Builder<W>, member: &Member) -> io::Result<()> {
    let mut header = Header::new_ustar();
    let mut pax: Vec<(&str, &[u8])> = Vec::new();
    let old = header.as_old_mut();
    if member.name.len() < old.name.len() {
        old.name[..member.name.len()].copy_from_slice(&member.name);
    } else {
        pax.push(("path", &member.name));
        old.name[..99].copy_from_slice(&member.name[..99]);
    }
    if let Some(link) = &member.link {
        if link.len() < old.linkname.len() {
            old.linkname[..link.len()].copy_from_slice(link);
        } else {
            pax.push(("linkpath", link));
        }
    }
    header.set_entry_type(member.kind);
    header.set_mode(member.mode);
    header.set_mtime(1_700_000_000);
    header.set_size(member.size.unwrap_or(member.data.len() as u64));
    header.set_cksum();
    if !pax.is_empty() {
        builder.append_pax_extensions(pax)?;
    }
    builder.append(&header, member.data.as_slice())
}

/// The digest trailer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trailer {
    Correct,
    Wrong,
    Missing,
}

/// What follows the last member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// Two zero blocks, as every tar writer ends.
    Proper,
    /// Nothing: the stream stops after the last member.
    Missing,
    /// One zero block only.
    OneBlock,
    /// The end marker, then more zero blocks (tar's record padding).
    Padded(usize),
    /// The end marker, then these bytes.
    Garbage(Vec<u8>),
}

/// A tar stream laid out as larder writes one: the manifest (if any), the
/// members, the digest trailer, the end marker.
pub fn archive(
    manifest: Option<&Manifest>,
    members: &[Member],
    trailer: Trailer,
    end: &End,
) -> Vec<u8> {
    let mut builder = Builder::new(Tally::new(Vec::new()));
    if let Some(m) = manifest {
        append_global(&mut builder, manifest::PAX_KEY, m.to_json().as_bytes()).unwrap();
    }
    for member in members {
        append(&mut builder, member).unwrap();
    }
    let hash = builder.get_ref().digest();
    match trailer {
        Trailer::Correct => append_global(
            &mut builder,
            digest::PAX_KEY,
            digest::format(hash).as_bytes(),
        )
        .unwrap(),
        Trailer::Wrong => append_global(
            &mut builder,
            digest::PAX_KEY,
            digest::format(!hash).as_bytes(),
        )
        .unwrap(),
        Trailer::Missing => {}
    }
    let mut bytes = builder.into_inner().unwrap().inner;
    match end {
        End::Proper => {}
        End::Missing => bytes.truncate(bytes.len() - 1024),
        End::OneBlock => bytes.truncate(bytes.len() - 512),
        End::Padded(blocks) => bytes.resize(bytes.len() + 512 * blocks, 0),
        End::Garbage(garbage) => bytes.extend_from_slice(garbage),
    }
    bytes
}

/// A manifest naming `mounts`, as larder writes it.
// `..Default::default()` so that fields added to the manifest later keep this compiling.
#[allow(clippy::needless_update)]
pub fn manifest(mounts: &[&str], digest: bool) -> Manifest {
    Manifest {
        version: 1,
        writer: "larder fuzz".into(),
        mounts: mounts.iter().map(|m| m.to_string()).collect(),
        digest: digest.then(|| "xxh3-64".into()),
        ..Default::default()
    }
}

/// Compresses a tar stream with larder's own encoder.
pub fn compress(compression: Compression, tar: &[u8]) -> Vec<u8> {
    let level = match compression {
        Compression::Zstd => 1,
        other => other.default_level(),
    };
    let mut encoder = Encoder::new(compression, level, Vec::new()).unwrap();
    encoder.write_all(tar).unwrap();
    encoder.finish().unwrap()
}
