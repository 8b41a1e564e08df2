//! Where each file goes in the tar stream: already-compressed files are
//! spread among the others instead of sitting where the walk finds them.
//!
//! Why: a restore is a pipeline (download, decompress, extract) that runs at
//! the pace of its slowest stage, and the slowest stage depends on the data.
//! Already-compressed files (a Go module cache's `cache/download/**.zip`, a
//! cargo registry's `cache/**.crate`) are network-bound: many bytes on the
//! wire, nearly nothing to decompress. Sources are extractor-bound: few
//! bytes on the wire, much to decompress and write. A walk sorted by name
//! puts all of the first kind together (`cache` sorts before `github.com`),
//! so a restore over a real link first waits for the network with the
//! extractor idle, then waits for the extractor with the network half idle:
//! it takes the sum of the two phases, not the larger. Spread out, the two
//! kinds overlap. A rebuild has the same shape in the other direction.
//!
//! Placement must also be *stable*, or chunked entries would lose their
//! deduplication: a file that moves in the stream changes the chunks around
//! its old and its new place. So each compressed file is placed by
//! consistent hashing: it goes right after the entry that owns the first
//! point on a hash ring at or after the file's own hash (wrapping around).
//! The entries a file may follow (see `Planner`) own one point per 64 KiB
//! of file bytes since the previous such entry, so files land in proportion
//! to bytes. Adding a module adds one such entry, whose points take over
//! only the files whose hashes fall just before them (on average the
//! number of compressed files times the module's share of the bytes: about
//! one for a Go module cache), so nearly every file keeps its place; a rule
//! like "one zip every N bytes" would move them all.
//!
//! Only regular files with a single link move (hard-link targets must come
//! before their links), only those big enough to matter, and only out of
//! writable directories.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use super::tree::Stat;

/// Files smaller than this stay where the walk finds them: moving them
/// gains nothing worth the bookkeeping.
const MIN_SIZE: u64 = 16 * 1024;

/// Name endings of formats that are compressed already (case-insensitive):
/// package archives of the common toolchains, compressed tarballs, images.
const COMPRESSED: &[&str] = &[
    ".zip", ".crate", ".jar", ".war", ".whl", ".nupkg", ".gem", ".apk", ".aar", ".gz", ".tgz",
    ".zst", ".xz", ".txz", ".bz2", ".tbz2", ".lz4", ".br", ".7z", ".rar", ".deb", ".rpm", ".png",
    ".jpg", ".jpeg", ".gif", ".webp", ".woff2",
];

/// Whether a file name says its content is compressed already.
pub fn is_compressed_name(name: &OsStr) -> bool {
    let name = name.as_bytes();
    COMPRESSED.iter().any(|ext| {
        let ext = ext.as_bytes();
        name.len() > ext.len() && name[name.len() - ext.len()..].eq_ignore_ascii_case(ext)
    })
}

/// What the planner needs of one walked entry.
#[derive(Clone, Copy, Debug)]
pub struct Walked {
    /// Components below the mount (the mount itself is 0).
    pub depth: usize,
    /// For a directory: whether its owner may write into it.
    pub dir_writable: Option<bool>,
    /// A compressed file the writer may place by hash.
    pub compressed: bool,
    /// File bytes (0 for directories and links).
    pub bytes: u64,
}

impl Walked {
    pub fn of(rel: &Path, stat: &Stat) -> Walked {
        Walked {
            depth: rel.components().count(),
            dir_writable: stat.is_dir().then_some(stat.mode & 0o200 != 0),
            compressed: stat.is_file()
                && stat.nlink == 1
                && stat.size >= MIN_SIZE
                && rel.file_name().is_some_and(is_compressed_name),
            bytes: if stat.is_file() { stat.size } else { 0 },
        }
    }
}

fn hash(rel: &Path) -> u64 {
    xxh3_64(rel.as_os_str().as_bytes())
}

/// Bytes of the stream an anchor stands for per point on the ring: files
/// land in proportion to the bytes before each anchor, not to the number
/// of entries (a module cache's thousands of tiny `.info` and `.mod`
/// files would otherwise keep most zips among themselves).
const BYTES_PER_POINT: u64 = 64 * 1024;

/// The ring points of an anchor that follows `bytes` of files: one per
/// `BYTES_PER_POINT`, each at its own hash.
fn points(anchor: u64, bytes: u64) -> impl Iterator<Item = (u64, u64)> {
    (0..bytes / BYTES_PER_POINT).map(move |i| (xxh3_64_with_seed(&anchor.to_le_bytes(), i), anchor))
}

/// Collects one mount's walk (as `survey` sees it) into a `Placement`.
///
/// Extractors that set a directory's time and mode as soon as the stream
/// leaves it (GNU tar without `--delay-directory-restore`) are why not
/// every entry can be an anchor: a file written between two entries of a
/// directory it is not in makes GNU tar finish that directory early, and
/// the directory's next entry then changes its time, or, if the directory
/// is read-only and tar is not root, cannot be written. So a file is only
/// placed where every directory still open is writable (between two Go
/// modules, not inside one: Go makes module trees read-only), and a file
/// in a read-only directory stays where it is. Directory times may then
/// differ under GNU tar without that flag; the contents never do.
#[derive(Default)]
pub struct Planner {
    /// Ring points (point, anchor hash) of the entries a file may follow.
    ring: Vec<(u64, u64)>,
    /// Files to place, in walk order.
    moving: Vec<PathBuf>,
    /// Whether each directory on the walk's current path is writable,
    /// by depth.
    open: Vec<bool>,
    /// The last entry that stays, until the next tells whether the gap
    /// after it is safe.
    last: Option<u64>,
    /// File bytes since the last anchor, up to and including `last`.
    segment: u64,
}

impl Planner {
    /// Notes one walked entry, by its path below the mount.
    pub fn note(&mut self, rel: &Path, stat: &Stat) {
        self.add(rel, Walked::of(rel, stat));
    }

    fn add(&mut self, rel: &Path, entry: Walked) {
        // The directories still open once the walk reaches `rel`.
        self.open.truncate(entry.depth);
        let open_writable = self.open.iter().all(|&w| w);
        let parent_writable = self.open.last().copied().unwrap_or(true);
        if entry.compressed && parent_writable {
            self.moving.push(rel.to_path_buf());
            return;
        }
        if let Some(last) = self.last.take()
            && open_writable
        {
            self.ring.extend(points(last, self.segment));
            self.segment = 0;
        }
        self.last = Some(hash(rel));
        self.segment += entry.bytes;
        if let Some(writable) = entry.dir_writable {
            self.open.push(writable);
        }
    }

    pub fn finish(mut self) -> Placement {
        // After the mount's last entry nothing is left to interrupt.
        if let Some(last) = self.last.take() {
            self.ring.extend(points(last, self.segment));
        }
        self.ring.sort_unstable();
        let mut placement = Placement::default();
        for rel in self.moving {
            let wanted = hash(&rel);
            let at = self.ring.partition_point(|&(point, _)| point < wanted);
            // Past the last point the ring wraps to the first; with no
            // point at all (a mount of small files) the file is written at
            // the end of the mount.
            match self.ring.get(at).or(self.ring.first()) {
                Some(&(_, anchor)) => placement.after.entry(anchor).or_default().push(rel.clone()),
                None => placement.unanchored.push(rel.clone()),
            }
            placement.moving.insert(rel);
        }
        placement
    }
}

/// Which files of one mount leave their walk position, and after which
/// entry each is written.
#[derive(Clone, Debug, Default)]
pub struct Placement {
    /// Every file the walk skips.
    moving: HashSet<PathBuf>,
    /// Anchor hash -> the files written right after that entry.
    after: HashMap<u64, Vec<PathBuf>>,
    /// Files of a mount that has no other entry.
    unanchored: Vec<PathBuf>,
}

impl Placement {
    /// Whether the walk skips `rel` (it is written after its anchor).
    pub fn moves(&self, rel: &Path) -> bool {
        !self.moving.is_empty() && self.moving.contains(rel)
    }

    /// The files to write right after `rel`, each handed out once.
    pub fn take_after(&mut self, rel: &Path) -> Vec<PathBuf> {
        if self.after.is_empty() {
            return Vec::new();
        }
        self.after.remove(&hash(rel)).unwrap_or_default()
    }

    /// Files whose anchor never came (it vanished since the survey, or the
    /// mount has nothing else), sorted, to be written at the end.
    pub fn take_rest(&mut self) -> Vec<PathBuf> {
        let mut rest = std::mem::take(&mut self.unanchored);
        rest.extend(self.after.drain().flat_map(|(_, files)| files));
        rest.sort();
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A placement over plain names, without files on disk.
    fn plan(anchors: &[String], moving: &[String]) -> Placement {
        let mut planner = Planner::default();
        for name in anchors {
            planner
                .ring
                .extend(points(hash(Path::new(name)), BYTES_PER_POINT));
        }
        for name in moving {
            planner.moving.push(PathBuf::from(name));
        }
        planner.finish()
    }

    /// Where each moving file lands: the anchor it follows, in walk order.
    fn landing(anchors: &[String], moving: &[String]) -> HashMap<PathBuf, String> {
        let mut placement = plan(anchors, moving);
        let mut at = HashMap::new();
        for anchor in anchors {
            for file in placement.take_after(Path::new(anchor)) {
                // Still skipped when the walk reaches it after its anchor.
                assert!(placement.moves(&file));
                at.insert(file, anchor.clone());
            }
        }
        assert!(placement.take_rest().is_empty());
        at
    }

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }

    #[test]
    fn compressed_names_are_known_by_their_ending() {
        for name in [
            "v1.2.3.zip",
            "serde-1.0.0.crate",
            "x.tar.gz",
            "A.JPG",
            "b.whl",
        ] {
            assert!(is_compressed_name(OsStr::new(name)), "{name}");
        }
        for name in [
            "v1.2.3.mod",
            "zip",
            ".zip",
            "main.go",
            "v1.2.3.ziphash",
            "gz.txt",
        ] {
            assert!(!is_compressed_name(OsStr::new(name)), "{name}");
        }
    }

    #[test]
    fn every_moving_file_is_written_once_and_they_are_spread() {
        let anchors = names("github.com/m/src", 2000);
        let moving = names("cache/download/m/@v/v", 100);
        let at = landing(&anchors, &moving);
        assert_eq!(at.len(), 100, "each file placed exactly once");
        let distinct: HashSet<&String> = at.values().collect();
        assert!(
            distinct.len() > 80,
            "spread over {} anchors",
            distinct.len()
        );
        // Spread over the whole walk, not bunched at one end.
        let position: HashMap<&String, usize> =
            anchors.iter().enumerate().map(|(i, a)| (a, i)).collect();
        let first_half = at.values().filter(|a| position[a] < 1000).count();
        assert!(
            (30..=70).contains(&first_half),
            "{first_half} of 100 in the first half"
        );
    }

    #[test]
    fn adding_entries_moves_few_files() {
        let anchors = names("github.com/m/src", 2000);
        let moving = names("cache/download/m/@v/v", 100);
        let before = landing(&anchors, &moving);
        // One more module: 30 entries and its zip.
        let mut more_anchors = anchors.clone();
        more_anchors.extend(names("github.com/new/src", 30));
        let mut more_moving = moving.clone();
        more_moving.push("cache/download/new/@v/v1.zip".into());
        let after = landing(&more_anchors, &more_moving);
        let moved = moving
            .iter()
            .filter(|m| before[Path::new(m)] != after[Path::new(m)])
            .count();
        // Expected 100 * 30 / 2030 = 1.5; a byte-proportional rule moves most.
        assert!(moved <= 6, "{moved} of 100 files changed place");
    }

    fn dir(depth: usize, writable: bool) -> Walked {
        Walked {
            depth,
            dir_writable: Some(writable),
            compressed: false,
            bytes: 0,
        }
    }

    fn file(depth: usize, compressed: bool) -> Walked {
        Walked {
            depth,
            dir_writable: None,
            compressed,
            bytes: BYTES_PER_POINT,
        }
    }

    #[test]
    fn files_go_only_where_every_open_directory_is_writable() {
        let mut planner = Planner::default();
        let walk = [
            ("", dir(0, true)),
            ("a", dir(1, true)),
            ("a/m@v1", dir(2, false)),
            ("a/m@v1/x.go", file(3, false)),
            ("a/m@v1/y.go", file(3, false)),
            ("a/n", dir(2, true)),
            ("a/n/t.zip", file(3, true)),
            ("ro", dir(1, false)),
            ("ro/kept.zip", file(2, true)),
            ("z.go", file(1, false)),
        ];
        for (name, entry) in walk {
            planner.add(Path::new(name), entry);
        }
        let anchors: HashSet<u64> = planner.ring.iter().map(|&(_, a)| a).collect();
        let may_follow = |name: &str| anchors.contains(&hash(Path::new(name)));
        // Inside the read-only module: its directory and first file are
        // followed by more of it, so nothing may come between.
        assert!(!may_follow("a/m@v1"));
        assert!(!may_follow("a/m@v1/x.go"));
        // After the module ends, only writable directories are open.
        assert!(may_follow("a/m@v1/y.go"));
        // Directories after an anchor stand for no file bytes: no points.
        assert!(!may_follow("") && !may_follow("a") && !may_follow("a/n"));
        // A file in a read-only directory stays in place, as an entry.
        assert_eq!(planner.moving, vec![PathBuf::from("a/n/t.zip")]);
        assert!(!may_follow("ro"));
        // Its last entry may be followed: the directory has ended.
        assert!(may_follow("ro/kept.zip"));
        let placement = planner.finish();
        assert!(placement.moves(Path::new("a/n/t.zip")));
        assert!(!placement.moves(Path::new("ro/kept.zip")));
    }

    #[test]
    fn files_land_in_proportion_to_bytes_not_entries() {
        let mut planner = Planner::default();
        planner.add(Path::new(""), dir(0, true));
        // A module cache: thousands of tiny files beside the zips...
        for i in 0..3000 {
            let tiny = Walked {
                bytes: 100,
                ..file(2, false)
            };
            planner.add(Path::new(&format!("cache/v{i}.info")), tiny);
        }
        for i in 0..100 {
            let zip = Walked {
                bytes: 100_000,
                ..file(2, true)
            };
            planner.add(Path::new(&format!("cache/v{i}.zip")), zip);
        }
        // ...and fewer, larger sources.
        for i in 0..300 {
            let source = Walked {
                bytes: 1 << 20,
                ..file(2, false)
            };
            planner.add(Path::new(&format!("src/m{i}.go")), source);
        }
        let mut placement = planner.finish();
        let among_sources: usize = (0..300)
            .map(|i| {
                placement
                    .take_after(Path::new(&format!("src/m{i}.go")))
                    .len()
            })
            .sum();
        assert!(
            among_sources >= 95,
            "{among_sources} of 100 among the sources"
        );
    }

    #[test]
    fn files_whose_anchor_never_comes_are_left_for_the_end() {
        let mut placement = plan(&names("a", 3), &names("z.zip", 5));
        let rest = placement.take_rest();
        assert_eq!(rest.len(), 5);
        assert!(placement.take_after(Path::new("a0")).is_empty());
        let mut alone = plan(&[], &names("z.zip", 2));
        assert!(alone.moves(Path::new("z.zip0")));
        assert_eq!(alone.take_rest().len(), 2);
    }
}
