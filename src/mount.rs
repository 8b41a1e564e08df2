//! Mounts: the directories and files a cache entry holds.
//!
//! A mount has a name (the prefix of its entries in the archive) and a path
//! on disk. Inside the workspace the name is relative (`pkg.mod`), so GNU tar
//! extracts it by hand; outside it the name is the absolute path. Names are
//! normalised (`./a/` is `a`) and may not contain `..`, so no mount reaches
//! outside what the user wrote.
//!
//! The `mount` setting may also hold patterns (`packages/**/node_modules`).
//! A rebuild expands them against the workspace and the entry's manifest
//! records what they matched; a restore matches them against the manifest,
//! so it brings everything back into an empty workspace (drone-cache
//! expanded patterns against the not-yet-restored workspace and restored
//! nothing).

use std::path::{Component, Path, PathBuf};

use glob::{MatchOptions, Pattern};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Prefix of this mount's entries in the archive: `pkg.mod` or `/root/.cache/x`.
    pub name: String,
    /// Where the mount lives on disk (absolute).
    pub path: PathBuf,
}

impl Mount {
    /// Resolves one `mount` value against the workspace.
    pub fn resolve(workspace: &Path, text: &str) -> Result<Mount, String> {
        let given = Path::new(text);
        let mut parts = Vec::new();
        for component in given.components() {
            match component {
                Component::Normal(part) => parts.push(
                    part.to_str()
                        .ok_or_else(|| format!("'{text}' is not valid UTF-8"))?,
                ),
                Component::CurDir | Component::RootDir => {}
                Component::ParentDir => {
                    return Err(format!(
                        "'{text}' contains '..'; write the path without it \
                         (absolute paths are allowed)"
                    ));
                }
                Component::Prefix(_) => return Err(format!("'{text}' is not a Unix path")),
            }
        }
        let absolute = given.is_absolute();
        let path: PathBuf = if absolute {
            std::iter::once("/").chain(parts.iter().copied()).collect()
        } else {
            workspace.join(parts.join("/"))
        };
        let name = match path.strip_prefix(workspace) {
            Ok(rel) if rel.as_os_str().is_empty() => {
                return Err(format!(
                    "'{text}' is the whole workspace; list the directories to cache instead"
                ));
            }
            Ok(rel) => rel.to_string_lossy().into_owned(),
            Err(_) if absolute && parts.is_empty() => {
                return Err("'/' cannot be cached; list the directories to cache".into());
            }
            Err(_) => format!("/{}", parts.join("/")),
        };
        Ok(Mount { name, path })
    }

    /// True when `self` contains `other` (or they are the same path).
    pub fn contains(&self, other: &Mount) -> bool {
        other.path.starts_with(&self.path)
    }

    /// The archive name of a path below this mount (`rel` is relative to the mount).
    pub fn entry_name(&self, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            PathBuf::from(&self.name)
        } else {
            Path::new(&self.name).join(rel)
        }
    }

    /// Where the part of an archive name below this mount lives, if it is below it.
    /// `name` is already split into normal components by the caller.
    pub fn relative_part<'a>(&self, name: &'a Path) -> Option<&'a Path> {
        name.strip_prefix(&self.name).ok()
    }
}

/// One value of the `mount` setting: a path, or a pattern.
#[derive(Clone, Debug)]
pub enum MountSpec {
    Path(Mount),
    Glob(Glob),
}

impl MountSpec {
    /// The mount as the user wrote it (normalised), for log lines.
    pub fn text(&self) -> String {
        match self {
            MountSpec::Path(mount) => mount.name.clone(),
            MountSpec::Glob(glob) => glob.text.clone(),
        }
    }
}

/// A relative pattern such as `packages/**/node_modules`.
#[derive(Clone, Debug)]
pub struct Glob {
    pub text: String,
    pattern: Pattern,
}

const MATCH: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

impl Glob {
    fn parse(text: &str) -> Result<Glob, String> {
        if text.starts_with('/') {
            return Err(format!(
                "'{text}': patterns must be relative to the workspace; list absolute paths one by one"
            ));
        }
        let parts: Vec<&str> = text
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        if parts.contains(&"..") {
            return Err(format!(
                "'{text}' contains '..'; patterns stay inside the workspace"
            ));
        }
        let normalized = parts.join("/");
        let pattern = Pattern::new(&normalized)
            .map_err(|e| format!("'{text}' is not a valid pattern: {e}"))?;
        Ok(Glob {
            text: normalized,
            pattern,
        })
    }

    /// Whether a mount name (relative to the workspace) matches.
    pub fn matches(&self, name: &str) -> bool {
        self.pattern.matches_with(name, MATCH)
    }

    /// What the pattern matches in the workspace now. The walk starts below
    /// the pattern's literal prefix and does not descend into matches.
    pub fn expand(&self, workspace: &Path) -> std::io::Result<Vec<Mount>> {
        let literal: Vec<&str> = self
            .text
            .split('/')
            .take_while(|part| !is_pattern(part))
            .collect();
        let start = workspace.join(literal.join("/"));
        let mut found = Vec::new();
        let mut walk = walkdir::WalkDir::new(&start)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter();
        while let Some(item) = walk.next() {
            let item = match item {
                Ok(item) => item,
                Err(e)
                    if e.io_error().map(|io| io.kind()) == Some(std::io::ErrorKind::NotFound) =>
                {
                    continue;
                }
                Err(e) => return Err(std::io::Error::other(e)),
            };
            let Ok(rel) = item.path().strip_prefix(workspace) else {
                continue;
            };
            let Some(name) = rel.to_str() else {
                continue;
            };
            if name.is_empty() || item.file_name().to_string_lossy().starts_with(".larder-") {
                continue;
            }
            if self.matches(name) {
                found.push(Mount {
                    name: name.to_string(),
                    path: item.path().to_path_buf(),
                });
                if item.file_type().is_dir() {
                    walk.skip_current_dir();
                }
            }
        }
        Ok(found)
    }
}

fn is_pattern(text: &str) -> bool {
    text.contains(['*', '?', '['])
}

/// Parses the `mount` setting. Paths may not repeat or nest, which would put
/// one file in the entry twice and make restore ambiguous.
pub fn parse_specs(workspace: &Path, texts: &[String]) -> Result<Vec<MountSpec>, String> {
    let mut specs = Vec::new();
    let mut paths: Vec<Mount> = Vec::new();
    for text in texts {
        if is_pattern(text) {
            specs.push(MountSpec::Glob(Glob::parse(text)?));
            continue;
        }
        let mount = Mount::resolve(workspace, text)?;
        if let Some(other) = paths
            .iter()
            .find(|m| m.contains(&mount) || mount.contains(m))
        {
            return Err(if other.path == mount.path {
                format!("'{}' is listed twice", mount.name)
            } else {
                format!(
                    "'{}' and '{}' overlap; list only the outer one",
                    other.name, mount.name
                )
            });
        }
        paths.push(mount.clone());
        specs.push(MountSpec::Path(mount));
    }
    Ok(specs)
}

/// The mounts a rebuild archives: paths that exist and what patterns match
/// now. The second list says what was left out and why.
pub fn for_rebuild(specs: &[MountSpec], workspace: &Path) -> (Vec<Mount>, Vec<String>) {
    let mut mounts = Vec::new();
    let mut notes = Vec::new();
    for spec in specs {
        match spec {
            MountSpec::Path(mount) if mount.path.is_symlink() => notes.push(format!(
                "mount {} is a symbolic link (to {}); larder never follows links, and a \
                 mount must be a directory or a file, so it is left out. List the directory \
                 it points to instead",
                mount.name,
                std::fs::read_link(&mount.path)
                    .map(|t| t.display().to_string())
                    .unwrap_or_else(|_| "?".into())
            )),
            MountSpec::Path(mount) if mount.path.symlink_metadata().is_ok() => {
                mounts.push(mount.clone())
            }
            MountSpec::Path(mount) => notes.push(format!(
                "mount {} does not exist ({}); it is left out",
                mount.name,
                mount.path.display()
            )),
            MountSpec::Glob(glob) => match glob.expand(workspace) {
                Ok(found) if found.is_empty() => {
                    notes.push(format!(
                        "mount pattern {} matches nothing; it is left out",
                        glob.text
                    ));
                }
                Ok(found) => mounts.extend(found),
                Err(e) => notes.push(format!(
                    "mount pattern {} could not be expanded: {e}",
                    glob.text
                )),
            },
        }
    }
    (outermost(mounts), notes)
}

/// The mounts a restore writes, given the names the entry holds (its
/// manifest). Without `mount`, the entry's mounts inside the workspace are
/// restored, but only where nothing exists yet and never inside `.git`: the
/// entry names them, and must not be able to choose to replace the
/// repository's files. A mount outside the workspace, an existing path or
/// one inside `.git` is restored only when the `mount` setting lists it.
pub fn for_restore(
    specs: &[MountSpec],
    held: Option<&[String]>,
    workspace: &Path,
) -> (Vec<Mount>, Vec<String>) {
    let mut mounts = Vec::new();
    let mut notes = Vec::new();
    let held = held.unwrap_or_default();
    let relative = || held.iter().filter(|name| !name.starts_with('/'));
    if specs.is_empty() {
        for mount in relative().filter_map(|name| Mount::resolve(workspace, name).ok()) {
            match unlisted_refusal(&mount) {
                Some(note) => notes.push(note),
                None => mounts.push(mount),
            }
        }
        for name in held.iter().filter(|name| name.starts_with('/')) {
            notes.push(format!(
                "the entry holds {name}, outside the workspace; list it in mount to restore it"
            ));
        }
    }
    for spec in specs {
        match spec {
            MountSpec::Path(mount) => mounts.push(mount.clone()),
            MountSpec::Glob(glob) => {
                let matched: Vec<Mount> = relative()
                    .filter(|name| glob.matches(name))
                    .filter_map(|name| Mount::resolve(workspace, name).ok())
                    .collect();
                if matched.is_empty() {
                    notes.push(format!(
                        "the entry holds nothing that matches {}",
                        glob.text
                    ));
                }
                mounts.extend(matched);
            }
        }
    }
    (outermost(mounts), notes)
}

/// Why a mount the entry names, but the `mount` setting does not, is not
/// restored; `None` when it may be.
fn unlisted_refusal(mount: &Mount) -> Option<String> {
    let name = &mount.name;
    if Path::new(name)
        .components()
        .any(|c| c.as_os_str() == ".git")
    {
        return Some(format!(
            "the entry holds {name}, inside .git; list it in mount to restore it"
        ));
    }
    if mount.path.symlink_metadata().is_ok() {
        return Some(format!(
            "the entry holds {name}, which already exists in the workspace, and a restore \
             without mount only creates paths that do not exist; list it in mount to replace it"
        ));
    }
    None
}

/// Drops mounts inside other mounts and duplicates, keeping the outer ones.
fn outermost(mut mounts: Vec<Mount>) -> Vec<Mount> {
    mounts.sort_by(|a, b| a.path.cmp(&b.path));
    let mut kept: Vec<Mount> = Vec::new();
    for mount in mounts {
        if !kept.iter().any(|k| k.contains(&mount)) {
            kept.push(mount);
        }
    }
    kept
}

/// The names of mounts, for log lines.
pub fn names(mounts: &[Mount]) -> String {
    mounts
        .iter()
        .map(|m| m.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws() -> &'static Path {
        Path::new("/drone/src")
    }

    #[test]
    fn relative_and_absolute_inside_the_workspace_are_the_same_mount() {
        let a = Mount::resolve(ws(), "./pkg.mod/").unwrap();
        let b = Mount::resolve(ws(), "/drone/src/pkg.mod").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.name, "pkg.mod");
        assert_eq!(a.path, Path::new("/drone/src/pkg.mod"));
    }

    #[test]
    fn outside_the_workspace_keeps_its_absolute_name() {
        let m = Mount::resolve(ws(), "/root/.cache//go-build").unwrap();
        assert_eq!(m.name, "/root/.cache/go-build");
        assert_eq!(m.path, Path::new("/root/.cache/go-build"));
    }

    #[test]
    fn rejects_parent_dirs_the_workspace_and_root() {
        assert!(Mount::resolve(ws(), "../x").unwrap_err().contains(".."));
        assert!(Mount::resolve(ws(), "a/../../x").is_err());
        assert!(
            Mount::resolve(ws(), ".")
                .unwrap_err()
                .contains("whole workspace")
        );
        assert!(Mount::resolve(ws(), "/drone/src").is_err());
        assert!(Mount::resolve(ws(), "/").is_err());
    }

    #[test]
    fn rejects_duplicates_and_nesting() {
        let err = parse_specs(ws(), &["a".into(), "./a".into()]).unwrap_err();
        assert!(err.contains("twice"), "{err}");
        let err = parse_specs(ws(), &["a/b".into(), "a".into()]).unwrap_err();
        assert!(err.contains("overlap"), "{err}");
        assert_eq!(
            parse_specs(ws(), &["a".into(), "ab".into()]).unwrap().len(),
            2
        );
    }

    #[test]
    fn patterns_expand_outermost_and_match_manifest_names() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path();
        for p in [
            "packages/a/node_modules/x/node_modules/y",
            "packages/b/node_modules",
            "other/node_modules",
        ] {
            std::fs::create_dir_all(ws.join(p)).unwrap();
        }
        let specs = parse_specs(ws, &["./packages/**/node_modules/".into()]).unwrap();
        let (mounts, notes) = for_rebuild(&specs, ws);
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(
            names(&mounts),
            "packages/a/node_modules, packages/b/node_modules"
        );
        let held: Vec<String> = mounts.iter().map(|m| m.name.clone()).collect();
        let empty = tempfile::tempdir().unwrap();
        let (restored, _) = for_restore(&specs, Some(&held), empty.path());
        assert_eq!(
            names(&restored),
            "packages/a/node_modules, packages/b/node_modules"
        );
        assert_eq!(
            restored[0].path,
            empty.path().join("packages/a/node_modules")
        );
    }

    #[test]
    fn restore_without_mounts_takes_the_workspace_part_of_the_entry() {
        let held = vec!["pkg.mod".to_string(), "/root/.cache/x".to_string()];
        let (mounts, notes) = for_restore(&[], Some(&held), ws());
        assert_eq!(names(&mounts), "pkg.mod");
        assert!(notes[0].contains("/root/.cache/x"), "{notes:?}");
    }

    #[test]
    fn restore_without_mounts_only_creates_paths() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path();
        std::fs::write(ws.join("main.go"), "package main").unwrap();
        let held: Vec<String> = ["main.go", "pkg.mod", ".git/hooks/post-checkout", "a/.git"]
            .map(String::from)
            .to_vec();
        let (mounts, notes) = for_restore(&[], Some(&held), ws);
        assert_eq!(names(&mounts), "pkg.mod");
        assert!(
            notes[0].contains("main.go, which already exists"),
            "{notes:?}"
        );
        assert!(notes[1].contains("inside .git"), "{notes:?}");
        assert!(notes[2].contains("inside .git"), "{notes:?}");
        let listed = parse_specs(ws, &["main.go".into()]).unwrap();
        let (mounts, _) = for_restore(&listed, Some(&held), ws);
        assert_eq!(names(&mounts), "main.go");
    }

    #[test]
    fn patterns_stay_in_the_workspace() {
        assert!(parse_specs(ws(), &["/abs/*".into()]).is_err());
        assert!(parse_specs(ws(), &["../*/x".into()]).is_err());
    }

    #[test]
    fn entry_names() {
        let m = Mount::resolve(ws(), "pkg.mod").unwrap();
        assert_eq!(m.entry_name(Path::new("")), Path::new("pkg.mod"));
        assert_eq!(m.entry_name(Path::new("x/y")), Path::new("pkg.mod/x/y"));
        assert_eq!(
            m.relative_part(Path::new("pkg.mod/x")),
            Some(Path::new("x"))
        );
        assert_eq!(m.relative_part(Path::new("pkg.modx/x")), None);
    }
}
