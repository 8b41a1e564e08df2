//! Running images as a CI runner does: a named volume for the workspace,
//! the host's network (the test servers listen on 127.0.0.1), host names
//! for them through `--add-host`. Every failure to reach Docker is a test
//! failure with what to do, never a skip.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::Run;

/// Host names the containers use for the servers on 127.0.0.1; the test
/// certificates are issued for them (scripts/ci-services.sh).
pub const S3_HOST: &str = "s3.larder.test";
pub const AZURE_HOST: &str = "azure.larder.test";
pub const GCS_HOST: &str = "gcs.larder.test";
pub const SFTP_HOST: &str = "sftp.larder.test";

/// Longest a single container may run before the test fails.
const CONTAINER_TIMEOUT: Duration = Duration::from_secs(300);

/// The larder image under test, from `LARDER_TEST_IMAGE` (scripts/test.sh
/// builds it with scripts/image.sh). Fails if it or Docker is missing.
pub fn image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let image = std::env::var("LARDER_TEST_IMAGE").unwrap_or_else(|_| {
            panic!(
                "LARDER_TEST_IMAGE is not set: the container tests need larder's image. \
                 Run scripts/test.sh, or start Docker (scripts/ci-services.sh start), build the \
                 image with `scripts/image.sh larder:test` and set LARDER_TEST_IMAGE=larder:test."
            )
        });
        let inspect = docker()
            .args(["image", "inspect", "--format", "{{.Id}}", &image])
            .output()
            .unwrap_or_else(|e| panic!("cannot run docker: {e}; install docker.io"));
        assert!(
            inspect.status.success(),
            "image {image} is not there (or Docker is not running): {}",
            String::from_utf8_lossy(&inspect.stderr)
        );
        image
    })
}

pub fn docker() -> Command {
    let mut cmd = Command::new("docker");
    cmd.env("DOCKER_CLI_HINTS", "false");
    cmd
}

/// Runs `docker args...`, which must succeed; returns its stdout.
#[track_caller]
pub fn docker_ok(args: &[&str]) -> String {
    let output = docker()
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run docker: {e}"));
    assert!(
        output.status.success(),
        "docker {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A named Docker volume, removed when dropped. Its directory on this
/// machine is where the test plays the clone step and checks results.
pub struct Volume {
    pub name: String,
    pub path: PathBuf,
}

impl Volume {
    pub fn new(purpose: &str) -> Volume {
        let name = format!("larder-test-{purpose}-{}", uuid::Uuid::new_v4().simple());
        docker_ok(&["volume", "create", &name]);
        let path = docker_ok(&["volume", "inspect", "--format", "{{.Mountpoint}}", &name]);
        Volume {
            name,
            path: PathBuf::from(path.trim()),
        }
    }

    /// The volume's directory, joined with `rel`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = docker().args(["volume", "rm", "-f", &self.name]).output();
    }
}

/// One `docker run`: the image's entrypoint unless a command is given.
pub struct Container {
    image: String,
    options: Vec<String>,
    command: Vec<String>,
}

impl Container {
    /// A container on the host's network, removed when it exits.
    pub fn new(image: &str) -> Container {
        Container {
            image: image.to_string(),
            options: vec!["--network".into(), "host".into()],
            command: Vec::new(),
        }
    }

    /// larder's image under test.
    pub fn larder() -> Container {
        Container::new(image())
    }

    pub fn option(mut self, option: &str, value: &str) -> Self {
        self.options.push(option.to_string());
        self.options.push(value.to_string());
        self
    }

    pub fn volume(self, volume: &Volume, at: &str) -> Self {
        let spec = format!("{}:{at}", volume.name);
        self.option("--volume", &spec)
    }

    /// A file of this machine, read-only, at `at`.
    pub fn file(self, path: &Path, at: &str) -> Self {
        let spec = format!("{}:{at}:ro", path.display());
        self.option("--volume", &spec)
    }

    pub fn workdir(self, dir: &str) -> Self {
        self.option("--workdir", dir)
    }

    pub fn user(self, user: &str) -> Self {
        self.option("--user", user)
    }

    /// `name` resolves to 127.0.0.1 inside the container, through /etc/hosts.
    pub fn host(self, name: &str) -> Self {
        let spec = format!("{name}:127.0.0.1");
        self.option("--add-host", &spec)
    }

    pub fn env(self, key: &str, value: &str) -> Self {
        let spec = format!("{key}={value}");
        self.option("--env", &spec)
    }

    pub fn envs<K: AsRef<str>, V: AsRef<str>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        for (k, v) in vars {
            self = self.env(k.as_ref(), v.as_ref());
        }
        self
    }

    pub fn command(mut self, args: &[&str]) -> Self {
        self.command = args.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Runs the container to its end (at most five minutes).
    pub fn run(&self) -> Run {
        let (run, _) = self.run_timed();
        run
    }

    /// Runs it, and also says how long after `docker run` started the
    /// first line reached stderr (larder logs there).
    pub fn run_timed(&self) -> (Run, Option<Duration>) {
        let name = format!("larder-test-{}", uuid::Uuid::new_v4().simple());
        let mut cmd = docker();
        cmd.args(["run", "--rm", "--name", &name])
            .args(&self.options)
            .arg(&self.image)
            .args(&self.command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run docker: {e}"));
        let mut stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let out = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        let err = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let mut first_line = None;
            let mut chunk = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                bytes.extend_from_slice(&chunk[..n]);
                if first_line.is_none() && bytes.contains(&b'\n') {
                    first_line = Some(started.elapsed());
                }
            }
            (String::from_utf8_lossy(&bytes).into_owned(), first_line)
        });
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for docker") {
                break status;
            }
            if started.elapsed() > CONTAINER_TIMEOUT {
                let _ = docker().args(["kill", &name]).output();
                let _ = child.wait();
                panic!(
                    "container of {} ran longer than {CONTAINER_TIMEOUT:?}",
                    self.image
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = out.join().expect("stdout reader");
        let (stderr, first_line) = err.join().expect("stderr reader");
        let run = Run {
            code: status.code().unwrap_or(-1),
            stdout,
            stderr,
        };
        (run, first_line)
    }
}

/// Gives `path` and everything under it to `uid:gid`, as a runner's clone
/// step running as that user would have left it.
pub fn chown_tree(path: &Path, uid: u32, gid: u32) {
    for entry in walkdir::WalkDir::new(path) {
        let entry = entry.expect("walk");
        std::os::unix::fs::lchown(entry.path(), Some(uid), Some(gid)).expect("chown");
    }
}

/// A Go toolchain image made here without pulling anything: FROM scratch,
/// with this machine's Go (Debian's golang-go), its C library and loader.
/// Built once per test run, and kept for the next run under a tag naming
/// the Go version.
pub fn go_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(build_go_image)
}

fn build_go_image() -> String {
    let goroot = Command::new("go")
        .args(["env", "GOROOT"])
        .output()
        .expect("the Go toolchain is missing: run scripts/ci-services.sh install");
    let goroot = PathBuf::from(String::from_utf8_lossy(&goroot.stdout).trim());
    let version = std::fs::read_to_string(goroot.join("VERSION")).expect("GOROOT/VERSION");
    let version = version.lines().next().unwrap_or("go").trim().to_string();
    let tag = format!("larder-test-go:{version}");
    if docker()
        .args(["image", "inspect", &tag])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return tag;
    }
    let ctx = tempfile::tempdir().expect("temp dir");
    let root = ctx.path();
    let sh = |args: &[&str]| {
        let status = Command::new(args[0])
            .args(&args[1..])
            .status()
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert!(status.success(), "{args:?} failed");
    };
    std::fs::create_dir_all(root.join("usr/lib")).unwrap();
    // Debian links parts of GOROOT from /usr/share: copy what the links point to.
    sh(&[
        "cp",
        "-aL",
        goroot.to_str().unwrap(),
        root.join("usr/lib/go").to_str().unwrap(),
    ]);
    // What building a module does not need: Go's own tests, tools' sources, API lists.
    for dir in ["test", "api", "misc", "doc", "src/cmd"] {
        let _ = std::fs::remove_dir_all(root.join("usr/lib/go").join(dir));
    }
    let go = root.join("usr/lib/go/bin/go");
    let ldd = Command::new("ldd").arg(&go).output().expect("ldd");
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from);
        if let Some(path) = path {
            let dest = root.join(path.strip_prefix("/").unwrap());
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            sh(&["cp", "-L", path.to_str().unwrap(), dest.to_str().unwrap()]);
        }
    }
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    super::tree::chmod(&root.join("tmp"), 0o1777);
    std::fs::write(
        root.join("Dockerfile"),
        "FROM scratch\n\
         COPY . /\n\
         ENV PATH=/usr/lib/go/bin GOROOT=/usr/lib/go CGO_ENABLED=0 GOTOOLCHAIN=local TMPDIR=/tmp\n",
    )
    .unwrap();
    docker_ok(&["build", "--quiet", "-t", &tag, root.to_str().unwrap()]);
    tag
}
