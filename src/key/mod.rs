//! Cache keys: the `cache_key` template, rendered against pipeline metadata
//! and files in the workspace, then made safe to use as an object name.

pub mod functions;
pub mod metadata;
pub mod template;

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

    /// Renders the key. The error names what is missing: a variable, a file.
    pub fn render(&self, metadata: &Metadata, workspace: &Path) -> Result<String, String> {
        let ctx = RenderContext {
            metadata,
            workspace: workspace.to_path_buf(),
        };
        let raw = self.template.render(&ctx)?;
        sanitize(&raw)
    }
}

struct RenderContext<'a> {
    metadata: &'a Metadata,
    workspace: PathBuf,
}

impl template::Context for RenderContext<'_> {
    fn field(&self, field: &metadata::Field) -> Result<String, String> {
        self.metadata.get(field).map(str::to_string).ok_or_else(|| {
            format!(
                "{} has no value: {} is not set (is this running in a pipeline?)",
                field.path,
                field.sources_text()
            )
        })
    }

    fn call(&self, function: Function, args: &[String]) -> Result<String, String> {
        function.call(&self.workspace, args)
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
    fn default_key_needs_the_branch() {
        let t = KeyTemplate::parse(DEFAULT_TEMPLATE).unwrap();
        let env: HashMap<String, String> =
            [("CI_COMMIT_BRANCH".to_string(), "feat/x".to_string())].into();
        let ws = Path::new("/");
        assert_eq!(t.render(&Metadata::from_env(&env), ws).unwrap(), "feat-x");
        let err = t.render(&Metadata::default(), ws).unwrap_err();
        assert!(
            err.contains("DRONE_COMMIT_BRANCH or CI_COMMIT_BRANCH"),
            "{err}"
        );
    }
}
