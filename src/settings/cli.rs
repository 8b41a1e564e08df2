//! The command line and the settings reference, both generated from `defs`.

use std::collections::HashMap;
use std::fmt::Write;

use clap::{Arg, ArgAction, Command};

use super::defs::SETTINGS;
use super::table::{Choice, Group, Kind, Setting};
use crate::key::metadata::FIELDS;

/// What the command line asked for.
pub enum Invocation {
    /// Run with these flag values (setting name to text).
    Run(HashMap<&'static str, String>),
    /// Print this text (help, version, reference) and exit successfully.
    Print(String),
}

pub fn command() -> Command {
    let mut cmd = Command::new("larder")
        .version(env!("CARGO_PKG_VERSION"))
        .about(
            "Build cache for Drone and Woodpecker CI: restore directories before a build, \
             store them after it.",
        )
        .long_about(
            "Build cache for Drone and Woodpecker CI: restore directories before a build, \
             store them after it.\n\n\
             In a pipeline every setting comes from `settings:` (as PLUGIN_<NAME>); on the \
             command line use the flags below. A flag beats the environment.",
        )
        .max_term_width(100)
        .arg(
            Arg::new("settings-markdown")
                .long("settings-markdown")
                .hide(true)
                .action(ArgAction::SetTrue)
                .help("Print the settings reference as Markdown (docs/settings.md)."),
        )
        .arg(
            Arg::new("plugin-docs")
                .long("plugin-docs")
                .hide(true)
                .action(ArgAction::SetTrue)
                .help("Print the page for Woodpecker's plugin index as Markdown (docs.md)."),
        );
    for setting in SETTINGS {
        cmd = cmd.arg(arg(setting));
    }
    cmd
}

/// `s3|filesystem|...`: the allowed values, as the placeholder.
fn choices_name(choices: &[Choice]) -> String {
    choices
        .iter()
        .map(|c| c.value)
        .collect::<Vec<_>>()
        .join("|")
}

fn arg(setting: &'static Setting) -> Arg {
    let mut arg = Arg::new(setting.name)
        .long(setting.flag())
        .help_heading(setting.group.title())
        .help(help_text(setting));
    for alias in setting.flag_aliases {
        arg = arg.alias(*alias);
    }
    match setting.kind {
        Kind::Bool => arg
            .num_args(0..=1)
            .default_missing_value("true")
            .value_name("BOOL"),
        Kind::List => arg
            .action(ArgAction::Append)
            .value_name(placeholder(setting).unwrap_or("ITEM")),
        Kind::Int => arg.value_name("N").allow_negative_numbers(true),
        Kind::Duration => arg.value_name("DURATION"),
        Kind::Size => arg.value_name("SIZE"),
        Kind::Secret => arg.value_name("SECRET"),
        Kind::Text => arg.value_name(placeholder(setting).unwrap_or("TEXT")),
        Kind::Choice(choices) => arg.value_name(choices_name(choices)),
    }
}

/// What a list or text setting's value is, for its flag's placeholder:
/// `--mount <PATH>`, `--restore-keys <TEMPLATE>`, `--endpoint <URL>`.
fn placeholder(setting: &Setting) -> Option<&'static str> {
    let name = setting.name;
    Some(match name {
        "cache_key" | "restore_keys" => "TEMPLATE",
        "mount" => "PATH",
        "endpoint" | "blob_storage_url" => "URL",
        "ca_cert" => "PEM|PATH",
        "sftp_known_hosts" => "LINES|PATH",
        "sftp_host" => "HOST",
        "remote_root" => "FOLDER",
        "bucket" | "container" => "NAME",
        "region" => "REGION",
        "sftp_host_key_fingerprint" => "SHA256:...",
        _ if name.ends_with("_root") || name.ends_with("_file") => "PATH",
        _ if name.ends_with("_name") || name.ends_with("username") => "NAME",
        _ => return None,
    })
}

fn help_text(setting: &Setting) -> String {
    let mut text = format!("{}\n[env: {}]", setting.help, setting.envs().join(", "));
    if let Some(default) = setting.default {
        let _ = write!(text, " [default: {default}]");
    }
    text
}

/// Parses the command line (`args` includes the program name).
pub fn parse(args: Vec<String>) -> Result<Invocation, String> {
    let matches = match command().try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) => {
            use clap::error::ErrorKind;
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    Ok(Invocation::Print(e.render().to_string()))
                }
                _ => Err(e.render().to_string()),
            };
        }
    };
    if matches.get_flag("settings-markdown") {
        return Ok(Invocation::Print(markdown()));
    }
    if matches.get_flag("plugin-docs") {
        return Ok(Invocation::Print(plugin_docs()));
    }
    let mut flags = HashMap::new();
    for setting in SETTINGS {
        if let Some(values) = matches.get_many::<String>(setting.name) {
            let joined = values.cloned().collect::<Vec<_>>().join(",");
            flags.insert(setting.name, joined);
        }
    }
    Ok(Invocation::Run(flags))
}

/// The settings reference (`docs/settings.md`), generated so it cannot drift.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Settings reference\n\n\
         <!-- Generated by `larder --settings-markdown`; do not edit by hand. -->\n\n\
         Each setting is written under `settings:` in the pipeline. Drone and Woodpecker pass it \
         to larder as `PLUGIN_<NAME>`; the other variables listed are read too, in order, so \
         meltwater/drone-cache pipelines keep working. On the command line, use the flag.\n\n",
    );
    out.push_str(ENCODINGS);
    for group in Group::ALL {
        let _ = write!(
            out,
            "\n## {}\n\n| setting | flag | environment | default | meaning |\n|---|---|---|---|---|\n",
            group.title()
        );
        for s in SETTINGS.iter().filter(|s| s.group == group) {
            let _ = writeln!(
                out,
                "| `{}` | `--{}` | {} | {} | {} |",
                s.name,
                s.flag(),
                s.envs()
                    .iter()
                    .map(|e| format!("`{e}`"))
                    .collect::<Vec<_>>()
                    .join(" "),
                s.default.map(|d| format!("`{d}`")).unwrap_or_default(),
                s.help.replace('|', "\\|")
            );
        }
    }
    out.push_str(
        "\n## Key template fields\n\n\
         `cache_key` may use these fields. Each is read from the Drone variable, else the \
         Woodpecker one; a field whose variables are both unset is an error, not an empty string.\n\n\
         | field | Drone | Woodpecker |\n|---|---|---|\n",
    );
    for f in FIELDS {
        let _ = writeln!(
            out,
            "| `{{{{ {} }}}}` | `{}` | {} |",
            f.path,
            f.drone,
            f.woodpecker.map(|w| format!("`{w}`")).unwrap_or_default()
        );
    }
    out.push_str(
        "\nFunctions: `checksum \"file\"` (MD5 of the file), `hashFiles \"glob\" ...` (SHA-256 over \
         the SHA-256 of every matching file; `**` crosses directories), `epoch` (Unix seconds), \
         `arch` (Go's name: amd64, arm64) and `os` (linux). Paths are relative to the workspace.\n",
    );
    out
}

/// How the runners pass settings, for both generated pages.
const ENCODINGS: &str = "\
How the runners pass settings, and how larder reads them:

- **Names.** Drone upper-cases the key and keeps its dashes (`restore-keys:` arrives as \
`PLUGIN_RESTORE-KEYS`); Woodpecker turns dashes and dots into underscores \
(`PLUGIN_RESTORE_KEYS`). larder reads both, so `restore-keys` and `restore_keys` are the same \
setting; writing it twice with different values is an error.
- **Lists.** A YAML list of plain values arrives joined with commas (`mount: [a, b]` as `a,b`). \
The runners do not escape commas, so **an item cannot contain a comma** in that form: \
`mount: ['a,b']` is two mounts, `a` and `b`. A list that holds a map arrives as JSON \
(Woodpecker: also a list with a `from_secret` item), and larder reads a JSON array too; to give \
an item with a comma in it, write the list as a JSON string: `mount: '[\"a,b\"]'`. Items that \
are maps or lists are an error.
- **Other values.** Booleans and numbers arrive as text (`true`, `3`); `from_secret` gives the \
secret's value. An empty value counts as not set.
- **Everything is a setting.** Woodpecker plugin steps cannot set `environment:`, so every \
input larder takes, including a CA certificate (`ca_cert`), is a setting.
";

/// The container image, as pipelines name it.
pub const IMAGE: &str = "ghcr.io/larder-ci/larder";

/// The settings the example's restore and rebuild steps share.
const EXAMPLE_CACHE: &str = "      mount: [pkg.mod]
      cache_key: 'gomod-{{ checksum \"go.sum\" }}'
      bucket: ci-cache
      endpoint: https://minio.example.com
      path_style: true
      access_key: { from_secret: cache_access_key }
      secret_key: { from_secret: cache_secret_key }
";

/// The page Woodpecker's plugin index reads (`docs.md`): its front matter,
/// an example, and the settings table in the index's format.
pub fn plugin_docs() -> String {
    let mut out = format!(
        "---\n\
         name: larder\n\
         description: \"Build cache: restore directories (Go modules, node_modules, cargo) \
         before a build and store them after it, on S3, Azure, GCS, SFTP or a volume\"\n\
         author: larder contributors\n\
         tags: [cache, s3, azure, gcs, sftp, drone-cache]\n\
         containerImage: {IMAGE}\n\
         containerImageUrl: https://github.com/larder-ci/larder/pkgs/container/larder\n\
         url: https://github.com/larder-ci/larder\n\
         icon: https://raw.githubusercontent.com/larder-ci/larder/main/docs/icon.svg\n\
         ---\n\n\
         <!-- Generated by `larder --plugin-docs`; do not edit by hand. -->\n\n\
         A build cache, and a drop-in replacement for meltwater/drone-cache (the same settings \
         work). One step before the build restores directories from storage; one step after \
         it stores them. A restore is all or nothing, keys are immutable, and an entry becomes \
         visible only when it is complete.\n\n\
         ```yaml\n\
         steps:\n  \
           - name: restore-cache\n    \
             image: {IMAGE}:1\n    \
             settings:\n      \
               restore: true\n\
         {EXAMPLE_CACHE}      \
               restore_keys: ['gomod-']\n\n  \
           - name: build\n    \
             image: golang:1.23\n    \
             commands:\n      \
               - export GOMODCACHE=\"$$CI_WORKSPACE/pkg.mod\"\n      \
               - go build ./...\n\n  \
           - name: rebuild-cache\n    \
             image: {IMAGE}:1\n    \
             settings:\n      \
               rebuild: true\n\
         {EXAMPLE_CACHE}\
         ```\n\n\
         Mounts are relative to the workspace (`CI_WORKSPACE`), so caches such as Go's module \
         cache must be pointed into it. larder reads Woodpecker's `CI_*` variables and Drone's \
         `DRONE_*` ones for key templates (`{{{{ .Commit.Branch }}}}`, `{{{{ checksum \"go.sum\" }}}}`). \
         More: the [README](https://github.com/larder-ci/larder#readme) and the \
         [settings reference](https://github.com/larder-ci/larder/blob/main/docs/settings.md), \
         which also lists the environment variables each setting reads.\n\n\
         ## Settings\n\n"
    );
    out.push_str(ENCODINGS);
    out.push_str(
        "\n| Settings Name | Default | Description |\n| ------------- | ------- | ----------- |\n",
    );
    for s in SETTINGS {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} |",
            s.name,
            s.default
                .map(|d| format!("`{d}`"))
                .unwrap_or_else(|| "*none*".into()),
            s.help.replace('|', "\\|")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> HashMap<&'static str, String> {
        let args = std::iter::once("larder")
            .chain(args.iter().copied())
            .map(String::from)
            .collect();
        match parse(args) {
            Ok(Invocation::Run(flags)) => flags,
            Ok(Invocation::Print(_)) => panic!("unexpected print"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn flags_map_to_settings() {
        let flags = run(&[
            "--restore",
            "--mount",
            "a",
            "--mount",
            "b,c",
            "--cache-key",
            "k",
            "--compression-level=-1",
            "--backend.operation-timeout",
            "1m",
        ]);
        assert_eq!(flags["restore"], "true");
        assert_eq!(flags["mount"], "a,b,c");
        assert_eq!(flags["cache_key"], "k");
        assert_eq!(flags["compression_level"], "-1");
        assert_eq!(flags["backend_operation_timeout"], "1m");
        assert_eq!(run(&["--rebuild=false"])["rebuild"], "false");
    }

    #[test]
    fn help_lists_every_setting_with_its_env() {
        let help = command().render_long_help().to_string();
        for s in SETTINGS {
            assert!(
                help.contains(&format!("--{}", s.flag())),
                "{} missing",
                s.name
            );
            assert!(help.contains(&s.plugin_env()), "{} env missing", s.name);
        }
    }

    #[test]
    fn placeholders_say_what_to_write() {
        let help = command().render_long_help().to_string();
        for flag in [
            "--restore-keys <TEMPLATE>",
            "--mount <PATH>",
            "--cache-key <TEMPLATE>",
            "--endpoint <URL>",
            "--filesystem-cache-root <PATH>",
            "--result-file <PATH>",
            "--log-format <text|json>",
        ] {
            assert!(help.contains(flag), "{flag} missing from:\n{help}");
        }
    }

    #[test]
    fn unknown_flags_are_errors() {
        let err = match parse(vec!["larder".into(), "--cache-keys".into(), "x".into()]) {
            Err(e) => e,
            Ok(_) => panic!("accepted"),
        };
        assert!(err.contains("--cache-key"), "{err}");
    }

    #[test]
    fn committed_plugin_docs_are_current() {
        let committed = include_str!("../../docs.md");
        assert!(
            committed == plugin_docs(),
            "docs.md is stale: run `cargo run -- --plugin-docs > docs.md`"
        );
    }

    #[test]
    fn plugin_docs_have_the_front_matter_the_index_reads() {
        let docs = plugin_docs();
        let header = docs
            .strip_prefix("---\n")
            .and_then(|rest| rest.split_once("\n---\n"))
            .map(|(header, _)| header)
            .expect("front matter between --- lines at the very start");
        for field in [
            "name",
            "description",
            "author",
            "tags",
            "containerImage",
            "containerImageUrl",
            "url",
            "icon",
        ] {
            assert!(
                header.lines().any(|l| l.starts_with(&format!("{field}: "))),
                "{field} missing from:\n{header}"
            );
        }
        for s in SETTINGS {
            assert!(docs.contains(&format!("| `{}` |", s.name)), "{}", s.name);
        }
    }

    #[test]
    fn committed_reference_is_current() {
        let committed = include_str!("../../docs/settings.md");
        assert!(
            committed == markdown(),
            "docs/settings.md is stale: run `cargo run -- --settings-markdown > docs/settings.md`"
        );
    }
}
