//! Real clients check larder's output: GNU tar (with gzip and zstd) extracts
//! our entries exactly, larder restores archives GNU tar made, and the Go
//! toolchain builds offline from a module cache that went through larder.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::golang::{self, module_proxy};
use common::tree::{self, assert_same, snapshot};
use common::{Backend, Step, unique_root, workspace};

#[track_caller]
fn sh(cmd: &mut Command) -> String {
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        output.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.stderr.is_empty() || cmd.get_program() == "go",
        "{cmd:?} warned:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stored_file(backend: &Backend, root: &str, ext: &str) -> std::path::PathBuf {
    let cache = backend.setting("PLUGIN_FILESYSTEM_CACHE_ROOT").unwrap();
    Path::new(cache).join(format!("{root}/gomod-main.{ext}"))
}

#[test]
fn gnu_tar_extracts_our_entries_exactly() {
    let backend = Backend::filesystem();
    for (format, ext, check) in [
        ("gzip", "tar.gz", ["gzip", "-t"]),
        ("zstd", "tar.zst", ["zstd", "-tq"]),
        ("tar", "tar", ["tar", "-tf"]),
    ] {
        let root = unique_root(format);
        let ws = workspace();
        tree::rich(ws.path());
        let before = snapshot(&ws.path().join("pkg.mod"));
        Step::new(ws.path(), &backend, &root)
            .set("PLUGIN_ARCHIVE_FORMAT", format)
            .rebuild()
            .assert_code(0);
        let file = stored_file(&backend, &root, ext);
        // The compressor's own tool accepts the stream.
        sh(Command::new(check[0]).arg(check[1]).arg(&file));
        // GNU tar extracts it (detecting the compression itself) without a
        // warning, exactly when it sets directory times at the end (see
        // compressed_files_spread_through_the_stream_extract_exactly).
        let out = workspace();
        sh(Command::new("tar")
            .arg("--delay-directory-restore")
            .arg("-xf")
            .arg(&file)
            .arg("-C")
            .arg(out.path()));
        assert_same(&before, &snapshot(&out.path().join("pkg.mod")));
        // And one entry can be pulled out by hand.
        let one = workspace();
        sh(Command::new("tar")
            .arg("-xf")
            .arg(&file)
            .arg("-C")
            .arg(one.path())
            .arg("pkg.mod/bin/tool"));
        assert_eq!(
            fs::read(one.path().join("pkg.mod/bin/tool")).unwrap(),
            b"#!/bin/sh\necho tool\n"
        );
    }
}

#[test]
fn larder_restores_what_gnu_tar_wrote() {
    let backend = Backend::filesystem();
    for (flag, ext) in [
        ("-z", "tar.gz"),
        ("--zstd", "tar.zst"),
        ("--format=gnu", "tar"),
    ] {
        let root = unique_root("gnu");
        let ws = workspace();
        tree::rich(ws.path());
        let before = snapshot(&ws.path().join("pkg.mod"));
        let file = stored_file(&backend, &root, ext);
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        let mut tar = Command::new("tar");
        tar.arg("-c").arg(flag);
        if flag != "--format=gnu" {
            tar.arg("--posix");
        }
        sh(tar
            .arg("-f")
            .arg(&file)
            .arg("-C")
            .arg(ws.path())
            .arg("pkg.mod"));
        let fresh = workspace();
        Step::new(fresh.path(), &backend, &root)
            .restore()
            .assert_code(0)
            .assert_log("restore: hit");
        let after = snapshot(&fresh.path().join("pkg.mod"));
        // GNU's own format stores whole seconds only; compare what it keeps.
        let trim = |s: &tree::Snapshot| -> tree::Snapshot {
            s.iter()
                .map(|(p, n)| {
                    let mut n = n.clone();
                    if flag == "--format=gnu" {
                        n.mtime.1 = 0;
                    }
                    (p.clone(), n)
                })
                .collect()
        };
        assert_same(&trim(&before), &trim(&after));
        // Without a manifest, larder cannot know what the archive's mounts
        // are: restoring without `mount` says so instead of guessing.
        let blind = workspace();
        Step::new(blind.path(), &backend, &root)
            .unset("PLUGIN_MOUNT")
            .restore()
            .assert_code(1)
            .assert_log("not written by larder")
            .assert_log("list the directories to restore in mount");
    }
}

fn go(ws: &Path, proxy: &str, args: &[&str]) -> String {
    sh(golang::go_command(ws, proxy).args(args))
}

/// The issue's own pipeline: GOMODCACHE in the workspace, cached by larder,
/// restored into a fresh workspace, then `go build` with the network off.
#[test]
fn go_builds_offline_from_a_restored_module_cache() {
    assert!(
        Command::new("go").arg("version").output().is_ok(),
        "the Go toolchain is missing: run scripts/ci-services.sh install (it installs golang-go)"
    );
    let backend = Backend::filesystem();
    let root = unique_root("go");
    let proxy_dir = workspace();
    module_proxy(proxy_dir.path());
    let proxy = format!("file://{}", proxy_dir.path().display());

    let app = golang::write_app;
    let first = workspace();
    app(first.path());
    go(first.path(), &proxy, &["mod", "download", "all"]);
    go(first.path(), &proxy, &["build", "-o", "app", "."]);
    let module = first.path().join("pkg.mod/example.com/greet@v1.0.0");
    assert!(module.join("greet.go").is_file(), "go populated GOMODCACHE");
    let step = |ws: &Path| {
        Step::new(ws, &backend, &root).set("PLUGIN_CACHE_KEY", "gomod-{{ checksum \"go.sum\" }}")
    };
    step(first.path()).rebuild().assert_code(0);

    // Next pipeline run: a fresh clone, no network for Go.
    let second = workspace();
    app(second.path());
    fs::copy(first.path().join("go.sum"), second.path().join("go.sum")).unwrap();
    step(second.path())
        .restore()
        .assert_code(0)
        .assert_log("restore: hit");
    let restored = second.path().join("pkg.mod/example.com/greet@v1.0.0");
    let mode = |p: &Path| snapshot(p)[Path::new("")].mode;
    assert_eq!(mode(&restored), 0o555, "module directories stay read-only");
    assert_eq!(
        mode(&restored.join("greet.go")),
        0o444,
        "module files stay read-only"
    );
    assert!(go(second.path(), "off", &["mod", "verify"]).contains("all modules verified"));
    go(second.path(), "off", &["build", "-o", "app", "."]);
    let out = sh(&mut Command::new(second.path().join("app")));
    assert_eq!(out.trim(), "hello from the cache");

    // Restoring again over the read-only copy works too.
    step(second.path())
        .restore()
        .assert_code(0)
        .assert_log("pkg.mod (replaced)");
    go(second.path(), "off", &["build", "-o", "app", "."]);
}

/// Already-compressed files are spread among the others (by hash, see
/// src/archive/order.rs), so some come before their own directory's entry,
/// but never inside a read-only directory's run of entries: GNU tar extracts
/// the stream even as an unprivileged user (and exactly with
/// `--delay-directory-restore`), and larder restores it exactly.
#[test]
fn compressed_files_spread_through_the_stream_extract_exactly() {
    let backend = Backend::filesystem();
    let root = unique_root("spread");
    let ws = workspace();
    let m = ws.path().join("pkg.mod");
    let mut read_only = vec!["ro".to_string()];
    // Sources of 64 KiB or more: files are placed in proportion to bytes.
    let source = "package a\n".repeat(7000);
    for i in 0..40 {
        let dir = m.join(format!("a{i:02}"));
        tree::write(&dir.join("src.go"), source.as_bytes());
        if i % 4 == 0 {
            // A Go-style read-only module directory with more than one entry.
            tree::write(&dir.join("z.go"), b"package a\n");
            read_only.push(format!("a{i:02}"));
        }
    }
    for i in 0..12u64 {
        let zip = m.join(format!("cache/download/m{i}/@v/v1.0.0.zip"));
        tree::write(&zip, &tree::noise(i, 40_000));
    }
    tree::write(&m.join("ro/kept.zip"), &tree::noise(99, 40_000));
    tree::write(&m.join("ro/more.go"), b"package ro\n");
    for dir in &read_only {
        tree::chmod(&m.join(dir), 0o555);
    }
    let before = snapshot(&m);
    Step::new(ws.path(), &backend, &root)
        .set("PLUGIN_ARCHIVE_FORMAT", "zstd")
        .rebuild()
        .assert_code(0);
    let file = stored_file(&backend, &root, "tar.zst");
    let listing = sh(Command::new("tar").arg("-tf").arg(&file));
    let names: Vec<&str> = listing.lines().collect();
    let at = |name: &str| names.iter().position(|n| *n == name).unwrap();
    let zips: Vec<usize> = (0..names.len())
        .filter(|&i| names[i].starts_with("pkg.mod/cache/") && names[i].ends_with(".zip"))
        .collect();
    assert_eq!(zips.len(), 12, "{listing}");
    assert!(
        zips[0] < at("pkg.mod/cache/"),
        "no zip before its directories:\n{listing}"
    );
    let sources_between = (zips[0]..zips[11])
        .filter(|&i| names[i].ends_with(".go"))
        .count();
    assert!(
        sources_between >= 10,
        "zips not spread among the sources:\n{listing}"
    );
    // A read-only directory's entries come together, and a file in one
    // stays where the walk puts it.
    for dir in &read_only {
        let prefix = format!("pkg.mod/{dir}/");
        let inside: Vec<usize> = (0..names.len())
            .filter(|&i| names[i].starts_with(&prefix))
            .collect();
        assert_eq!(inside.len(), 3, "{listing}");
        assert_eq!(inside[2] - inside[0], 2, "{dir} interrupted:\n{listing}");
    }
    assert_eq!(at("pkg.mod/ro/kept.zip"), at("pkg.mod/ro/") + 1);

    // GNU tar, as an unprivileged user: it finishes each directory (time,
    // mode) when the stream leaves it, so only directory times can differ.
    let gnu = workspace();
    let copy = gnu.path().join("entry.tar.zst");
    fs::copy(&file, &copy).unwrap();
    tree::give_to_nobody(gnu.path());
    let mut tar = Command::new(if common::is_root() { "setpriv" } else { "tar" });
    if common::is_root() {
        tar.args(["--reuid=65534", "--regid=65534", "--clear-groups", "tar"]);
    }
    sh(tar.arg("-xf").arg(&copy).arg("-C").arg(gnu.path()));
    let dir_times_cleared = |s: &tree::Snapshot| -> tree::Snapshot {
        s.iter()
            .map(|(p, n)| {
                let mut n = n.clone();
                if n.kind == 'd' {
                    n.mtime = (0, 0);
                }
                n.uid = 0;
                n.gid = 0;
                (p.clone(), n)
            })
            .collect()
    };
    let extracted = snapshot(&gnu.path().join("pkg.mod"));
    assert_same(&dir_times_cleared(&before), &dir_times_cleared(&extracted));
    // With --delay-directory-restore, exactly.
    let delayed = workspace();
    sh(Command::new("tar")
        .arg("--delay-directory-restore")
        .arg("-xf")
        .arg(&file)
        .arg("-C")
        .arg(delayed.path()));
    assert_same(&before, &snapshot(&delayed.path().join("pkg.mod")));
    let fresh = workspace();
    Step::new(fresh.path(), &backend, &root)
        .restore()
        .assert_code(0)
        .assert_log("restore: hit");
    assert_same(&before, &snapshot(&fresh.path().join("pkg.mod")));
}
