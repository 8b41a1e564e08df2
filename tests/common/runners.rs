//! How Drone and Woodpecker turn a step's `settings:` into a plugin's
//! environment, written from their source: drone-runner-docker
//! `engine/compiler/step.go` and `internal/encoder/encoder.go`; Woodpecker
//! `pipeline/frontend/yaml/compiler/settings/params.go`. Tests write settings
//! as a pipeline file does and hand larder exactly what that runner would.

use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runner {
    Drone,
    Woodpecker,
}

impl Runner {
    /// The `PLUGIN_*` variables for `settings`, a YAML mapping as written
    /// under `settings:`. `secrets` gives the value of each `from_secret`.
    pub fn settings_env(self, settings: &str, secrets: &[(&str, &str)]) -> Vec<(String, String)> {
        let yaml: Yaml = serde_yaml_ng::from_str(settings)
            .unwrap_or_else(|e| panic!("settings are not YAML: {e}\n{settings}"));
        self.settings_env_of(&yaml, secrets)
    }

    pub fn settings_env_of(
        self,
        settings: &Yaml,
        secrets: &[(&str, &str)],
    ) -> Vec<(String, String)> {
        let Yaml::Mapping(map) = settings else {
            panic!("settings must be a mapping: {settings:?}")
        };
        let mut env = Vec::new();
        for (key, value) in map {
            let key = scalar(key).unwrap_or_else(|| panic!("setting key {key:?}"));
            if value.is_null() {
                continue; // both runners skip a nil value
            }
            env.push((self.key(&key), self.value(value, secrets)));
        }
        env
    }

    fn key(self, key: &str) -> String {
        match self {
            // step.go: "PLUGIN_" + strings.ToUpper(key)
            Runner::Drone => format!("PLUGIN_{}", key.to_uppercase()),
            // params.go sanitizeParamKey: "." and "-" become "_", then upper case
            Runner::Woodpecker => format!("PLUGIN_{}", key.replace(['.', '-'], "_").to_uppercase()),
        }
    }

    fn value(self, value: &Yaml, secrets: &[(&str, &str)]) -> String {
        if let Some(name) = from_secret(value) {
            return secret(name, secrets);
        }
        match self {
            Runner::Drone => match value {
                // encodeSlice: a list that re-reads as []string is joined; else JSON.
                Yaml::Sequence(items) if items.iter().all(|i| scalar(i).is_some()) => items
                    .iter()
                    .map(|i| scalar(i).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(","),
                Yaml::Sequence(_) | Yaml::Mapping(_) => json(value, None).to_string(),
                other => scalar(other).unwrap_or_default(),
            },
            Runner::Woodpecker => match value {
                Yaml::Sequence(items) if items.is_empty() => String::new(),
                // A list of scalars (nil items as "") is joined; any complex item makes it JSON.
                Yaml::Sequence(items)
                    if items.iter().all(|i| i.is_null() || scalar(i).is_some()) =>
                {
                    items
                        .iter()
                        .map(|i| scalar(i).unwrap_or_default())
                        .collect::<Vec<_>>()
                        .join(",")
                }
                // handleComplex: JSON, with from_secret maps replaced by the secret anywhere inside.
                Yaml::Sequence(_) | Yaml::Mapping(_) => json(value, Some(secrets)).to_string(),
                other => scalar(other).unwrap_or_default(),
            },
        }
    }
}

/// A scalar's text as both runners format it; `None` for lists, maps and nil.
fn scalar(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Bool(b) => Some(b.to_string()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Tagged(t) => scalar(&t.value),
        Yaml::Null | Yaml::Sequence(_) | Yaml::Mapping(_) => None,
    }
}

fn from_secret(value: &Yaml) -> Option<&str> {
    match value {
        Yaml::Mapping(map) => map.get("from_secret").and_then(Yaml::as_str),
        _ => None,
    }
}

fn secret(name: &str, secrets: &[(&str, &str)]) -> String {
    secrets
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| panic!("the test gives no secret {name}"))
}

/// YAML to JSON; with `secrets`, `from_secret` maps become the secret (Woodpecker).
fn json(value: &Yaml, secrets: Option<&[(&str, &str)]>) -> Json {
    if let (Some(secrets), Some(name)) = (secrets, from_secret(value)) {
        return Json::String(secret(name, secrets));
    }
    match value {
        Yaml::Null => Json::Null,
        Yaml::Bool(b) => Json::Bool(*b),
        Yaml::Number(n) => serde_json::from_str(&n.to_string()).unwrap_or(Json::Null),
        Yaml::String(s) => Json::String(s.clone()),
        Yaml::Sequence(items) => Json::Array(items.iter().map(|i| json(i, secrets)).collect()),
        Yaml::Mapping(map) => Json::Object(
            map.iter()
                .map(|(k, v)| (scalar(k).unwrap_or_default(), json(v, secrets)))
                .collect(),
        ),
        Yaml::Tagged(t) => json(&t.value, secrets),
    }
}

/// The metadata Drone gives every step of build number `build`, a push to
/// `branch` of `repo` (owner/name): `DRONE_*`, and the workspace also as
/// `CI_WORKSPACE*`.
pub fn drone_metadata(repo: &str, branch: &str, build: u32) -> Vec<(String, String)> {
    let (owner, name) = repo.split_once('/').expect("owner/name");
    [
        ("CI", "true"),
        ("DRONE", "true"),
        ("DRONE_REPO", repo),
        ("DRONE_REPO_OWNER", owner),
        ("DRONE_REPO_NAMESPACE", owner),
        ("DRONE_REPO_NAME", name),
        ("DRONE_REPO_BRANCH", "main"),
        ("DRONE_BRANCH", branch),
        ("DRONE_COMMIT_BRANCH", branch),
        (
            "DRONE_COMMIT_SHA",
            "4f0c3a1e6d2b8c9a7f5e3d1c0b9a8f7e6d5c4b3a",
        ),
        ("DRONE_COMMIT_REF", &format!("refs/heads/{branch}")),
        ("DRONE_BUILD_NUMBER", &build.to_string()),
        ("DRONE_BUILD_EVENT", "push"),
        ("DRONE_BUILD_STATUS", "success"),
        ("DRONE_WORKSPACE", "/drone/src"),
        ("DRONE_WORKSPACE_BASE", "/drone/src"),
        ("DRONE_WORKSPACE_PATH", ""),
        ("CI_WORKSPACE", "/drone/src"),
        ("CI_WORKSPACE_BASE", "/drone/src"),
        ("CI_WORKSPACE_PATH", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Woodpecker's workspace for `repo` on github.com, as its plugins see it.
pub fn woodpecker_workspace(repo: &str) -> String {
    format!("/woodpecker/src/github.com/{repo}")
}

/// The metadata Woodpecker gives a plugin step: `CI_*`, plus the `DRONE_*`
/// subset it copies for Drone plugins (metadata/drone_compatibility.go),
/// which has no `DRONE_WORKSPACE`.
pub fn woodpecker_metadata(repo: &str, branch: &str, build: u32) -> Vec<(String, String)> {
    let (owner, name) = repo.split_once('/').expect("owner/name");
    let ci: Vec<(&str, String)> = vec![
        ("CI", "woodpecker".into()),
        ("CI_REPO", repo.into()),
        ("CI_REPO_OWNER", owner.into()),
        ("CI_REPO_NAME", name.into()),
        ("CI_REPO_DEFAULT_BRANCH", "main".into()),
        ("CI_REPO_URL", format!("https://github.com/{repo}")),
        (
            "CI_REPO_CLONE_URL",
            format!("https://github.com/{repo}.git"),
        ),
        ("CI_COMMIT_BRANCH", branch.into()),
        (
            "CI_COMMIT_SHA",
            "4f0c3a1e6d2b8c9a7f5e3d1c0b9a8f7e6d5c4b3a".into(),
        ),
        ("CI_COMMIT_REF", format!("refs/heads/{branch}")),
        ("CI_PIPELINE_NUMBER", build.to_string()),
        ("CI_PIPELINE_EVENT", "push".into()),
        ("CI_PIPELINE_STATUS", "success".into()),
        ("CI_WORKSPACE", woodpecker_workspace(repo)),
        ("CI_STEP_TYPE", "plugin".into()),
    ];
    let copied = [
        ("CI_COMMIT_BRANCH", "DRONE_BRANCH"),
        ("CI_PIPELINE_NUMBER", "DRONE_BUILD_NUMBER"),
        ("CI_PIPELINE_EVENT", "DRONE_BUILD_EVENT"),
        ("CI_COMMIT_SHA", "DRONE_COMMIT"),
        ("CI_COMMIT_SHA", "DRONE_COMMIT_SHA"),
        ("CI_COMMIT_REF", "DRONE_COMMIT_REF"),
        ("CI_COMMIT_BRANCH", "DRONE_COMMIT_BRANCH"),
        ("CI_REPO", "DRONE_REPO"),
        ("CI_REPO_OWNER", "DRONE_REPO_OWNER"),
        ("CI_REPO_NAME", "DRONE_REPO_NAME"),
        ("CI_REPO_URL", "DRONE_REPO_LINK"),
        ("CI_REPO_DEFAULT_BRANCH", "DRONE_REPO_BRANCH"),
        ("CI_REPO_CLONE_URL", "DRONE_REMOTE_URL"),
    ];
    let mut env: Vec<(String, String)> =
        ci.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    for (from, to) in copied {
        let value = ci.iter().find(|(k, _)| *k == from).map(|(_, v)| v.clone());
        env.push((to.to_string(), value.expect("copied variable is set")));
    }
    env.push(("DRONE_BUILD_STATUS".into(), "success".into()));
    env.push(("DRONE_REPO_SCM".into(), "git".into()));
    env.push(("PULLREQUEST_DRONE_PULL_REQUEST".into(), "0".into()));
    env
}
