//! A Go module world without a network: a module proxy in GOPROXY's file
//! layout holding example.com/greet, and an app that requires it.

use std::fs;
use std::path::Path;
use std::process::Command;

/// `go` for a workspace with its caches inside it (`pkg.mod`, `.gocache`),
/// modules from `proxy` (`off` for none), no checksum database and no
/// toolchain switching: a build with no network.
pub fn go_command(ws: &Path, proxy: &str) -> Command {
    let mut cmd = Command::new("go");
    cmd.current_dir(ws)
        .env("GOMODCACHE", ws.join("pkg.mod"))
        .env("GOCACHE", ws.join(".gocache"))
        .env("GOPATH", ws.join(".gopath"))
        .env("HOME", ws)
        .env("GOPROXY", proxy)
        .env("GOSUMDB", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local");
    cmd
}

/// Writes a module proxy (GOPROXY file layout) holding example.com/greet.
pub fn module_proxy(dir: &Path) {
    let v = dir.join("example.com/greet/@v");
    fs::create_dir_all(&v).unwrap();
    fs::write(v.join("list"), "v1.0.0\n").unwrap();
    fs::write(
        v.join("v1.0.0.info"),
        r#"{"Version":"v1.0.0","Time":"2024-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    fs::write(
        v.join("v1.0.0.mod"),
        "module example.com/greet\n\ngo 1.19\n",
    )
    .unwrap();
    let script = r#"
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w") as z:
    p = "example.com/greet@v1.0.0/"
    z.writestr(p + "go.mod", "module example.com/greet\n\ngo 1.19\n")
    z.writestr(p + "greet.go", 'package greet\n\nfunc Hello() string { return "hello from the cache" }\n')
"#;
    let status = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(v.join("v1.0.0.zip"))
        .status()
        .expect("python3");
    assert!(status.success(), "writing the module zip failed");
}

/// The app's go.mod and main.go; it prints "hello from the cache".
pub fn write_app(ws: &Path) {
    fs::write(
        ws.join("go.mod"),
        "module example.com/app\n\ngo 1.19\n\nrequire example.com/greet v1.0.0\n",
    )
    .unwrap();
    fs::write(
        ws.join("main.go"),
        "package main\n\nimport (\n\t\"fmt\"\n\t\"example.com/greet\"\n)\n\nfunc main() { fmt.Println(greet.Hello()) }\n",
    )
    .unwrap();
}

/// The go.sum that `go mod download` writes for the app, made here with
/// this machine's Go from `proxy` (as a developer commits it).
pub fn go_sum(proxy: &Path) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    write_app(dir.path());
    let output = Command::new("go")
        .args(["mod", "download", "all"])
        .current_dir(dir.path())
        .env("GOMODCACHE", dir.path().join("pkg.mod"))
        .env("GOCACHE", dir.path().join(".gocache"))
        .env("GOPATH", dir.path().join(".gopath"))
        .env("GOPROXY", format!("file://{}", proxy.display()))
        .env("GOSUMDB", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .output()
        .expect("the Go toolchain is missing: run scripts/ci-services.sh install");
    assert!(
        output.status.success(),
        "go mod download failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let sum = fs::read_to_string(dir.path().join("go.sum")).expect("go.sum written");
    // The module cache is read-only, as Go makes it: let the temp dir go.
    for entry in walkdir::WalkDir::new(dir.path()) {
        if let Ok(entry) = entry
            && entry.file_type().is_dir()
        {
            super::tree::chmod(entry.path(), 0o755);
        }
    }
    sum
}
