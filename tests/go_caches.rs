//! Go's caches with the real Go toolchain: a restored build cache compiles
//! nothing that did not change, the trimmed entry stays bounded across
//! builds of changing code, a toolchain change misses, and the module
//! cache's `./...` trap with the fixes docs/go.md gives.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use common::{Backend, Step, unique_root};

/// A module with a few packages (standard library only, so no network):
/// `big` is generated large enough that its compiled form is most of what a
/// build adds to the cache; `version` changes the constant in `big`.
fn write_project(ws: &Path, version: u32) {
    fs::create_dir_all(ws.join("big")).unwrap();
    fs::create_dir_all(ws.join("util")).unwrap();
    fs::write(ws.join("go.mod"), "module example.com/proj\n\ngo 1.19\n").unwrap();
    let mut big = format!("package big\n\nconst Version = {version}\n\n");
    for n in 0..400 {
        big.push_str(&format!(
            "func F{n}(x int) int {{\n\tif x > {n} {{\n\t\treturn x*{n} + Version\n\t}}\n\treturn x - {n}\n}}\n\n"
        ));
    }
    fs::write(ws.join("big/big.go"), big).unwrap();
    fs::write(
        ws.join("util/util.go"),
        "package util\n\nimport \"strings\"\n\nfunc Shout(s string) string { return strings.ToUpper(s) }\n",
    )
    .unwrap();
    fs::write(
        ws.join("main.go"),
        "package main\n\nimport (\n\t\"encoding/json\"\n\t\"fmt\"\n\n\t\"example.com/proj/big\"\n\t\"example.com/proj/util\"\n)\n\n\
         func main() {\n\tb, _ := json.Marshal(big.F1(3))\n\tfmt.Println(util.Shout(string(b)))\n}\n",
    )
    .unwrap();
}

fn go(ws: &Path, args: &[&str]) -> Output {
    let output = common::golang::go_command(ws, "off")
        .args(args)
        .output()
        .expect("the Go toolchain runs (scripts/ci-services.sh install installs golang-go)");
    assert!(
        output.status.success(),
        "go {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `go build -x`, and the packages it compiled (from its `compile` commands).
fn build(ws: &Path) -> (Vec<String>, f64) {
    let started = Instant::now();
    let output = go(ws, &["build", "-x", "-o", "app", "."]);
    let seconds = started.elapsed().as_secs_f64();
    let log = String::from_utf8_lossy(&output.stderr);
    let compiled = log
        .lines()
        .filter(|l| l.contains("/compile ") && l.contains(" -p "))
        .filter_map(|l| {
            l.split(" -p ")
                .nth(1)?
                .split(' ')
                .next()
                .map(str::to_string)
        })
        .collect();
    (compiled, seconds)
}

/// The same workspace path every run (Go's cache keys include it), empty
/// as a fresh pipeline run's.
fn fresh(ws: &Path) {
    if ws.exists() {
        let _ = Command::new("chmod").arg("-R").arg("u+w").arg(ws).status();
        fs::remove_dir_all(ws).unwrap();
    }
    fs::create_dir_all(ws).unwrap();
}

fn step<'a>(ws: &Path, backend: &'a Backend, root: &str, key: &str) -> Step<'a> {
    Step::new(ws, backend, root)
        .set("PLUGIN_MOUNT", ".gocache")
        .set("PLUGIN_CACHE_KEY", key)
        .set("PLUGIN_RESTORE_KEYS", "gobuild-")
}

#[test]
fn a_restored_build_cache_compiles_nothing_that_did_not_change() {
    let backend = Backend::filesystem();
    let root = unique_root("gocache");
    let base = tempfile::tempdir().unwrap();
    let ws = base.path().join("src");
    fresh(&ws);
    write_project(&ws, 1);
    let (cold, cold_s) = build(&ws);
    let mut cold_sorted = cold.clone();
    cold_sorted.sort();
    assert_eq!(
        cold_sorted,
        ["example.com/proj/big", "example.com/proj/util", "main"]
    );
    step(&ws, &backend, &root, "gobuild-1")
        .rebuild()
        .assert_code(0)
        .assert_log("is a Go build cache, stored whole");

    fresh(&ws);
    write_project(&ws, 1);
    step(&ws, &backend, &root, "gobuild-1")
        .restore()
        .assert_code(0)
        .assert_log(".gocache is a Go build cache");
    let (warm, warm_s) = build(&ws);
    assert!(warm.is_empty(), "the warm build compiled {warm:?}");
    eprintln!(
        "go build: cold {cold_s:.2} s ({} packages compiled), warm {warm_s:.2} s (none)",
        cold.len()
    );

    // Stored trimmed; the same build once more uses the same entries, so
    // its tree is the same and nothing is uploaded under the key.
    step(&ws, &backend, &root, "gobuild-1")
        .rebuild()
        .assert_code(0)
        .assert_log("this build did not use");
    fresh(&ws);
    write_project(&ws, 1);
    step(&ws, &backend, &root, "gobuild-1")
        .restore()
        .assert_code(0);
    build(&ws);
    step(&ws, &backend, &root, "gobuild-1")
        .rebuild()
        .assert_code(0)
        .assert_log("removed the 0 entries")
        .assert_log("have not changed");

    // A change compiles only what depends on it.
    fresh(&ws);
    write_project(&ws, 2);
    step(&ws, &backend, &root, "gobuild-2")
        .restore()
        .assert_code(0);
    let (changed, _) = build(&ws);
    let mut changed = changed;
    changed.sort();
    assert_eq!(changed, ["example.com/proj/big", "main"]);
}

/// Stores ten builds of changing code, each restoring the last; returns
/// the stored entry's size after each.
fn ten_builds(trim: bool) -> Vec<u64> {
    let backend = Backend::filesystem();
    let root = unique_root(if trim { "gotrim" } else { "gonotrim" });
    let base = tempfile::tempdir().unwrap();
    let ws = base.path().join("src");
    let mut sizes = Vec::new();
    for n in 1..=10u32 {
        fresh(&ws);
        write_project(&ws, n);
        let key = format!("gobuild-{n:02}");
        let trim = trim.to_string();
        step(&ws, &backend, &root, &key)
            .set("PLUGIN_TRIM_GO_BUILD_CACHE", &trim)
            .restore()
            .assert_code(0);
        build(&ws);
        step(&ws, &backend, &root, &key)
            .set("PLUGIN_TRIM_GO_BUILD_CACHE", &trim)
            .rebuild()
            .assert_code(0);
        let object = backend
            .list(&root)
            .into_iter()
            .find(|o| o.contains(&key))
            .unwrap();
        sizes.push(backend.get(&object).unwrap().len() as u64);
    }
    sizes
}

#[test]
fn the_trimmed_build_cache_stays_bounded_across_builds() {
    let trimmed = ten_builds(true);
    let whole = ten_builds(false);
    eprintln!("entry sizes, trimmed: {trimmed:?}\nentry sizes, not trimmed: {whole:?}");
    // Trimmed: each entry holds what its build used, about the same each time.
    let (first, last) = (trimmed[1], trimmed[9]);
    assert!(last * 10 <= first * 11, "trimmed entries grew: {trimmed:?}");
    // Not trimmed, every old version of `big` stays.
    assert!(
        whole[9] > whole[1] * 12 / 10,
        "untrimmed entries did not grow: {whole:?}"
    );
    assert!(last < whole[9]);
}

#[test]
fn a_go_toolchain_change_does_not_restore_the_old_build_cache() {
    let backend = Backend::filesystem();
    let root = unique_root("gover");
    let base = tempfile::tempdir().unwrap();
    let ws = base.path().join("src");
    let key = "gobuild-{{ os }}-{{ arch }}-{{ goVersion \"go.mod\" }}";
    let step = |ws: &Path| {
        Step::new(ws, &backend, &root)
            .set("PLUGIN_MOUNT", ".gocache")
            .set("PLUGIN_CACHE_KEY", key)
    };
    fresh(&ws);
    write_project(&ws, 1);
    build(&ws);
    step(&ws).rebuild().assert_code(0).assert_log(&format!(
        "gobuild-linux-{}-go1.19",
        std::env::consts::ARCH.replace("x86_64", "amd64")
    ));
    fresh(&ws);
    write_project(&ws, 1);
    fs::write(
        ws.join("go.mod"),
        "module example.com/proj\n\ngo 1.19\n\ntoolchain go1.19.8\n",
    )
    .unwrap();
    step(&ws)
        .restore()
        .assert_code(0)
        .assert_log("restore: miss")
        .assert_log("go1.19.8");
}

/// A module version without a go.mod in a module cache inside the
/// workspace breaks `go build ./...`; Go skips directories whose names
/// start with a dot, and a stub go.mod at the cache's root makes it a
/// module of its own that `./...` does not enter (docs/go.md).
#[test]
fn the_module_cache_trap_and_its_fixes() {
    let base = tempfile::tempdir().unwrap();
    let ws = base.path();
    write_project(ws, 1);
    let old = |cache: &str| {
        let dir = ws.join(cache).join("example.com/old@v1.0.0+incompatible");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("old.go"), "package old\n").unwrap();
        fs::create_dir_all(ws.join(cache).join("cache/download")).unwrap();
    };
    let build_all = || {
        Command::new("go")
            .args(["build", "./..."])
            .current_dir(ws)
            .env("GOCACHE", ws.join(".gocache"))
            .env("HOME", ws)
            .env("GOPROXY", "off")
            .env("GOTOOLCHAIN", "local")
            .output()
            .unwrap()
    };
    old("pkg.mod");
    let trapped = build_all();
    assert!(!trapped.status.success());
    let error = String::from_utf8_lossy(&trapped.stderr);
    assert!(error.contains("pkg.mod"), "{error}");
    // Fix 1: the stub go.mod.
    fs::write(
        ws.join("pkg.mod/go.mod"),
        "module larder.invalid/gomodcache\n",
    )
    .unwrap();
    let fenced = build_all();
    assert!(
        fenced.status.success(),
        "{}",
        String::from_utf8_lossy(&fenced.stderr)
    );
    // Fix 2: a module cache in a dot directory.
    fs::remove_dir_all(ws.join("pkg.mod")).unwrap();
    old(".gomodcache");
    let hidden = build_all();
    assert!(
        hidden.status.success(),
        "{}",
        String::from_utf8_lossy(&hidden.stderr)
    );
}

/// The module cache as an offline proxy: only `cache/download` (the zips
/// and go.mod files, no extracted trees) is cached; Go extracts the
/// modules from it with the network off, in place or through
/// `GOPROXY=file://` from elsewhere.
#[test]
fn only_cache_download_is_enough_to_build_offline() {
    let backend = Backend::filesystem();
    let root = unique_root("godownload");
    let proxy = tempfile::tempdir().unwrap();
    common::golang::module_proxy(proxy.path());
    let first = tempfile::tempdir().unwrap();
    common::golang::write_app(first.path());
    let with = |ws: &Path, proxy: &str, args: &[&str]| {
        let output = common::golang::go_command(ws, proxy)
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "go {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let url = format!("file://{}", proxy.path().display());
    with(first.path(), &url, &["mod", "download", "all"]);
    let step = |ws: &Path| {
        Step::new(ws, &backend, &root)
            .set("PLUGIN_MOUNT", "pkg.mod/cache/download")
            .set("PLUGIN_CACHE_KEY", "gomod-download")
    };
    step(first.path()).rebuild().assert_code(0);

    // In place: the restored downloads are GOMODCACHE's own; Go extracts
    // the module from its zip with GOPROXY=off.
    let second = tempfile::tempdir().unwrap();
    common::golang::write_app(second.path());
    fs::copy(first.path().join("go.sum"), second.path().join("go.sum")).unwrap();
    step(second.path())
        .restore()
        .assert_code(0)
        .assert_log("restore: hit");
    assert!(
        !second
            .path()
            .join("pkg.mod/example.com/greet@v1.0.0")
            .exists()
    );
    with(second.path(), "off", &["build", "-o", "app", "."]);
    assert!(
        second
            .path()
            .join("pkg.mod/example.com/greet@v1.0.0/greet.go")
            .is_file()
    );

    // Elsewhere: the restored downloads serve as a file:// module proxy.
    let third = tempfile::tempdir().unwrap();
    common::golang::write_app(third.path());
    fs::copy(first.path().join("go.sum"), third.path().join("go.sum")).unwrap();
    step(third.path()).restore().assert_code(0);
    fs::rename(third.path().join("pkg.mod"), third.path().join("downloads")).unwrap();
    let local = format!(
        "file://{}/cache/download",
        third.path().join("downloads").display()
    );
    with(third.path(), &local, &["build", "-o", "app", "."]);
}
