//! Swapping drone-cache's image for larder's: the first run restores what
//! drone-cache stored, a static key refreshes when its tree changed, and
//! what drone-cache tolerated does not break the build.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::tree::{self, assert_same, snapshot};
use common::{Backend, Step, unique_root, workspace};

macro_rules! suite {
    ($backend:ident) => {
        mod $backend {
            use super::*;

            fn backend() -> Backend {
                Backend::$backend()
            }

            #[test]
            fn drone_cache_entries_are_restored_on_the_first_run() {
                super::drone_cache_entries_are_restored_on_the_first_run(&backend());
            }
            #[test]
            fn the_forks_entries_are_restored_on_the_first_run() {
                super::the_forks_entries_are_restored_on_the_first_run(&backend());
            }
            #[test]
            fn a_static_key_refreshes_when_its_tree_changes() {
                super::a_static_key_refreshes_when_its_tree_changes(&backend());
            }
        }
    };
}

suite!(filesystem);
suite!(s3);
suite!(sftp);

/// A Go-module-cache-like tree as drone-cache stored it: files, a
/// read-only directory, a symlink (drone-cache copied hard links, so none).
fn module_cache(ws: &Path) {
    let m = ws.join("pkg.mod");
    fs::create_dir_all(m.join("example.com/lib@v1.0.0/sub")).unwrap();
    fs::create_dir_all(m.join("cache/download/example.com/lib/@v")).unwrap();
    fs::write(
        m.join("example.com/lib@v1.0.0/go.mod"),
        "module example.com/lib\n",
    )
    .unwrap();
    fs::write(
        m.join("example.com/lib@v1.0.0/sub/a.go"),
        tree::noise(1, 40_000),
    )
    .unwrap();
    fs::write(
        m.join("cache/download/example.com/lib/@v/v1.0.0.zip"),
        tree::noise(2, 300_000),
    )
    .unwrap();
    std::os::unix::fs::symlink("../example.com", m.join("cache/link")).unwrap();
    fs::set_permissions(
        m.join("example.com/lib@v1.0.0"),
        fs::Permissions::from_mode(0o555),
    )
    .unwrap();
}

/// An archive of `ws/pkg.mod` as drone-cache v1.4 wrote one: GNU tar in
/// the layout Go's archive/tar gives with drone-cache's settings (absolute
/// names, PAX headers with times, hard links as copies), compressed as
/// `format` says (drone-cache: gzip level 6, zstd, or none).
fn drone_cache_archive(ws: &Path, format: &str) -> Vec<u8> {
    let tar = Command::new("tar")
        .args([
            "--format=posix",
            "--pax-option=exthdr.name=%d/PaxHeaders.0/%f",
            "--sort=name",
            "--hard-dereference",
            "--numeric-owner",
            "-b1",
            "-cPf",
            "-",
        ])
        .arg(ws.join("pkg.mod"))
        .output()
        .expect("GNU tar");
    assert!(
        tar.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&tar.stderr)
    );
    let compress = |program: &str, args: &[&str]| {
        use std::io::Write;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        // Fed from another thread: the output pipe fills while we write.
        let mut stdin = child.stdin.take().unwrap();
        let input = tar.stdout.clone();
        let feeder = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        assert!(out.status.success(), "{program} failed");
        out.stdout
    };
    match format {
        "gzip" => compress("gzip", &["-6", "-n"]),
        "zstd" => compress("zstd", &["-1", "-q", "-c"]),
        _ => tar.stdout,
    }
}

/// The first restore after the switch finds drone-cache's object for the
/// mount (`<remote_root>/<key>/pkg.mod`), restores it, and the rebuild then
/// stores a larder entry, which the next restore uses.
fn drone_cache_entries_are_restored_on_the_first_run(backend: &Backend) {
    for format in ["tar", "gzip", "zstd"] {
        let root = unique_root("drone-cache");
        let ws = workspace();
        module_cache(ws.path());
        let expected = snapshot(&ws.path().join("pkg.mod"));
        backend.put(
            &format!("{root}/gomod-main/pkg.mod"),
            drone_cache_archive(ws.path(), format),
        );
        tree::remove(&ws.path().join("pkg.mod"));
        let run = Step::new(ws.path(), backend, &root).restore();
        run.assert_code(0)
            .assert_log("restoring drone-cache's entry")
            .assert_log("partial hit for key 'gomod-main'");
        assert_same(&expected, &snapshot(&ws.path().join("pkg.mod")));
        Step::new(ws.path(), backend, &root)
            .rebuild()
            .assert_code(0)
            .assert_log("rebuild: stored key 'gomod-main'");
        tree::remove(&ws.path().join("pkg.mod"));
        Step::new(ws.path(), backend, &root)
            .restore()
            .assert_code(0)
            .assert_log("restore: hit for key 'gomod-main'");
        println!("{format}: ok");
    }
}

/// The fork (drone-plugins/drone-meltwater-cache) stored `<key>/<mount>` at
/// the bucket's root; with no cache_key, drone-cache's key was the md5 of
/// the branch.
fn the_forks_entries_are_restored_on_the_first_run(backend: &Backend) {
    let root = unique_root("fork");
    let branch = format!("fork-{}", uuid::Uuid::new_v4().simple());
    let ws = workspace();
    module_cache(ws.path());
    let expected = snapshot(&ws.path().join("pkg.mod"));
    use md5::Digest;
    let key: String = md5::Md5::digest(branch.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    backend.put(
        &format!("{key}/pkg.mod"),
        drone_cache_archive(ws.path(), "gzip"),
    );
    tree::remove(&ws.path().join("pkg.mod"));
    Step::new(ws.path(), backend, &root)
        .unset("PLUGIN_CACHE_KEY")
        .set("DRONE_COMMIT_BRANCH", &branch)
        .restore()
        .assert_code(0)
        .assert_log("restoring drone-cache's entry");
    assert_same(&expected, &snapshot(&ws.path().join("pkg.mod")));
}

/// drone-cache's docs use a static key (`cache_key: volume`); with
/// override unset, larder uploads again only when the tree changed.
fn a_static_key_refreshes_when_its_tree_changes(backend: &Backend) {
    let root = unique_root("static-key");
    let ws = workspace();
    module_cache(ws.path());
    let step = || Step::new(ws.path(), backend, &root).set("PLUGIN_CACHE_KEY", "volume");
    step()
        .rebuild()
        .assert_code(0)
        .assert_log("stored key 'volume'");
    step()
        .rebuild()
        .assert_code(0)
        .assert_log("the mounts have not changed since; nothing was uploaded");
    fs::write(
        ws.path().join("pkg.mod/cache/download/new.zip"),
        "a new module",
    )
    .unwrap();
    step()
        .rebuild()
        .assert_code(0)
        .assert_log("but the mounts changed since; replacing it")
        .assert_log("stored key 'volume'");
    let fresh = workspace();
    Step::new(fresh.path(), backend, &root)
        .set("PLUGIN_CACHE_KEY", "volume")
        .restore()
        .assert_code(0);
    assert!(fresh.path().join("pkg.mod/cache/download/new.zip").exists());
    // override: false keeps the stored entry whatever changed.
    fs::write(
        ws.path().join("pkg.mod/cache/download/newer.zip"),
        "another",
    )
    .unwrap();
    step()
        .set("PLUGIN_OVERRIDE", "false")
        .rebuild()
        .assert_code(0)
        .assert_log("override is false");
}

/// What drone-cache tolerated does not fail the build: a key whose lockfile
/// is missing is a cache failure (a warning, exit 0; exit 1 with
/// exit_code), fields it rendered as empty render as empty, and its
/// compression levels are read.
#[test]
fn what_drone_cache_tolerated_does_not_break_the_build() {
    let backend = Backend::filesystem();
    let root = unique_root("tolerated");
    let ws = workspace();
    module_cache(ws.path());
    let missing = Step::new(ws.path(), &backend, &root)
        .set("PLUGIN_CACHE_KEY", "gomod-{{ checksum \"go.sum\" }}")
        .set("PLUGIN_EXIT_CODE", "false")
        .set("PLUGIN_RESULT_FILE", "result.json");
    let run = missing.restore();
    run.assert_code(0)
        .assert_log("cannot be rendered")
        .assert_log("go.sum")
        .assert_log("exit_code is false");
    let result: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(ws.path().join("result.json")).unwrap()).unwrap();
    assert_eq!(result["result"], "failed", "{result}");
    assert!(
        result["error"].as_str().unwrap().contains("go.sum"),
        "{result}"
    );
    missing
        .clone_with("PLUGIN_EXIT_CODE", "true")
        .restore()
        .assert_code(1)
        .assert_log("cannot be rendered");

    Step::new(ws.path(), &backend, &root)
        .set(
            "PLUGIN_CACHE_KEY",
            "k-{{ .Repo.Avatar }}-{{ .Repo.Trusted }}",
        )
        .set("PLUGIN_ARCHIVE_FORMAT", "zstd")
        .set("PLUGIN_COMPRESSION_LEVEL", "22")
        .rebuild()
        .assert_code(0)
        .assert_log("renders as ''")
        .assert_log("compression_level 22 is read as zstd 19")
        .assert_log("stored key 'k--false'");
    Step::new(ws.path(), &backend, &root)
        .set("PLUGIN_CACHE_KEY", "level-zero")
        .set("PLUGIN_COMPRESSION_LEVEL", "0")
        .rebuild()
        .assert_code(0)
        .assert_log("stored key 'level-zero'");
}

/// A setting that is clearly a typo stops the step with the did-you-mean
/// hint (also when it is the mode); a setting only drone-cache knew warns.
#[test]
fn typos_stop_the_step_and_drone_cache_leftovers_warn() {
    let backend = Backend::filesystem();
    let ws = workspace();
    for (typo, meant) in [
        ("PLUGIN_RESTOR", "restore"),
        ("PLUGIN_CAHCE_KEY", "cache_key"),
    ] {
        let run = Step::new(ws.path(), &backend, "r")
            .set(typo, "true")
            .run("rebuild");
        run.assert_code(2)
            .assert_log(&format!("did you mean {meant}?"));
    }
    // The mode itself misspelt: no mode is set at all.
    let mut only_typo = Step::new(ws.path(), &backend, "r")
        .set("PLUGIN_RESTOR", "true")
        .command("restore");
    only_typo.env_remove("PLUGIN_RESTORE");
    let run = common::to_run(only_typo.output().unwrap());
    run.assert_code(2).assert_log("did you mean restore?");
    let run = Step::new(ws.path(), &backend, "r")
        .set("PLUGIN_PRESERVE_METADATA", "true")
        .restore();
    run.assert_code(0)
        .assert_log("drone-cache's setting preserve_metadata");
}
