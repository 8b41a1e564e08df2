//! The settings parser: `larder::settings::load` with a command line and an
//! environment built from the input (names from larder's settings table,
//! drone-cache's aliases, template variables, or anything), on top of one of
//! a few realistic pipelines. It must return a configuration or a
//! configuration error, never panic; and no secret (a value given to a
//! setting of kind Secret) may appear in the error, the warnings or the
//! configuration's debug output.
//!
//! Settings that name a file to read (`sftp_public_key_file`,
//! `sftp_known_hosts`, `json_key_file`) are pointed into a sandbox, so the
//! fuzzer cannot make larder read /dev/zero or a FIFO.
#![no_main]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use larder::job::{self, Job, Process};
use larder::key::metadata::FIELDS;
use larder::settings::defs::{SETTINGS, UNSUPPORTED};
use larder::settings::table::Kind;
use larder::settings::{self, Loaded};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    pipeline: u8,
    vars: Vec<(VarName, Value)>,
    args: Vec<ArgIn>,
}

#[derive(Arbitrary, Debug)]
enum VarName {
    Plugin(u8),
    Alias(u8, u8),
    Metadata(u8, bool),
    Unsupported(u8),
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Value {
    Known(u8),
    Text(String),
}

#[derive(Arbitrary, Debug)]
enum ArgIn {
    Flag(u8, Option<Value>),
    FlagAlias(u8, Value),
    Separate(u8, Value),
    Raw(String),
}

/// Values that mean something to some setting.
const KNOWN: &[&str] = &[
    "true",
    "false",
    "1",
    "0",
    "yes",
    "",
    " ",
    "-1",
    "22",
    "65536",
    "99999999999999999999",
    "90s",
    "1h30m",
    "14d",
    "0s",
    "10GB",
    "500MiB",
    "1.5GiB",
    "gzip",
    "zstd",
    "tar",
    "lz4",
    "s3",
    "filesystem",
    "sftp",
    "azure",
    "gcs",
    "floppy",
    "pkg.mod",
    "a,b",
    "[\"x,y\", \"z\"]",
    "[1]",
    "../up",
    "/abs/dir",
    "**/node_modules",
    "./a/",
    "a,./a",
    "a,a/b",
    ".",
    "/",
    "{{ .Commit.Branch }}",
    "{{ checksum \"go.sum\" }}",
    "{{ (((arch))) }}",
    "{{ .Nope }}",
    "{{ if x }}",
    "octo/hello",
    "a/../b",
    "team a//cache",
    "...",
    "minio:9000",
    "http://minio:9000",
    "https://u:p@host",
    "ftp://x",
    "http://",
    "[::1]:9000",
    "SHA256:abc",
    "MD5:abc",
    "PASSWORD",
    "PUBLIC_KEY_FILE",
    "KEY",
    "password",
    "debug",
    "loud",
    "known_hosts",
    "key",
    "json",
    "missing",
    "host ssh-ed25519 AAAAC3Nza",
    "pull_request",
    "push",
    "ünïcode",
    "\u{0}",
];

/// Pipelines to mutate: nothing, then one valid step per backend.
const PIPELINES: &[&[(&str, &str)]] = &[
    &[],
    &[
        ("PLUGIN_RESTORE", "true"),
        ("PLUGIN_MOUNT", "pkg.mod"),
        ("PLUGIN_BUCKET", "ci-cache"),
        ("DRONE_REPO", "octo/hello"),
        ("PLUGIN_ACCESS_KEY", "AKIAFUZZACCESSKEY"),
        ("PLUGIN_SECRET_KEY", "fuzz-secret-key-value"),
        ("PLUGIN_ENDPOINT", "minio:9000"),
    ],
    &[
        ("PLUGIN_REBUILD", "true"),
        ("PLUGIN_BACKEND", "filesystem"),
        ("PLUGIN_FILESYSTEM_CACHE_ROOT", "/tmp/cache"),
        ("PLUGIN_MOUNT", "a,b/**/c"),
        (
            "PLUGIN_CACHE_KEY",
            "{{ .Commit.Branch }}-{{ checksum \"go.sum\" }}",
        ),
        ("CI_REPO", "octo/hello"),
    ],
    &[
        ("PLUGIN_RESTORE", "true"),
        ("PLUGIN_BACKEND", "sftp"),
        ("PLUGIN_SFTP_HOST", "sftp.example.com"),
        ("SFTP_USERNAME", "user"),
        ("SFTP_PASSWORD", "sftp-password-value"),
        ("PLUGIN_SFTP_HOST_KEY_FINGERPRINT", "SHA256:abc"),
        ("DRONE_REPO", "octo/hello"),
    ],
    &[
        ("PLUGIN_FLUSH", "true"),
        ("PLUGIN_FLUSH_AGE", "14d"),
        ("PLUGIN_BACKEND", "azure"),
        ("PLUGIN_ACCOUNT_NAME", "account"),
        ("PLUGIN_ACCOUNT_KEY", "azure-account-key-value"),
        ("PLUGIN_CONTAINER", "cache"),
        ("DRONE_REPO", "octo/hello"),
    ],
    &[
        ("PLUGIN_RESTORE", "true"),
        ("PLUGIN_BACKEND", "gcs"),
        ("PLUGIN_BUCKET", "bucket"),
        (
            "PLUGIN_JSON_KEY",
            "{\"type\":\"service_account\",\"private_key\":\"gcs-json-key\"}",
        ),
        ("DRONE_REPO", "octo/hello"),
    ],
    &[
        ("PLUGIN_RESTORE", "true"),
        ("PLUGIN_BACKEND", "sftp"),
        ("SFTP_HOST", "h"),
        ("PLUGIN_USERNAME", "u"),
        (
            "PLUGIN_SFTP_PRIVATE_KEY",
            "-----BEGIN OPENSSH PRIVATE KEY-----",
        ),
        ("SFTP_KEY_PASSPHRASE", "sftp-key-passphrase"),
        ("PLUGIN_SFTP_KNOWN_HOSTS", "known_hosts"),
        ("DRONE_REPO", "octo/hello"),
    ],
];

/// Settings whose value names a file larder reads.
const FILE_SETTINGS: &[&str] = &["sftp_public_key_file", "sftp_known_hosts", "json_key_file"];

struct Sandbox {
    _dir: tempfile::TempDir,
    /// The current directory given to `load` (the default workspace).
    cwd: PathBuf,
    /// Where file settings point.
    files: PathBuf,
}

fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| {
        let dir = tempfile::tempdir_in(larder_fuzz::temp_root()).unwrap();
        let cwd = dir.path().join("ws");
        let files = dir.path().join("files");
        std::fs::create_dir_all(cwd.join("pkg.mod")).unwrap();
        std::fs::create_dir_all(&files).unwrap();
        std::fs::write(files.join("known_hosts"), "host ssh-ed25519 AAAAC3Nza\n").unwrap();
        std::fs::write(files.join("key"), "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
        std::fs::write(files.join("json"), "{\"type\":\"service_account\"}\n").unwrap();
        Sandbox {
            _dir: dir,
            cwd,
            files,
        }
    })
}

fn pick<T>(items: &[T], index: u8) -> &T {
    &items[usize::from(index) % items.len()]
}

impl Value {
    fn text(&self) -> String {
        match self {
            Value::Known(i) => pick(KNOWN, *i).to_string(),
            Value::Text(t) => t.clone(),
        }
    }
}

impl VarName {
    fn text(&self) -> String {
        match self {
            VarName::Plugin(i) => pick(SETTINGS, *i).plugin_env(),
            VarName::Alias(i, j) => {
                let setting = pick(SETTINGS, *i);
                match setting.aliases {
                    [] => setting.plugin_env(),
                    aliases => pick(aliases, *j).to_string(),
                }
            }
            VarName::Metadata(i, woodpecker) => {
                let field = pick(FIELDS, *i);
                match (woodpecker, field.woodpecker) {
                    (true, Some(wp)) => wp.to_string(),
                    _ => field.drone.to_string(),
                }
            }
            VarName::Unsupported(i) => pick(UNSUPPORTED, *i).0.to_string(),
            VarName::Other(name) => name.clone(),
        }
    }
}

fn flag_aliases() -> Vec<&'static str> {
    SETTINGS
        .iter()
        .flat_map(|s| s.flag_aliases.iter().copied())
        .collect()
}

impl ArgIn {
    fn push(&self, args: &mut Vec<String>) {
        match self {
            ArgIn::Flag(i, None) => args.push(format!("--{}", pick(SETTINGS, *i).flag())),
            ArgIn::Flag(i, Some(v)) => {
                args.push(format!("--{}={}", pick(SETTINGS, *i).flag(), v.text()))
            }
            ArgIn::FlagAlias(i, v) => {
                args.push(format!("--{}={}", pick(&flag_aliases(), *i), v.text()))
            }
            ArgIn::Separate(i, v) => {
                args.push(format!("--{}", pick(SETTINGS, *i).flag()));
                args.push(v.text());
            }
            ArgIn::Raw(text) => args.push(text.clone()),
        }
    }
}

/// Points a file setting's value into the sandbox (`known_hosts` there is a
/// real file, `x/../y` becomes `x_.._y`). Inline known_hosts text (with
/// whitespace) is not a path and stays.
fn confine(setting: &str, value: &str) -> String {
    let trimmed = value.trim();
    if trimmed.is_empty()
        || (setting == "sftp_known_hosts" && trimmed.contains(char::is_whitespace))
    {
        return value.to_string();
    }
    let name = trimmed.replace('/', "_");
    sandbox().files.join(name).to_string_lossy().into_owned()
}

fn confine_files(env: &mut HashMap<String, String>, args: &mut [String]) {
    for name in FILE_SETTINGS {
        let setting = larder::settings::defs::find(name).unwrap();
        for var in setting.envs() {
            if let Some(value) = env.get_mut(&var) {
                *value = confine(name, value);
            }
        }
        let flags: Vec<String> = std::iter::once(setting.flag())
            .chain(setting.flag_aliases.iter().map(|f| f.to_string()))
            .map(|f| format!("--{f}"))
            .collect();
        for i in 0..args.len() {
            for flag in &flags {
                if args[i] == *flag && i + 1 < args.len() {
                    args[i + 1] = confine(name, &args[i + 1]);
                } else if let Some(value) = args[i].strip_prefix(&format!("{flag}=")) {
                    args[i] = format!("{flag}={}", confine(name, value));
                }
            }
        }
    }
}

/// Where a secret setting's value is given.
#[derive(Clone)]
enum Slot {
    Env(String),
    /// `--flag value`: the value's index.
    Arg(usize),
    /// `--flag=value`: the argument's index and its `--flag=` part.
    ArgValue(usize, String),
}

/// Every place the input gives a value to a secret setting.
fn secret_slots(env: &HashMap<String, String>, args: &[String]) -> Vec<Slot> {
    let mut out = Vec::new();
    for setting in SETTINGS.iter().filter(|s| s.kind == Kind::Secret) {
        for var in setting.envs() {
            if env.contains_key(&var) {
                out.push(Slot::Env(var));
            }
        }
        let flag = format!("--{}", setting.flag());
        let with_value = format!("{flag}=");
        // After `--` nothing is a flag: larder never reads those as settings.
        let flags_end = args.iter().position(|a| a == "--").unwrap_or(args.len());
        for (i, arg) in args[..flags_end].iter().enumerate() {
            if *arg == flag && args.get(i + 1).is_some_and(|v| !v.starts_with('-')) {
                out.push(Slot::Arg(i + 1));
            } else if arg.starts_with(&with_value) {
                out.push(Slot::ArgValue(i, with_value.clone()));
            }
        }
    }
    out
}

impl Slot {
    fn value(&self, env: &HashMap<String, String>, args: &[String]) -> String {
        match self {
            Slot::Env(var) => env[var].trim().to_string(),
            Slot::Arg(i) => args[*i].trim().to_string(),
            Slot::ArgValue(i, prefix) => args[*i][prefix.len()..].trim().to_string(),
        }
    }

    fn set(&self, env: &mut HashMap<String, String>, args: &mut [String], value: String) {
        match self {
            Slot::Env(var) => *env.get_mut(var).unwrap() = value,
            Slot::Arg(i) => args[*i] = value,
            Slot::ArgValue(i, prefix) => args[*i] = format!("{prefix}{value}"),
        }
    }
}

/// Everything reading the settings and resolving the job prints or keeps
/// that a log could show.
fn visible(
    result: &Result<Loaded, settings::SettingError>,
    env: &HashMap<String, String>,
) -> String {
    match result {
        Ok(Loaded::Print(text)) => text.clone(),
        Ok(Loaded::Run {
            values, warnings, ..
        }) => {
            let process = Process {
                env: env.clone(),
                cwd: sandbox().cwd.clone(),
                ..Process::default()
            };
            let job = match Job::new(values, &process) {
                Ok(job) => format!("{job:?}\n{}", job::storage::warnings(values).join("\n")),
                Err(e) => format!("{e}\n{e:?}"),
            };
            format!("{values:?}\n{}\n{job}", warnings.join("\n"))
        }
        Err(e) => format!("{e}\n{e:?}"),
    }
}

fn load(args: &[String], env: &HashMap<String, String>) -> Result<Loaded, settings::SettingError> {
    settings::load(args.to_vec(), env)
}

fuzz_target!(|input: Input| {
    let mut env: HashMap<String, String> = pick(PIPELINES, input.pipeline)
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (name, value) in input.vars.iter().take(24) {
        env.insert(name.text(), value.text());
    }
    let mut args = vec!["larder".to_string()];
    for arg in input.args.iter().take(12) {
        arg.push(&mut args);
    }
    confine_files(&mut env, &mut args);

    let result = load(&args, &env);
    let shown = visible(&result, &env);
    let slots = secret_slots(&env, &args);
    if slots.is_empty() {
        return;
    }
    let secrets: Vec<String> = slots.iter().map(|s| s.value(&env, &args)).collect();
    // Everything else the input holds: a secret that also appears there
    // proves nothing when it shows.
    let mut public: Vec<String> = env
        .iter()
        .filter(|(k, _)| !slots.iter().any(|s| matches!(s, Slot::Env(v) if v == *k)))
        .flat_map(|(k, v)| [k.clone(), v.clone()])
        .collect();
    public.extend(env.keys().cloned());
    public.extend(args.iter().enumerate().filter_map(|(i, a)| {
        match slots
            .iter()
            .find(|s| matches!(s, Slot::Arg(j) | Slot::ArgValue(j, _) if *j == i))
        {
            None => Some(a.clone()),
            Some(Slot::ArgValue(_, prefix)) => Some(prefix.clone()),
            Some(_) => None,
        }
    }));
    public.push(sandbox().cwd.to_string_lossy().into_owned());
    for secret in &secrets {
        if secret.chars().count() < 4
            || !shown.contains(secret.as_str())
            || public.iter().any(|p| p.contains(secret.as_str()))
        {
            continue;
        }
        // The secret, or words that happen to be the same? Run again with
        // every secret replaced by a marker.
        let marker = |i: usize| format!("LARDERFUZZMARKER{i}Q");
        let (mut env2, mut args2) = (env.clone(), args.clone());
        for (i, slot) in slots.iter().enumerate() {
            slot.set(&mut env2, &mut args2, marker(i));
        }
        let shown2 = visible(&load(&args2, &env2), &env2);
        let leaked = (0..slots.len()).any(|i| shown2.contains(&marker(i)));
        assert!(
            !leaked && shown2.contains(secret.as_str()),
            "a secret value appears in what load returned: {secret:?} in\n{shown}\n\
             (with markers: {shown2})"
        );
    }
});
