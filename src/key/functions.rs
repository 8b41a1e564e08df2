//! The functions a key template can call, with drone-cache's exact outputs:
//! `checksum` is the MD5 of one file and `hashFiles` the SHA-256 over the
//! SHA-256 digests of every matched file, so keys computed by drone-cache and
//! by larder for the same files are equal. Unlike drone-cache, a file that
//! cannot be read is an error, never an empty string.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use md5::Md5;
use sha2::{Digest, Sha256};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    Checksum,
    HashFiles,
    GoVersion,
    Epoch,
    Arch,
    Os,
}

impl Function {
    pub const NAMES: [&'static str; 6] =
        ["checksum", "hashFiles", "goVersion", "epoch", "arch", "os"];

    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "checksum" => Function::Checksum,
            "hashFiles" => Function::HashFiles,
            "goVersion" => Function::GoVersion,
            "epoch" => Function::Epoch,
            "arch" => Function::Arch,
            "os" => Function::Os,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Function::Checksum => "checksum",
            Function::HashFiles => "hashFiles",
            Function::GoVersion => "goVersion",
            Function::Epoch => "epoch",
            Function::Arch => "arch",
            Function::Os => "os",
        }
    }

    pub fn check_arity(self, count: usize) -> Result<(), String> {
        let ok = match self {
            Function::Checksum | Function::GoVersion => count == 1,
            Function::HashFiles => count >= 1,
            Function::Epoch | Function::Arch | Function::Os => count == 0,
        };
        if ok {
            return Ok(());
        }
        Err(match self {
            Function::Checksum => format!(
                "checksum takes one file, got {count} arguments: {{{{ checksum \"go.sum\" }}}}"
            ),
            Function::HashFiles => "hashFiles takes one or more glob patterns: \
                                    {{ hashFiles \"**/go.sum\" }}"
                .to_string(),
            Function::GoVersion => format!(
                "goVersion takes one go.mod file, got {count} arguments: {{{{ goVersion \"go.mod\" }}}}"
            ),
            other => format!("{} takes no arguments, got {count}", other.name()),
        })
    }

    /// Runs the function. Relative paths are resolved against `workspace`.
    pub fn call(self, workspace: &Path, args: &[String]) -> Result<String, String> {
        match self {
            Function::Checksum => checksum(workspace, &args[0]),
            Function::HashFiles => hash_files(workspace, args),
            Function::GoVersion => go_version(workspace, &args[0]),
            Function::Epoch => Ok(SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
                .to_string()),
            Function::Arch => Ok(go_arch().to_string()),
            Function::Os => Ok(std::env::consts::OS.to_string()),
        }
    }
}

/// Go's name for this CPU (`runtime.GOARCH`), so keys match drone-cache's.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// The Go toolchain a module asks for: its `toolchain` line (`go1.22.3`)
/// if it has one other than `default`, else its `go` line (`go1.21`). A
/// build cache keyed by it is not restored for another toolchain.
fn go_version(workspace: &Path, file: &str) -> Result<String, String> {
    let path = workspace.join(file);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("goVersion \"{file}\": cannot read {}: {e}", path.display()))?;
    let directive = |name: &str| {
        text.lines()
            .map(|line| line.split("//").next().unwrap_or("").trim())
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(char::is_whitespace))
            .map(str::trim)
            .filter(|v| !v.is_empty() && *v != "default")
    };
    if let Some(toolchain) = directive("toolchain") {
        return Ok(toolchain.to_string());
    }
    directive("go").map(|v| format!("go{v}")).ok_or_else(|| {
        format!(
            "goVersion \"{file}\": {} has no go or toolchain line",
            path.display()
        )
    })
}

fn checksum(workspace: &Path, file: &str) -> Result<String, String> {
    let path = workspace.join(file);
    let digest = hash_file::<Md5>(&path)
        .map_err(|e| format!("checksum \"{file}\": cannot read {}: {e}", path.display()))?;
    Ok(hex(&digest))
}

fn hash_files(workspace: &Path, patterns: &[String]) -> Result<String, String> {
    let mut outer = Sha256::new();
    let mut matched = 0usize;
    for pattern in patterns {
        for path in expand(workspace, pattern)? {
            let digest = hash_file::<Sha256>(&path).map_err(|e| {
                format!(
                    "hashFiles \"{pattern}\": cannot read {}: {e}",
                    path.display()
                )
            })?;
            outer.update(&digest);
            matched += 1;
        }
    }
    if matched == 0 {
        return Err(format!(
            "hashFiles {}: no file matches in {}",
            patterns
                .iter()
                .map(|p| format!("\"{p}\""))
                .collect::<Vec<_>>()
                .join(" "),
            workspace.display()
        ));
    }
    Ok(hex(&outer.finalize()))
}

/// Files matching `pattern` under `workspace`, sorted; `**` crosses directories.
fn expand(workspace: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let full = if Path::new(pattern).is_absolute() {
        pattern.to_string()
    } else {
        format!(
            "{}/{pattern}",
            glob::Pattern::escape(&workspace.to_string_lossy())
        )
    };
    let entries = glob::glob(&full)
        .map_err(|e| format!("hashFiles \"{pattern}\" is not a valid pattern: {e}"))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| format!("hashFiles \"{pattern}\": {e}"))?;
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn hash_file<D: Digest>(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    let mut hasher = D::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().to_vec())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_version_reads_the_toolchain_or_the_go_line() {
        let dir = tempfile::tempdir().unwrap();
        let version = |text: &str| {
            std::fs::write(dir.path().join("go.mod"), text).unwrap();
            Function::GoVersion.call(dir.path(), &["go.mod".into()])
        };
        assert_eq!(version("module x\n\ngo 1.21\n").unwrap(), "go1.21");
        assert_eq!(
            version("module x\ngo 1.21.0 // comment\ntoolchain go1.22.3\n").unwrap(),
            "go1.22.3"
        );
        assert_eq!(
            version("module x\ngo 1.22\ntoolchain default\n").unwrap(),
            "go1.22"
        );
        assert!(
            version("module x\n")
                .unwrap_err()
                .contains("no go or toolchain line")
        );
        assert!(
            Function::GoVersion
                .check_arity(0)
                .unwrap_err()
                .contains("goVersion")
        );
    }

    #[test]
    fn checksum_is_md5_hex_and_missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hash"), "hash").unwrap();
        // drone-cache's own vector: md5("hash").
        assert_eq!(
            Function::Checksum
                .call(dir.path(), &["hash".into()])
                .unwrap(),
            "0800fc577294c34e0b28ad2839435945"
        );
        let err = Function::Checksum
            .call(dir.path(), &["go.sum".into()])
            .unwrap_err();
        assert!(
            err.contains("go.sum") && err.contains("cannot read"),
            "{err}"
        );
    }

    #[test]
    fn hash_files_hashes_digests_in_sorted_order_and_recurses() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("go.sum"), "one").unwrap();
        std::fs::write(dir.path().join("a/b/go.sum"), "two").unwrap();
        let one = Sha256::digest(b"one");
        let two = Sha256::digest(b"two");
        // sorted: <dir>/a/b/go.sum before <dir>/go.sum
        let mut outer = Sha256::new();
        outer.update(two);
        outer.update(one);
        let expected = hex(&outer.finalize());
        assert_eq!(
            Function::HashFiles
                .call(dir.path(), &["**/go.sum".into()])
                .unwrap(),
            expected
        );
        let err = Function::HashFiles
            .call(dir.path(), &["*.lock".into()])
            .unwrap_err();
        assert!(err.contains("no file matches"), "{err}");
    }

    #[test]
    fn arch_uses_go_names() {
        assert!(!go_arch().contains("x86_64"));
    }
}
