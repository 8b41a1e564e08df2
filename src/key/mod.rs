//! Cache keys: the `cache_key` template, rendered against pipeline metadata
//! and files in the workspace, then made safe to use as an object name.

pub mod functions;
pub mod metadata;
pub mod template;

use std::cell::RefCell;
use std::path::{Path, PathBuf};

pub use metadata::Metadata;
pub use template::Template;

use functions::Function;

/// Used when `cache_key` is not set: one entry per branch.
pub const DEFAULT_TEMPLATE: &str = "{{ .Commit.Branch }}";

/// Longest key accepted, leaving room for the archive extension in a file name.
const MAX_KEY_LEN: usize = 200;

/// A parsed key template and the text it came from.
#[derive(Clone, Debug)]
pub struct KeyTemplate {
    pub source: String,
    template: Template,
}

impl KeyTemplate {
    pub fn parse(source: &str) -> Result<Self, String> {
        let template = Template::parse(source).map_err(|e| e.to_string())?;
        Ok(KeyTemplate {
            source: source.to_string(),
            template,
        })
    }

    /// Renders the key. A field whose variable is unset renders as
    /// drone-cache rendered it (see `metadata::unset_value`), with a note to
    /// log; a file or pattern that matches nothing is an error naming it.
    pub fn render(&self, metadata: &Metadata, workspace: &Path) -> Result<Rendered, String> {
        let ctx = RenderContext {
            metadata,
            workspace: workspace.to_path_buf(),
            lenient: false,
            notes: RefCell::new(Vec::new()),
        };
        let raw = self.template.render(&ctx)?;
        Ok(Rendered {
            key: sanitize(&raw)?,
            notes: ctx.notes.into_inner(),
        })
    }

    /// The key as drone-cache rendered it, to find its entries: nothing is
    /// sanitised, and a missing file or an unmatched pattern renders as
    /// the empty string, as drone-cache's did.
    pub fn render_as_drone_cache(&self, metadata: &Metadata, workspace: &Path) -> Option<String> {
        let ctx = RenderContext {
            metadata,
            workspace: workspace.to_path_buf(),
            lenient: true,
            notes: RefCell::new(Vec::new()),
        };
        self.template.render(&ctx).ok()
    }
}

/// A rendered key, and what rendering it noticed (for the log).
#[derive(Clone, Debug)]
pub struct Rendered {
    pub key: String,
    pub notes: Vec<String>,
}

struct RenderContext<'a> {
    metadata: &'a Metadata,
    workspace: PathBuf,
    /// drone-cache's rendering: failed functions give "".
    lenient: bool,
    notes: RefCell<Vec<String>>,
}

impl template::Context for RenderContext<'_> {
    fn field(&self, field: &metadata::Field) -> Result<String, String> {
        if let Some(value) = self.metadata.get(field) {
            return Ok(value.to_string());
        }
        let value = metadata::unset_value(field);
        self.notes.borrow_mut().push(format!(
            "{} has no value ({} is not set), so it renders as '{value}', as in drone-cache",
            field.path,
            field.sources_text()
        ));
        Ok(value.to_string())
    }

    fn call(&self, function: Function, args: &[String]) -> Result<String, String> {
        match function.call(&self.workspace, args) {
            Err(_) if self.lenient => Ok(String::new()),
            other => other,
        }
    }
}

/// Makes a rendered key safe as one path segment on every backend: letters,
/// digits and `. _ - + = @` stay, anything else (`/` from a branch name,
/// spaces) becomes `-`, and a leading `.` becomes `_` so no key is hidden.
pub fn sanitize(raw: &str) -> Result<String, String> {
    let mut key: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-+=@".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if key.starts_with('.') {
        key.replace_range(0..1, "_");
    }
    if key.is_empty() {
        return Err("the key rendered to an empty string".to_string());
    }
    if key.len() > MAX_KEY_LEN {
        return Err(format!(
            "the key is {} characters long; the limit is {MAX_KEY_LEN}. \
             Use checksum or hashFiles instead of long values",
            key.len()
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn sanitize_keeps_safe_characters_and_replaces_others() {
        assert_eq!(
            sanitize("gomod-abc_1.2+x=y@z").unwrap(),
            "gomod-abc_1.2+x=y@z"
        );
        assert_eq!(
            sanitize("feature/login page").unwrap(),
            "feature-login-page"
        );
        assert_eq!(sanitize("..").unwrap(), "_.");
        assert!(sanitize("   ").is_err());
        assert!(sanitize(&"x".repeat(201)).is_err());
    }

    #[test]
    fn the_default_key_is_the_branch_and_unset_fields_render_as_in_drone_cache() {
        let t = KeyTemplate::parse(DEFAULT_TEMPLATE).unwrap();
        let env: HashMap<String, String> =
            [("CI_COMMIT_BRANCH".to_string(), "feat/x".to_string())].into();
        let ws = Path::new("/");
        let rendered = t.render(&Metadata::from_env(&env), ws).unwrap();
        assert_eq!((rendered.key.as_str(), rendered.notes.len()), ("feat-x", 0));
        let rendered = t.render(&Metadata::default(), ws).unwrap();
        assert_eq!(rendered.key, "master");
        assert!(
            rendered.notes[0].contains("DRONE_COMMIT_BRANCH or CI_COMMIT_BRANCH"),
            "{:?}",
            rendered.notes
        );
        let t = KeyTemplate::parse("a-{{ .Repo.Avatar }}-{{ .Repo.Trusted }}").unwrap();
        assert_eq!(t.render(&Metadata::default(), ws).unwrap().key, "a--false");
    }

    #[test]
    fn drone_cache_rendering_tolerates_missing_files_and_keeps_slashes() {
        let ws = tempfile::tempdir().unwrap();
        let env: HashMap<String, String> =
            [("DRONE_COMMIT_BRANCH".to_string(), "feat/x".to_string())].into();
        let metadata = Metadata::from_env(&env);
        let t = KeyTemplate::parse("{{ .Commit.Branch }}-{{ checksum \"go.sum\" }}").unwrap();
        assert!(t.render(&metadata, ws.path()).is_err());
        assert_eq!(
            t.render_as_drone_cache(&metadata, ws.path()).as_deref(),
            Some("feat/x-")
        );
    }
}
