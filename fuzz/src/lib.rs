//! Shared by the fuzz targets: a sandbox workspace on tmpfs, snapshots of it
//! and the checks made after every restore, hand-made archives, and seeds.

pub mod sandbox;
pub mod seeds;
pub mod tarball;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Largest file any restore may write. An expansion bomb (a GNU sparse entry,
/// a zstd frame of zeros) is not bounded by larder yet (issue 9, defect 3);
/// with this limit the write fails with EFBIG instead of filling /dev/shm.
pub const MAX_FILE: u64 = 8 << 20;

/// Process-wide setup, once: the file size limit, with SIGXFSZ ignored so an
/// oversized write is an error larder reports rather than a kill.
pub fn limit_file_size() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit) == 0 {
            limit.rlim_cur = MAX_FILE.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
        }
    });
}

/// Where sandboxes go: `LARDER_FUZZ_TMPDIR` (scripts/fuzz.sh sets it to a
/// directory it removes at the end, since a crashing target never removes
/// its sandbox), else tmpfs when there is one (much faster), else the temp dir.
pub fn temp_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("LARDER_FUZZ_TMPDIR") {
        return PathBuf::from(dir);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && tempfile::tempdir_in(shm).is_ok() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// `LARDER_FUZZ_SKIP_KNOWN=1` skips the checks and inputs that hit defects
/// already known (issue 9's symlink escapes, mount restored as a symlink,
/// damaged end-of-archive accepted, messages; the failed commit of a mount
/// holding only FIFOs, see fuzz/README.md), to look for new problems while
/// those are open. CI never sets it.
pub fn skip_known() -> bool {
    static SKIP: OnceLock<bool> = OnceLock::new();
    *SKIP.get_or_init(|| std::env::var_os("LARDER_FUZZ_SKIP_KNOWN").is_some_and(|v| v != "0"))
}

/// With `LARDER_FUZZ_SEED_DIR` set (scripts/fuzz.sh sets it to the corpus
/// directory), a target writes its seeds there when it starts; libFuzzer
/// reads the corpus after that. Names are content hashes, as libFuzzer's.
pub fn write_seeds(seeds: impl FnOnce() -> Vec<Vec<u8>>) {
    let Some(dir) = std::env::var_os("LARDER_FUZZ_SEED_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("cannot create the seed directory");
    for seed in seeds() {
        let name = format!("seed-{:016x}", fnv1a(&seed));
        std::fs::write(dir.join(name), &seed).expect("cannot write a seed");
    }
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x100000001b3)
    })
}
