//! Mounts: the directories and files a cache entry holds.
//!
//! A mount has a name (the prefix of its entries in the archive) and a path
//! on disk. Inside the workspace the name is relative (`pkg.mod`), so GNU tar
//! extracts it by hand; outside it the name is the absolute path. Names are
//! normalised (`./a/` is `a`) and may not contain `..`, so no mount reaches
//! outside what the user wrote.

use std::path::{Component, Path, PathBuf};

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

/// Resolves all mounts and rejects duplicates and nesting, which would put
/// one file in the entry twice and make restore ambiguous.
pub fn resolve_all(workspace: &Path, texts: &[String]) -> Result<Vec<Mount>, String> {
    let mut mounts: Vec<Mount> = Vec::new();
    for text in texts {
        let mount = Mount::resolve(workspace, text)?;
        if let Some(other) = mounts
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
        mounts.push(mount);
    }
    Ok(mounts)
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
        let err = resolve_all(ws(), &["a".into(), "./a".into()]).unwrap_err();
        assert!(err.contains("twice"), "{err}");
        let err = resolve_all(ws(), &["a/b".into(), "a".into()]).unwrap_err();
        assert!(err.contains("overlap"), "{err}");
        assert_eq!(
            resolve_all(ws(), &["a".into(), "ab".into()]).unwrap().len(),
            2
        );
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
