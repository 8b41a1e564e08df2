//! The project's own pipelines (.drone.yml, .woodpecker.yaml) and the
//! plugin page (docs.md): they parse, every larder setting they use is in
//! the settings table, and what each runner would hand larder from them is
//! a valid configuration.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::runners::Runner;
use larder::job::{Job, Process, Task};
use larder::settings::cli::IMAGE;
use larder::settings::{self, Loaded, defs};
use serde_yaml_ng::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every YAML document of `file`, with `<<: *anchor` merges applied.
fn documents(file: &str) -> Vec<Value> {
    if let Some(page) = file.strip_suffix("#example") {
        return documents_of(file, &yaml_example(page));
    }
    let text = std::fs::read_to_string(root().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    documents_of(file, &text)
}

/// The first ```yaml block of a Markdown page.
fn yaml_example(page: &str) -> String {
    let text = std::fs::read_to_string(root().join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
    let (_, rest) = text.split_once("```yaml\n").expect("a yaml example");
    let (example, _) = rest.split_once("```").expect("the example's end");
    example.to_string()
}

fn documents_of(file: &str, text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| {
            let mut value = <Value as serde::Deserialize>::deserialize(doc)
                .unwrap_or_else(|e| panic!("{file} is not valid YAML: {e}"));
            value
                .apply_merge()
                .unwrap_or_else(|e| panic!("{file}: merge keys: {e}"));
            value
        })
        .collect()
}

/// The steps of a pipeline document: Drone's list, or Woodpecker's list
/// (or map of name to step).
fn steps(doc: &Value) -> Vec<(String, &Value)> {
    match doc.get("steps") {
        Some(Value::Sequence(steps)) => steps
            .iter()
            .map(|s| {
                let name = s.get("name").and_then(Value::as_str).expect("step name");
                (name.to_string(), s)
            })
            .collect(),
        Some(Value::Mapping(steps)) => steps
            .iter()
            .map(|(k, s)| (k.as_str().expect("step name").to_string(), s))
            .collect(),
        other => panic!("no steps: {other:?}"),
    }
}

fn image_of(step: &Value) -> &str {
    step.get("image")
        .and_then(Value::as_str)
        .expect("step image")
}

fn is_larder(step: &Value) -> bool {
    image_of(step).starts_with(&format!("{IMAGE}:"))
}

/// A placeholder for every secret a step names.
fn secrets_of(settings: &Value, out: &mut Vec<(String, String)>) {
    match settings {
        Value::Mapping(map) => {
            if let Some(name) = map.get("from_secret").and_then(Value::as_str) {
                out.push((name.to_string(), format!("secret-{name}")));
            }
            map.values().for_each(|v| secrets_of(v, out));
        }
        Value::Sequence(items) => items.iter().for_each(|v| secrets_of(v, out)),
        _ => {}
    }
}

/// Checks the larder steps of a pipeline file as `runner` would run them.
fn check_pipeline(file: &str, runner: Runner) {
    let docs = documents(file);
    let pipelines: Vec<&Value> = docs.iter().filter(|d| d.get("steps").is_some()).collect();
    assert!(!pipelines.is_empty(), "{file} has no pipeline");
    let workspace = tempfile::tempdir().unwrap();
    // The lockfiles the examples' keys checksum.
    std::fs::copy(
        root().join("Cargo.lock"),
        workspace.path().join("Cargo.lock"),
    )
    .unwrap();
    std::fs::write(
        workspace.path().join("go.sum"),
        "example.com/m v1.0.0 h1:x=\n",
    )
    .unwrap();
    std::fs::write(
        workspace.path().join("go.mod"),
        "module example.com/m\n\ngo 1.22\n",
    )
    .unwrap();
    let mut modes = Vec::new();
    let mut keys = Vec::new();
    for doc in pipelines {
        for (name, step) in steps(doc) {
            if let Some(Value::Sequence(commands)) = step.get("commands") {
                for command in commands.iter().filter_map(Value::as_str) {
                    // Scripts the pipeline runs exist in the checkout.
                    for word in command
                        .split_whitespace()
                        .filter(|w| w.starts_with("scripts/"))
                    {
                        assert!(root().join(word).is_file(), "{file} step {name}: no {word}");
                    }
                }
            }
            if !is_larder(step) {
                continue;
            }
            let settings = step
                .get("settings")
                .unwrap_or_else(|| panic!("{name}: no settings"));
            let Value::Mapping(map) = settings else {
                panic!("{name}: settings not a map")
            };
            for key in map.keys() {
                let key = key.as_str().expect("setting name");
                let canonical = key.replace(['-', '.'], "_").to_ascii_lowercase();
                assert!(
                    defs::find(&canonical).is_some(),
                    "{file} step {name}: '{key}' is not a larder setting"
                );
            }
            // What the runner would pass, read by larder's own settings code.
            let mut secrets = Vec::new();
            secrets_of(settings, &mut secrets);
            let secrets: Vec<(&str, &str)> = secrets
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let mut env: HashMap<String, String> = runner
                .settings_env_of(settings, &secrets)
                .into_iter()
                .collect();
            let metadata = match runner {
                Runner::Drone => common::runners::drone_metadata("larder-ci/larder", "main", 1),
                Runner::Woodpecker => {
                    common::runners::woodpecker_metadata("larder-ci/larder", "main", 1)
                }
            };
            env.extend(metadata);
            env.insert(
                "DRONE_WORKSPACE".into(),
                workspace.path().display().to_string(),
            );
            env.insert(
                "CI_WORKSPACE".into(),
                workspace.path().display().to_string(),
            );
            if let Some(Value::String(ca)) = map.get("ca_cert") {
                panic!("{name}: ca_cert should come from a secret, not {ca}");
            }
            // A CA certificate from a secret: give a real one to parse.
            if env.contains_key("PLUGIN_CA_CERT") {
                env.insert("PLUGIN_CA_CERT".into(), TEST_CA.into());
            }
            let loaded = settings::load(vec!["larder".into()], &env)
                .unwrap_or_else(|e| panic!("{file} step {name}: {e}"));
            let Loaded::Run {
                values, warnings, ..
            } = loaded
            else {
                panic!("{name}: printed instead of running")
            };
            assert!(warnings.is_empty(), "{file} step {name}: {warnings:?}");
            let process = Process {
                env: env.clone(),
                cwd: workspace.path().to_path_buf(),
                ..Process::default()
            };
            let job =
                Job::new(&values, &process).unwrap_or_else(|e| panic!("{file} step {name}: {e}"));
            let mounts = match &job.task {
                Task::Restore(task) => task.mounts.clone(),
                Task::Rebuild(task) => task.mounts.clone(),
                Task::Flush(_) | Task::Export(_) => {
                    panic!("{file} step {name}: not a restore or rebuild")
                }
            };
            modes.push(job.mode().to_string());
            keys.push((
                job.mode().to_string(),
                job.key().map(str::to_string),
                mounts,
            ));
        }
    }
    assert_eq!(
        modes,
        ["restore", "rebuild"],
        "{file}: restore first, rebuild last"
    );
    // The rebuild stores under the key the restore looks for, with the same mounts.
    assert_eq!(
        format!("{:?}", keys[0].1),
        format!("{:?}", keys[1].1),
        "{file}: keys differ"
    );
    assert_eq!(
        format!("{:?}", keys[0].2),
        format!("{:?}", keys[1].2),
        "{file}: mounts differ"
    );
}

/// The image steps: both platforms from the Dockerfile's context, pushed on tags only.
fn check_image_steps(file: &str, tag_condition: impl Fn(&Value) -> bool) {
    let docs = documents(file);
    let mut pushed = 0;
    let mut built = 0;
    for doc in docs.iter().filter(|d| d.get("steps").is_some()) {
        for (name, step) in steps(doc) {
            let Some(settings) = step.get("settings") else {
                continue;
            };
            if settings.get("platforms").is_none() {
                continue;
            }
            let platforms: Vec<&str> = settings["platforms"]
                .as_sequence()
                .expect("platforms list")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert_eq!(
                platforms,
                ["linux/amd64", "linux/arm64"],
                "{file} step {name}"
            );
            assert_eq!(settings["dockerfile"].as_str(), Some("Dockerfile"));
            assert_eq!(settings["context"].as_str(), Some("target/image"));
            assert!(root().join("Dockerfile").is_file());
            assert_eq!(settings["repo"].as_str(), Some(IMAGE), "{file} step {name}");
            if settings.get("dry_run").and_then(Value::as_bool) == Some(true) {
                built += 1;
            } else {
                assert!(
                    tag_condition(step),
                    "{file} step {name} pushes, but not only on tags"
                );
                assert!(
                    settings.get("password").is_some(),
                    "{file} step {name}: no login"
                );
                pushed += 1;
            }
        }
    }
    assert_eq!(
        (built, pushed),
        (1, 1),
        "{file}: one image build, one publish on tags"
    );
}

#[test]
fn drone_pipeline_is_valid() {
    check_pipeline(".drone.yml", Runner::Drone);
    check_image_steps(".drone.yml", |step| {
        step["when"]["event"]
            .as_sequence()
            .is_some_and(|e| e.len() == 1 && e[0] == "tag")
    });
}

#[test]
fn woodpecker_pipeline_is_valid() {
    check_pipeline(".woodpecker.yaml", Runner::Woodpecker);
    check_image_steps(".woodpecker.yaml", |step| {
        step["when"]
            .as_sequence()
            .is_some_and(|w| w.len() == 1 && w[0]["event"] == "tag")
    });
}

#[test]
fn plugin_page_example_is_valid() {
    check_pipeline("docs.md#example", Runner::Woodpecker);
}

#[test]
fn go_page_example_is_valid() {
    check_pipeline("docs/go.md#example", Runner::Drone);
}

#[test]
fn plugin_page_front_matter_is_what_the_index_reads() {
    let text = std::fs::read_to_string(root().join("docs.md")).expect("docs.md");
    let header = text
        .strip_prefix("---\n")
        .and_then(|rest| rest.split_once("\n---\n"))
        .map(|(header, _)| header)
        .expect("front matter");
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Header {
        name: String,
        description: String,
        author: String,
        tags: Vec<String>,
        container_image: String,
        container_image_url: String,
        url: String,
        icon: String,
    }
    let header: Header = serde_yaml_ng::from_str(header).expect("front matter is YAML");
    assert_eq!(header.container_image, IMAGE);
    assert!(header.icon.ends_with("docs/icon.svg") && root().join("docs/icon.svg").is_file());
    assert!(text.contains("| Settings Name | Default | Description |"));
}

/// A self-signed CA certificate, standing in for a ca_cert secret.
const TEST_CA: &str = include_str!("data/test-ca.pem");

#[test]
fn encodings_match_the_runners_source() {
    let settings = r#"
restore-keys: ['gomod-', 'go-']
mount: [pkg.mod]
cache_key: '{{ checksum "go.sum" }}'
level: 3
flag: true
empty: []
mixed: [a, {from_secret: fallback}]
nested: {a: [1, 2]}
access_key: {from_secret: key}
unset: ~
"#;
    let secrets = [("key", "AKID"), ("fallback", "gomod-main-")];
    let get = |runner: Runner, var: &str| {
        runner
            .settings_env(settings, &secrets)
            .into_iter()
            .find(|(k, _)| k == var)
            .map(|(_, v)| v)
    };
    use Runner::*;
    assert_eq!(
        get(Drone, "PLUGIN_RESTORE-KEYS").as_deref(),
        Some("gomod-,go-")
    );
    assert_eq!(get(Drone, "PLUGIN_RESTORE_KEYS"), None);
    assert_eq!(
        get(Woodpecker, "PLUGIN_RESTORE_KEYS").as_deref(),
        Some("gomod-,go-")
    );
    assert_eq!(get(Drone, "PLUGIN_LEVEL").as_deref(), Some("3"));
    assert_eq!(get(Woodpecker, "PLUGIN_FLAG").as_deref(), Some("true"));
    assert_eq!(get(Woodpecker, "PLUGIN_EMPTY").as_deref(), Some(""));
    assert_eq!(get(Drone, "PLUGIN_EMPTY").as_deref(), Some(""));
    // Drone leaves a from_secret inside a list alone; Woodpecker resolves it.
    assert_eq!(
        get(Drone, "PLUGIN_MIXED").as_deref(),
        Some(r#"["a",{"from_secret":"fallback"}]"#)
    );
    assert_eq!(
        get(Woodpecker, "PLUGIN_MIXED").as_deref(),
        Some(r#"["a","gomod-main-"]"#)
    );
    assert_eq!(
        get(Drone, "PLUGIN_NESTED").as_deref(),
        Some(r#"{"a":[1,2]}"#)
    );
    assert_eq!(get(Drone, "PLUGIN_ACCESS_KEY").as_deref(), Some("AKID"));
    assert_eq!(get(Woodpecker, "PLUGIN_UNSET"), None);
}
