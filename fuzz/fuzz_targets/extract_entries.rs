//! Structure-aware: one or two entries built from a list of members, each
//! with a manifest and a correct digest trailer when the input says so, in
//! any of the three formats. Raw bytes rarely get past the digest and the
//! gzip/zstd checksums; these entries do, so commits (and a second restore
//! on top of the first, as in issue 9's symlink escape) are exercised too.
//!
//! Checks: those of `Sandbox::restore` after every restore, and that a
//! damaged end-of-archive marker or garbage after it is refused.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use larder::archive::Compression;
use larder_fuzz::sandbox::Sandbox;
use larder_fuzz::tarball::{self, End, Member, Trailer};
use libfuzzer_sys::fuzz_target;
use tar::EntryType;

#[derive(Arbitrary, Debug)]
struct Input {
    /// Bits 0-1: the `mount` setting; bit 2: a symlink out in the workspace.
    config: u8,
    first: Entry,
    second: Option<Entry>,
}

#[derive(Arbitrary, Debug)]
struct Entry {
    compression: Format,
    manifest: Option<Vec<Name>>,
    members: Vec<MemberIn>,
    trailer: TrailerIn,
    end: EndIn,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Format {
    Tar,
    Gzip,
    Zstd,
}

#[derive(Arbitrary, Debug, PartialEq)]
enum TrailerIn {
    Correct,
    Wrong,
    Missing,
}

#[derive(Arbitrary, Debug)]
enum EndIn {
    Proper,
    Missing,
    OneBlock,
    Padded(u8),
    Garbage(Vec<u8>),
}

/// A name: absolute or not, made of parts that matter to larder.
#[derive(Arbitrary, Debug)]
struct Name {
    absolute: bool,
    parts: Vec<Part>,
    trailing_slash: bool,
}

#[derive(Arbitrary, Debug)]
enum Part {
    Cache,
    Sub,
    Deep,
    Nm,
    NodeModules,
    Evil,
    X,
    A,
    B,
    KeepTxt,
    Src,
    Outside,
    Ws,
    Dot,
    DotDot,
    Empty,
    Larder,
    Long,
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct MemberIn {
    name: Name,
    kind: Kind,
    mode: u16,
    data: Vec<u8>,
    lie_about_size: Option<u16>,
}

#[derive(Arbitrary, Debug)]
enum Kind {
    File,
    Dir,
    Symlink(Target),
    Hardlink(Name),
    Fifo,
    Other(u8),
}

#[derive(Arbitrary, Debug)]
enum Target {
    Name(Name),
    /// `../` repeated, then `outside`.
    Up(u8),
    /// The outside directory's absolute path.
    OutsideAbsolute,
    Root,
}

impl Name {
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.absolute {
            out.push(b'/');
        }
        for (i, part) in self.parts.iter().take(12).enumerate() {
            if i > 0 {
                out.push(b'/');
            }
            out.extend_from_slice(match part {
                Part::Cache => b"cache",
                Part::Sub => b"sub",
                Part::Deep => b"deep",
                Part::Nm => b"nm",
                Part::NodeModules => b"node_modules",
                Part::Evil => b"evil",
                Part::X => b"x",
                Part::A => b"a",
                Part::B => b"b",
                Part::KeepTxt => b"keep.txt",
                Part::Src => b"src",
                Part::Outside => b"outside",
                Part::Ws => b"ws",
                Part::Dot => b".",
                Part::DotDot => b"..",
                Part::Empty => b"",
                Part::Larder => b".larder-restore-0123456789ab",
                Part::Long => &[b'l'; 120],
                Part::Raw(raw) => &raw[..raw.len().min(64)],
            });
        }
        if self.trailing_slash {
            out.push(b'/');
        }
        out
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }
}

impl Entry {
    fn build(&self, sandbox: &Sandbox) -> Vec<u8> {
        let manifest = self.manifest.as_ref().map(|names| {
            let texts: Vec<String> = names.iter().take(4).map(Name::text).collect();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            tarball::manifest(&refs, self.trailer != TrailerIn::Missing)
        });
        let members: Vec<Member> = self
            .members
            .iter()
            .take(24)
            .map(|m| m.build(sandbox))
            .collect();
        let trailer = match self.trailer {
            TrailerIn::Correct => Trailer::Correct,
            TrailerIn::Wrong => Trailer::Wrong,
            TrailerIn::Missing => Trailer::Missing,
        };
        let tar = tarball::archive(manifest.as_ref(), &members, trailer, &self.end());
        match self.compression {
            Format::Tar => tar,
            Format::Gzip => tarball::compress(Compression::Gzip, &tar),
            Format::Zstd => tarball::compress(Compression::Zstd, &tar),
        }
    }

    fn end(&self) -> End {
        match &self.end {
            EndIn::Proper => End::Proper,
            EndIn::Missing => End::Missing,
            EndIn::OneBlock => End::OneBlock,
            EndIn::Padded(n) => End::Padded(usize::from(*n % 20)),
            EndIn::Garbage(g) => End::Garbage(g.iter().take(600).copied().collect()),
        }
    }

    /// Whatever else is wrong, this entry must be refused.
    fn damaged_end(&self) -> bool {
        match &self.end {
            EndIn::Missing | EndIn::OneBlock => true,
            EndIn::Garbage(g) => g.iter().take(600).any(|b| *b != 0),
            EndIn::Proper | EndIn::Padded(_) => false,
        }
    }
}

impl MemberIn {
    fn build(&self, sandbox: &Sandbox) -> Member {
        let name = self.name.bytes();
        let mut member = match &self.kind {
            Kind::File => Member::file(&name, &self.data[..self.data.len().min(4096)]),
            Kind::Dir => Member::dir(&name),
            Kind::Symlink(target) => {
                let target = match target {
                    Target::Name(n) => n.bytes(),
                    Target::Up(n) => {
                        let mut t = b"../".repeat(usize::from(*n % 6));
                        t.extend_from_slice(b"outside");
                        t
                    }
                    Target::OutsideAbsolute => {
                        sandbox.outside.as_os_str().as_encoded_bytes().to_vec()
                    }
                    Target::Root => b"/".to_vec(),
                };
                Member::symlink(&name, target)
            }
            Kind::Hardlink(target) => Member::hardlink(&name, target.bytes()),
            Kind::Fifo => Member::new(&name, EntryType::Fifo),
            Kind::Other(byte) => Member::new(&name, EntryType::new(*byte)),
        };
        member.mode = u32::from(self.mode) & 0o7777;
        if let Some(size) = self.lie_about_size {
            member.size = Some(u64::from(size));
        }
        member
    }
}

fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(Sandbox::new)
}

fuzz_target!(|input: Input| {
    let escape_link = input.config & 4 != 0;
    let skip_known = larder_fuzz::skip_known();
    if escape_link && skip_known {
        return;
    }
    let sandbox = sandbox();
    sandbox.reset(escape_link);
    let specs = sandbox.specs(input.config & 3);
    for entry in std::iter::once(&input.first).chain(input.second.as_ref()) {
        // A symlink the first restore left is issue 9's known escape.
        if skip_known && sandbox.has_symlink() {
            return;
        }
        let restored = sandbox.restore(entry.build(sandbox), &specs);
        if entry.damaged_end() && !skip_known {
            assert!(
                restored.error.is_some(),
                "an entry whose end-of-archive marker is damaged or followed by garbage \
                 was restored (issue 9, defect 8): {:?}",
                entry.end
            );
        }
    }
});
