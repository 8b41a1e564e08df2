//! Seed inputs, made fresh at every start so they follow larder's format.

use std::fs;

use larder::archive::write::WriteOptions;
use larder::archive::{self, Compression};
use larder::mount::Mount;
use tar::{EntryType, Header};

use crate::tarball::{End, Member, Trailer, archive, compress, manifest};

/// The first byte of an `extract` input picks the restore's configuration
/// (see `extract.rs`); these are the ones the seeds use.
const PATHS: u8 = 0; // mount: [cache, deep/nm]
const GLOB: u8 = 1; // mount: ["**/node_modules", cache]
const NO_MOUNT: u8 = 2; // no mount setting: the manifest decides
const ESCAPE_LINK: u8 = 4; // the workspace holds node_modules/evil -> outside

fn with_config(config: u8, archive: Vec<u8>) -> Vec<u8> {
    let mut input = vec![config];
    input.extend(archive);
    input
}

/// Entries written by larder itself, in every format, plus hostile archives.
pub fn extract() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for compression in Compression::ALL {
        let entry = packed(compression);
        let configs: &[u8] = if compression == Compression::None {
            &[0, 1, 2, 3, 4, 5, 6, 7]
        } else {
            &[PATHS, NO_MOUNT, GLOB | ESCAPE_LINK]
        };
        for &config in configs {
            seeds.push(with_config(config, entry.clone()));
        }
    }
    for (config, tar) in hostile() {
        seeds.push(with_config(config, tar.clone()));
        if config == PATHS {
            seeds.push(with_config(config, compress(Compression::Gzip, &tar)));
        }
    }
    seeds
}

/// What `larder rebuild` uploads for a small tree with every kind of entry.
fn packed(compression: Compression) -> Vec<u8> {
    let dir = tempfile::tempdir_in(crate::temp_root()).unwrap();
    let ws = dir.path();
    let file = |rel: &str, text: &str| {
        let path = ws.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    };
    file("cache/a.txt", "a\n");
    file("cache/sub/b.txt", "b\n");
    file("cache/ro/c.txt", "read-only dir\n");
    file("node_modules/m/index.js", "module.exports = 2;\n");
    file("deep/nm/x", "x\n");
    std::os::unix::fs::symlink("a.txt", ws.join("cache/link")).unwrap();
    fs::hard_link(ws.join("cache/a.txt"), ws.join("cache/hard")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(ws.join("cache/ro"), fs::Permissions::from_mode(0o555)).unwrap();
    let mounts: Vec<Mount> = ["cache", "node_modules", "deep/nm"]
        .iter()
        .map(|name| Mount::resolve(ws, name).unwrap())
        .collect();
    let options = WriteOptions {
        skip_symlinks: false,
        cancel: larder::cancel::Cancel::new(),
        progress: larder::progress::Progress::default(),
    };
    let level = match compression {
        Compression::Zstd => 1,
        other => other.default_level(),
    };
    let survey = archive::write::survey(&mounts, &options).unwrap();
    let (_, out) =
        archive::pack(&mounts, &survey, &options, compression, level, Vec::new()).unwrap();
    fs::set_permissions(ws.join("cache/ro"), fs::Permissions::from_mode(0o755)).unwrap();
    out
}

/// Archives that try to write outside the mounts, each with the
/// configuration it is aimed at.
fn hostile() -> Vec<(u8, Vec<u8>)> {
    let plain = |members: &[Member]| archive(None, members, Trailer::Missing, &End::Proper);
    let larder = |mounts: &[&str], members: &[Member]| {
        archive(
            Some(&manifest(mounts, true)),
            members,
            Trailer::Correct,
            &End::Proper,
        )
    };
    let mut out = vec![
        // A symlink, then a file beneath it.
        (
            PATHS,
            plain(&[
                Member::dir("cache/"),
                Member::symlink("cache/l", "../../outside"),
                Member::file("cache/l/pwned", "x"),
            ]),
        ),
        // The same through a symlink to an absolute path, and a directory beneath.
        (
            PATHS,
            larder(
                &["cache"],
                &[
                    Member::symlink("cache/l", "/tmp"),
                    Member::dir("cache/l/d/"),
                    Member::hardlink("cache/l/h", "cache/a"),
                ],
            ),
        ),
        // `..` in names, link targets and PAX paths.
        (PATHS, plain(&[Member::file("cache/../outside-pwned", "x")])),
        (
            PATHS,
            plain(&[Member::file("cache/./sub/../../../pwned", "x")]),
        ),
        (
            PATHS,
            plain(&[Member::file(
                format!("cache/{}/../../pwned", "d".repeat(120)),
                "x",
            )]),
        ),
        // Absolute names.
        (PATHS, plain(&[Member::file("/tmp/larder-fuzz-pwned", "x")])),
        (PATHS, plain(&[Member::file("/cache/x", "x")])),
        // Hard links out of the mount, out of the workspace, to a later entry.
        (
            PATHS,
            plain(&[
                Member::hardlink("cache/h1", "keep.txt"),
                Member::hardlink("cache/h2", "cache/../keep.txt"),
                Member::hardlink("cache/h3", "/etc/passwd"),
                Member::hardlink("cache/h4", "deep/nm/later"),
                Member::file("deep/nm/later", "x"),
            ]),
        ),
        // The mount itself as a symlink out of the workspace (issue 9, defect 2).
        (
            PATHS,
            larder(&["cache"], &[Member::symlink("cache", "../outside")]),
        ),
        // A manifest naming a mount below a symlink an earlier restore left
        // (issue 9, defect 1).
        (
            GLOB | ESCAPE_LINK,
            larder(
                &["node_modules/evil/x/node_modules"],
                &[Member::file("node_modules/evil/x/node_modules/pwned", "x")],
            ),
        ),
        (
            NO_MOUNT | ESCAPE_LINK,
            larder(
                &["node_modules/evil/y"],
                &[Member::file("node_modules/evil/y/pwned", "x")],
            ),
        ),
        // A manifest naming a workspace file as a mount (issue 9, defect 4).
        (
            NO_MOUNT,
            larder(&["keep.txt"], &[Member::file("keep.txt", "replaced")]),
        ),
        // Manifest names that must not resolve.
        (
            NO_MOUNT,
            larder(
                &["../outside", "/abs", "", ".", "cache/../.."],
                &[Member::file("cache/x", "x")],
            ),
        ),
        // Entries of a mount that is not restored, then of one that is.
        (
            3,
            larder(
                &["cache", "node_modules"],
                &[
                    Member::file("cache/skipped", "x"),
                    Member::file("cache/sub/kept", "x"),
                    Member::dir("node_modules/"),
                ],
            ),
        ),
        // A lying size, a damaged end marker, trailing garbage.
        (
            PATHS,
            plain(&[Member {
                size: Some(100_000),
                ..Member::file("cache/short", "only this")
            }]),
        ),
        (
            PATHS,
            archive(
                None,
                &[Member::file("cache/a", "a")],
                Trailer::Missing,
                &End::OneBlock,
            ),
        ),
        (
            PATHS,
            archive(
                None,
                &[Member::file("cache/a", "a")],
                Trailer::Missing,
                &End::Garbage(b"garbage after the end".to_vec()),
            ),
        ),
        (
            PATHS,
            larder(
                &["cache"],
                &[
                    Member::dir("cache/").mode(0o555),
                    Member::file("cache/f", "f").mode(0o4755),
                    Member::new("cache/fifo", EntryType::Fifo),
                    Member::new("cache/char", EntryType::Char),
                    Member::dir("cache/dup"),
                    Member::file("cache/dup", "name of a directory"),
                ],
            ),
        ),
        // An unknown entry type (shown as `__Nonexhaustive(90)`: defect 9).
        (
            PATHS,
            plain(&[Member::new("cache/z", EntryType::new(b'Z'))]),
        ),
    ];
    out.push((PATHS, sparse()));
    out
}

/// A GNU sparse file that expands 512 bytes of data to 2 MiB.
fn sparse() -> Vec<u8> {
    let mut header = Header::new_gnu();
    let name = b"cache/sparse";
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.set_entry_type(EntryType::GNUSparse);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_size(512);
    let gnu = header.as_gnu_mut().unwrap();
    octal(&mut gnu.realsize, 2 << 20);
    octal(&mut gnu.sparse[0].offset, (2 << 20) - 512);
    octal(&mut gnu.sparse[0].numbytes, 512);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, &[7u8; 512][..]).unwrap();
    builder.into_inner().unwrap()
}

fn octal(field: &mut [u8], value: u64) {
    let text = format!("{value:0width$o}", width = field.len() - 1);
    field[..text.len()].copy_from_slice(text.as_bytes());
    field[text.len()] = 0;
}

/// Key templates: drone-cache's documented ones and the edges of the syntax.
pub fn key_templates() -> Vec<Vec<u8>> {
    let deep = format!("{{{{ {}arch{} }}}}", "(".repeat(64), ")".repeat(64));
    [
        "{{ .Commit.Branch }}",
        "{{ .Repo.Name }}_{{ checksum \"go.mod\" }}_{{ checksum \"go.sum\" }}_{{ arch }}_{{ os }}",
        "gomod-{{ hashFiles \"**/go.sum\" }}",
        "npm-{{ hashFiles \"package-lock.json\" \"**/yarn.lock\" }}-{{ epoch }}",
        "{{ .Commit.Branch | checksum }}",
        "{{ \"go.sum\" | checksum }}",
        "a  {{- .Build.Number -}}  b{{/* comment */}}c",
        "{{ hashFiles \"go.mod\" (checksum \"go.sum\") }}",
        "{{ hashFiles arch }}",
        "{{ `raw string` }}-{{ \"esc\\\"aped\\n\" }}-{{ -1 }}-{{ 1.5e3 }}",
        "{{ .Repo.FullName }}/{{ .Commit.Author.Email }}/{{ .Build.Event }}",
        "{{ if .Repo.Name }}x{{ end }}",
        "{{ $x }}",
        "{{ .Repo.Nmae }}",
        "{{ . }}",
        "{{ }}",
        "{{ .Commit.Branch",
        "{{ (checksum \"go.sum\" }}",
        "{{ arch) }}",
        "{{ \"a\" | \"b\" }}",
        &deep,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}
