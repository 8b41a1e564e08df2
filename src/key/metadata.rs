//! Pipeline metadata for key templates, from Drone (`DRONE_*`) or Woodpecker (`CI_*`).
//!
//! Each template field is defined once here with the variables that feed it,
//! so the template checker, the renderer and the docs agree on what exists.

use std::collections::HashMap;

/// One `{{ .X.Y }}` field and the variables it is read from, in order.
#[derive(Debug, PartialEq, Eq)]
pub struct Field {
    pub path: &'static str,
    pub drone: &'static str,
    pub woodpecker: Option<&'static str>,
}

macro_rules! field {
    ($path:literal, $drone:literal, $wp:literal) => {
        Field {
            path: $path,
            drone: $drone,
            woodpecker: Some($wp),
        }
    };
    ($path:literal, $drone:literal) => {
        Field {
            path: $path,
            drone: $drone,
            woodpecker: None,
        }
    };
}

/// drone-cache's template data, with `.Commit.Ref` fixed to be the ref (drone-cache
/// filled it with the SHA) and `.Repo.FullName` added.
pub static FIELDS: &[Field] = &[
    field!(".Repo.Name", "DRONE_REPO_NAME", "CI_REPO_NAME"),
    field!(".Repo.Owner", "DRONE_REPO_OWNER", "CI_REPO_OWNER"),
    field!(".Repo.Namespace", "DRONE_REPO_NAMESPACE", "CI_REPO_OWNER"),
    field!(".Repo.FullName", "DRONE_REPO", "CI_REPO"),
    field!(".Repo.Link", "DRONE_REPO_LINK", "CI_REPO_URL"),
    field!(".Repo.Avatar", "DRONE_REPO_AVATAR"),
    field!(
        ".Repo.Branch",
        "DRONE_REPO_BRANCH",
        "CI_REPO_DEFAULT_BRANCH"
    ),
    field!(".Repo.Private", "DRONE_REPO_PRIVATE", "CI_REPO_PRIVATE"),
    field!(".Repo.Trusted", "DRONE_REPO_TRUSTED", "CI_REPO_TRUSTED"),
    field!(".Commit.Remote", "DRONE_REMOTE_URL", "CI_REPO_CLONE_URL"),
    field!(".Commit.Sha", "DRONE_COMMIT_SHA", "CI_COMMIT_SHA"),
    field!(".Commit.Ref", "DRONE_COMMIT_REF", "CI_COMMIT_REF"),
    field!(".Commit.Branch", "DRONE_COMMIT_BRANCH", "CI_COMMIT_BRANCH"),
    field!(
        ".Commit.Message",
        "DRONE_COMMIT_MESSAGE",
        "CI_COMMIT_MESSAGE"
    ),
    field!(".Commit.Link", "DRONE_COMMIT_LINK", "CI_PIPELINE_FORGE_URL"),
    field!(
        ".Commit.Author.Name",
        "DRONE_COMMIT_AUTHOR",
        "CI_COMMIT_AUTHOR"
    ),
    field!(
        ".Commit.Author.Email",
        "DRONE_COMMIT_AUTHOR_EMAIL",
        "CI_COMMIT_AUTHOR_EMAIL"
    ),
    field!(
        ".Commit.Author.Avatar",
        "DRONE_COMMIT_AUTHOR_AVATAR",
        "CI_COMMIT_AUTHOR_AVATAR"
    ),
    field!(".Build.Number", "DRONE_BUILD_NUMBER", "CI_PIPELINE_NUMBER"),
    field!(".Build.Event", "DRONE_BUILD_EVENT", "CI_PIPELINE_EVENT"),
    field!(".Build.Status", "DRONE_BUILD_STATUS", "CI_PIPELINE_STATUS"),
    field!(".Build.Link", "DRONE_BUILD_LINK", "CI_PIPELINE_URL"),
    field!(
        ".Build.Created",
        "DRONE_BUILD_CREATED",
        "CI_PIPELINE_CREATED"
    ),
    field!(
        ".Build.Started",
        "DRONE_BUILD_STARTED",
        "CI_PIPELINE_STARTED"
    ),
    field!(
        ".Build.Finished",
        "DRONE_BUILD_FINISHED",
        "CI_PIPELINE_FINISHED"
    ),
    field!(
        ".Build.Deploy",
        "DRONE_DEPLOY_TO",
        "CI_PIPELINE_DEPLOY_TARGET"
    ),
];

/// What drone-cache rendered for a field whose variable is unset (its flags'
/// defaults), so a template written for it renders the same here.
pub fn unset_value(field: &Field) -> &'static str {
    match field.path {
        ".Commit.Branch" => "master",
        ".Build.Event" => "push",
        ".Build.Status" => "success",
        ".Build.Number" | ".Build.Created" | ".Build.Started" | ".Build.Finished" => "0",
        ".Repo.Private" | ".Repo.Trusted" => "false",
        _ => "",
    }
}

pub fn field(path: &str) -> Option<&'static Field> {
    FIELDS.iter().find(|f| f.path == path)
}

impl Field {
    /// The variables that feed this field, Drone's first.
    pub fn sources(&self) -> impl Iterator<Item = &'static str> {
        std::iter::once(self.drone).chain(self.woodpecker)
    }

    pub fn sources_text(&self) -> String {
        self.sources().collect::<Vec<_>>().join(" or ")
    }
}

/// The pipeline's metadata: a snapshot of the variables the fields read.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    vars: HashMap<String, String>,
}

impl Metadata {
    pub fn from_env(env: &HashMap<String, String>) -> Self {
        let vars = FIELDS
            .iter()
            .flat_map(Field::sources)
            .filter_map(|var| env.get(var).map(|v| (var.to_string(), v.clone())))
            .collect();
        Metadata { vars }
    }

    /// The field's value, or `None` when no variable feeds it. A variable set to
    /// the empty string is a value (some fields are legitimately empty).
    pub fn get(&self, field: &Field) -> Option<&str> {
        field
            .sources()
            .find_map(|var| self.vars.get(var))
            .map(String::as_str)
    }

    pub fn get_path(&self, path: &str) -> Option<&str> {
        field(path).and_then(|f| self.get(f))
    }

    /// The repository as owner/name, the default remote root.
    pub fn full_name(&self) -> Option<String> {
        let non_empty = |p: &str| self.get_path(p).filter(|v| !v.is_empty());
        if let Some(full) = non_empty(".Repo.FullName") {
            return Some(full.to_string());
        }
        match (non_empty(".Repo.Owner"), non_empty(".Repo.Name")) {
            (Some(owner), Some(name)) => Some(format!("{owner}/{name}")),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> Metadata {
        Metadata::from_env(&crate::settings::sources::env_of(pairs))
    }

    #[test]
    fn reads_drone_then_woodpecker() {
        let m = meta(&[("CI_COMMIT_BRANCH", "wp"), ("DRONE_COMMIT_BRANCH", "drone")]);
        assert_eq!(m.get_path(".Commit.Branch"), Some("drone"));
        let m = meta(&[("CI_COMMIT_BRANCH", "wp")]);
        assert_eq!(m.get_path(".Commit.Branch"), Some("wp"));
        assert_eq!(m.get_path(".Build.Number"), None);
    }

    #[test]
    fn full_name_from_repo_or_parts() {
        assert_eq!(
            meta(&[("CI_REPO", "octo/hello")]).full_name().as_deref(),
            Some("octo/hello")
        );
        assert_eq!(
            meta(&[("DRONE_REPO_OWNER", "o"), ("DRONE_REPO_NAME", "n")])
                .full_name()
                .as_deref(),
            Some("o/n")
        );
        assert_eq!(meta(&[("DRONE_REPO_NAME", "n")]).full_name(), None);
    }
}
