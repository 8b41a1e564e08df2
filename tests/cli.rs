//! The binary's contract with a pipeline: settings from the environment or
//! flags, exit code 2 with a message naming the setting for every
//! configuration error, Drone and Woodpecker metadata, drone-cache's names.

mod common;

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Backend, Run, Step, to_run, tree, unique_root, workspace};

fn larder(args: &[&str], env: &[(&str, &str)], cwd: &std::path::Path) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_larder"))
        .args(args)
        .env_clear()
        .env("RUST_BACKTRACE", "0")
        .envs(env.iter().copied())
        .current_dir(cwd)
        .output()
        .expect("run larder");
    to_run(output)
}

#[test]
fn help_documents_every_setting() {
    let ws = workspace();
    let run = larder(&["--help"], &[], ws.path());
    run.assert_code(0);
    for setting in [
        "--restore",
        "--rebuild",
        "--mount",
        "--cache-key",
        "--backend",
        "--archive-format",
        "--compression-level",
        "--remote-root",
        "--override",
        "--exit-code",
        "--debug",
        "--skip-symlinks",
        "--backend-operation-timeout",
        "--filesystem-cache-root",
        "--bucket",
        "--endpoint",
        "--region",
        "--path-style",
        "--access-key",
        "--secret-key",
        "--session-token",
        "PLUGIN_CACHE_KEY",
        "AWS_SECRET_ACCESS_KEY",
    ] {
        run.assert_log(setting);
    }
    larder(&["--version"], &[], ws.path())
        .assert_code(0)
        .assert_log(env!("CARGO_PKG_VERSION"));
}

/// Every configuration error exits 2 and names the setting to fix.
#[test]
fn configuration_errors_name_the_setting_and_exit_2() {
    let ws = workspace();
    let cwd = ws.path();
    let base = [
        ("PLUGIN_MOUNT", "pkg.mod"),
        ("PLUGIN_BUCKET", "b"),
        ("DRONE_REPO", "o/r"),
        ("DRONE_COMMIT_BRANCH", "main"),
    ];
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("PLUGIN_RESTORE", "true"), ("PLUGIN_REBUILD", "true")],
            "restore and rebuild are both true",
        ),
        (&[], "none of restore, rebuild and flush"),
        (
            &[("PLUGIN_RESTORE", "true"), ("PLUGIN_BACKEND", "dropbox")],
            "setting backend",
        ),
        (
            &[("PLUGIN_RESTORE", "true"), ("PLUGIN_ARCHIVE_FORMAT", "rar")],
            "setting archive_format",
        ),
        (
            &[
                ("PLUGIN_RESTORE", "true"),
                ("PLUGIN_CACHE_KEY", "{{ .Repo.Nmae }}"),
            ],
            "did you mean .Repo.Name",
        ),
        (
            &[("PLUGIN_RESTORE", "yes please")],
            "setting restore (from PLUGIN_RESTORE)",
        ),
        (
            &[
                ("PLUGIN_RESTORE", "true"),
                ("PLUGIN_COMPRESSION_LEVEL", "99"),
            ],
            "setting compression_level",
        ),
        (
            &[("PLUGIN_RESTORE", "true"), ("PLUGIN_MOUNT", "../outside")],
            "setting mount",
        ),
        (
            &[
                ("PLUGIN_RESTORE", "true"),
                ("PLUGIN_BACKEND_OPERATION_TIMEOUT", "soon"),
            ],
            "setting backend_operation_timeout",
        ),
        (&[("PLUGIN_FLUSH", "true")], "setting flush_age"),
        (
            &[("PLUGIN_FLUSH", "true"), ("PLUGIN_MAX_SIZE", "lots")],
            "setting max_size",
        ),
        (
            &[
                ("PLUGIN_RESTORE", "true"),
                ("PLUGIN_RESTORE_KEYS", "a-,{{ .Nope }}"),
            ],
            "setting restore_keys",
        ),
        (
            &[("PLUGIN_RESTORE", "true"), ("PLUGIN_FLUSH", "true")],
            "restore and flush are both true",
        ),
        (
            &[("PLUGIN_REBUILD", "true"), ("PLUGIN_MOUNT", "")],
            "setting mount",
        ),
        (
            &[("PLUGIN_REBUILD", "true"), ("PLUGIN_MOUNT", "/abs/**/x")],
            "patterns must be relative",
        ),
    ];
    for (extra, expected) in cases {
        let mut env = base.to_vec();
        env.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        env.extend_from_slice(extra);
        let run = larder(&[], &env, cwd);
        run.assert_code(2).assert_log(expected);
    }
    // A missing bucket for the default backend, s3.
    let run = larder(
        &[],
        &[
            ("PLUGIN_RESTORE", "true"),
            ("PLUGIN_MOUNT", "m"),
            ("DRONE_REPO", "o/r"),
        ],
        cwd,
    );
    run.assert_code(2).assert_log("setting bucket");
    // An unknown flag.
    larder(&["--restore", "--cache-keys", "x"], &[], cwd)
        .assert_code(2)
        .assert_log("--cache-key");
}

#[test]
fn command_line_flags_run_a_local_job() {
    let ws = workspace();
    tree::rich(ws.path());
    let cache = workspace();
    let cache_root = cache.path().join("cache");
    let root = cache_root.display().to_string();
    let common = [
        "--backend",
        "filesystem",
        "--filesystem-cache-root",
        &root,
        "--mount",
        "pkg.mod",
        "--cache-key",
        "local",
        "--remote-root",
        "demo",
    ];
    let mut args = vec!["--rebuild"];
    args.extend(common);
    larder(&args, &[], ws.path())
        .assert_code(0)
        .assert_log("rebuild: stored key");
    assert!(cache_root.join("demo/local.chunked").is_file());
    let fresh = workspace();
    let mut args = vec!["--restore"];
    args.extend(common);
    larder(&args, &[], fresh.path())
        .assert_code(0)
        .assert_log("restore: hit");
    tree::assert_same(
        &tree::snapshot(&ws.path().join("pkg.mod")),
        &tree::snapshot(&fresh.path().join("pkg.mod")),
    );
}

/// A drone-cache pipeline, unchanged: its setting names and env aliases.
#[test]
fn drone_cache_settings_work_unchanged() {
    let ws = workspace();
    tree::rich(ws.path());
    fs::write(ws.path().join("go.sum"), "example.com/lib v1.0.0 h1:abc=\n").unwrap();
    let backend = Backend::filesystem();
    let cache_root = backend
        .setting("PLUGIN_FILESYSTEM_CACHE_ROOT")
        .unwrap()
        .to_string();
    let workspace_path = ws.path().display().to_string();
    let run = |mode: &str| {
        let env = [
            (mode, "true"),
            ("PLUGIN_BACKEND", "filesystem"),
            ("FILESYSTEM_CACHE_ROOT", cache_root.as_str()),
            ("PLUGIN_MOUNT", "pkg.mod"),
            (
                "PLUGIN_CACHE_KEY",
                "{{ .Repo.Name }}_{{ checksum \"go.sum\" }}_{{ arch }}_{{ os }}",
            ),
            ("PLUGIN_ARCHIVE_FORMAT", "gzip"),
            ("EXIT_CODE", "true"),
            ("DRONE_REPO", "octo/hello"),
            ("DRONE_REPO_NAME", "hello"),
            ("DRONE_COMMIT_BRANCH", "main"),
            ("DRONE_WORKSPACE", workspace_path.as_str()),
        ];
        larder(&[], &env, ws.path())
    };
    run("PLUGIN_REBUILD").assert_code(0);
    // checksum is the MD5 of the file, as in drone-cache.
    let md5 = Command::new("md5sum")
        .arg(ws.path().join("go.sum"))
        .output()
        .unwrap();
    let md5 = String::from_utf8_lossy(&md5.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let expected = format!("{cache_root}/octo/hello/hello_{md5}_{arch}_linux.chunked");
    assert!(fs::metadata(&expected).is_ok(), "{expected} missing");
    tree::remove(&ws.path().join("pkg.mod"));
    run("PLUGIN_RESTORE")
        .assert_code(0)
        .assert_log("restore: hit");
    assert!(ws.path().join("pkg.mod/bin/tool").is_file());
}

/// Woodpecker: CI_* metadata names the entry, CI_WORKSPACE is the workspace.
#[test]
fn woodpecker_metadata_is_read() {
    let ws = workspace();
    tree::rich(ws.path());
    let backend = Backend::filesystem();
    let cache_root = backend.setting("PLUGIN_FILESYSTEM_CACHE_ROOT").unwrap();
    let elsewhere = workspace();
    let env = [
        ("PLUGIN_REBUILD", "true"),
        ("PLUGIN_BACKEND", "filesystem"),
        ("PLUGIN_FILESYSTEM_CACHE_ROOT", cache_root),
        ("PLUGIN_MOUNT", "pkg.mod"),
        ("PLUGIN_EXIT_CODE", "true"),
        ("CI", "woodpecker"),
        ("CI_REPO", "team/app"),
        ("CI_COMMIT_BRANCH", "feature/login"),
        ("CI_WORKSPACE", &ws.path().display().to_string()),
    ];
    // Run from another directory: the workspace comes from CI_WORKSPACE.
    larder(&[], &env, elsewhere.path()).assert_code(0);
    assert!(
        fs::metadata(format!("{cache_root}/team/app/feature-login.chunked")).is_ok(),
        "default key is the branch, made safe"
    );
}

#[test]
fn typos_in_settings_are_warned_about() {
    let ws = workspace();
    let backend = Backend::filesystem();
    // A clear typo of a setting stops the step (it would run with a default
    // nobody chose); a drone-cache setting larder lacks is a warning.
    Step::new(ws.path(), &backend, &unique_root("typo"))
        .set("PLUGIN_CACHE_KEYS", "x")
        .restore()
        .assert_code(2)
        .assert_log("setting 'cache_keys' (PLUGIN_CACHE_KEYS) is not a larder setting; did you mean cache_key?");
    Step::new(ws.path(), &backend, &unique_root("typo"))
        .set("PLUGIN_S3_BUCKET_PUBLIC", "true")
        .restore()
        .assert_code(0)
        .assert_log("PLUGIN_S3_BUCKET_PUBLIC is a drone-cache setting larder does not support");
}

#[test]
fn wrong_s3_credentials_say_so_without_the_secret() {
    let backend = Backend::s3();
    let ws = workspace();
    tree::rich(ws.path());
    let run = Step::new(ws.path(), &backend, &unique_root("creds"))
        .set("PLUGIN_SECRET_KEY", "definitely-wrong-secret")
        .rebuild();
    run.assert_code(1).assert_log("credentials were rejected");
    assert!(
        !run.log().contains("definitely-wrong-secret"),
        "{}",
        run.log()
    );
}

/// A server that accepts connections and never answers: the step must give
/// up within the operation timeout (plus retries inside it), not hang.
#[test]
fn a_stalled_endpoint_fails_within_the_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            let mut s = stream;
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            held.push(s); // keep it open, say nothing
        }
    });
    let ws = workspace();
    let started = Instant::now();
    let run = larder(
        &[],
        &[
            ("PLUGIN_RESTORE", "true"),
            ("PLUGIN_MOUNT", "pkg.mod"),
            ("PLUGIN_BUCKET", "ci-cache"),
            ("PLUGIN_ENDPOINT", &format!("http://127.0.0.1:{port}")),
            ("PLUGIN_PATH_STYLE", "true"),
            ("PLUGIN_ACCESS_KEY", "AKID"),
            ("PLUGIN_SECRET_KEY", "secret"),
            ("PLUGIN_BACKEND_OPERATION_TIMEOUT", "2s"),
            ("PLUGIN_EXIT_CODE", "true"),
            ("DRONE_REPO", "o/r"),
            ("DRONE_COMMIT_BRANCH", "main"),
        ],
        ws.path(),
    );
    let elapsed = started.elapsed();
    run.assert_code(1).assert_log("backend_operation_timeout");
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
}

/// SIGTERM (the runner cancelling the step) aborts the upload: no entry, no
/// claim, no partial object is left behind.
#[test]
fn cancelling_a_rebuild_leaves_nothing_behind() {
    let formats = [
        ("archive", Backend::filesystem()),
        ("archive", Backend::s3()),
    ];
    let chunked = [
        ("chunked", Backend::filesystem()),
        ("chunked", Backend::s3()),
    ];
    for (format, backend) in formats.into_iter().chain(chunked) {
        let root = unique_root("cancel");
        let ws = workspace();
        fs::create_dir(ws.path().join("pkg.mod")).unwrap();
        for i in 0..12 {
            fs::write(
                ws.path().join(format!("pkg.mod/blob{i}")),
                tree::noise(i, 24 << 20),
            )
            .unwrap();
        }
        let child = Step::new(ws.path(), &backend, &root)
            .set("PLUGIN_COMPRESSION_LEVEL", "9")
            .set("PLUGIN_ENTRY_FORMAT", format)
            .command("rebuild")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(400));
        let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let output = child.wait_with_output().unwrap();
        let run = to_run(output);
        assert_ne!(run.code, 0, "{}", run.log());
        run.assert_log("stop signal");
        // An archive's upload is aborted whole. A chunked rebuild publishes
        // no index; the packs it had stored stay for flush to remove.
        let left: Vec<String> = backend
            .list(&root)
            .into_iter()
            .filter(|name| format == "archive" || !name.contains("/packs/"))
            .collect();
        assert!(left.is_empty(), "{} {format}: left {left:?}", backend.name);
        if backend.name == "filesystem" {
            let dir = backend.setting("PLUGIN_FILESYSTEM_CACHE_ROOT").unwrap();
            let leftovers: Vec<_> = walkdir::WalkDir::new(dir)
                .into_iter()
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_file())
                .map(|e| e.path().display().to_string())
                .filter(|path| {
                    let whole_pack = path.ends_with(".pack") || path.ends_with(".catalog");
                    format == "archive" || !(path.contains("/packs/") && whole_pack)
                })
                .collect();
            assert!(
                leftovers.is_empty(),
                "{format}: partial files: {leftovers:?}"
            );
        }
    }
}

/// A key template nested 20,000 parentheses deep is a configuration error
/// naming the setting, not a stack overflow (exit 134).
#[test]
fn deeply_nested_key_is_a_configuration_error() {
    let ws = workspace();
    let deep = format!(
        "{{{{ {}.Commit.Branch{} }}}}",
        "(".repeat(20_000),
        ")".repeat(20_000)
    );
    let backend = Backend::filesystem();
    let run = Step::new(ws.path(), &backend, "r")
        .set("PLUGIN_CACHE_KEY", &deep)
        .restore();
    run.assert_code(2)
        .assert_log("cache_key")
        .assert_log("nested more than 32 deep");
}

/// Drone passes `secret-key:` as PLUGIN_SECRET-KEY: still a secret, scrubbed
/// from a configuration error that would otherwise show it.
#[test]
fn dashed_secret_names_are_scrubbed_too() {
    let ws = workspace();
    let run = larder(
        &[],
        &[
            ("PLUGIN_RESTORE", "true"),
            ("PLUGIN_BUCKET", "b"),
            ("PLUGIN_ACCESS-KEY", "AKID"),
            ("PLUGIN_SECRET-KEY", "hunter2hunter2"),
            ("PLUGIN_ENDPOINT", "ftp://hunter2hunter2"),
            ("DRONE_REPO", "o/r"),
        ],
        ws.path(),
    );
    run.assert_code(2).assert_log("setting endpoint");
    assert!(!run.log().contains("hunter2hunter2"), "{}", run.log());
}

/// A secret given on the command line, even where clap refuses it (after
/// `--`), is scrubbed from the error. Found by the `settings` fuzz target.
#[test]
fn secrets_on_the_command_line_are_scrubbed_from_errors() {
    let ws = workspace();
    for args in [
        &["--restore", "--", "--secret-key=hunter2hunter2"][..],
        &["--restore", "--bogus", "--secret-key", "hunter2hunter2"][..],
    ] {
        let run = larder(args, &[("DRONE_REPO", "o/r")], ws.path());
        run.assert_code(2);
        assert!(
            !run.log().contains("hunter2hunter2"),
            "{args:?}: {}",
            run.log()
        );
    }
}
