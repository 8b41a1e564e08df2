//! Test harness: run the real `larder` binary as a pipeline step would,
//! against real storage servers, and compare directory trees exactly.
#![allow(dead_code)]

pub mod hostile;
pub mod tree;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// A storage backend under test, with the settings that select it and a
/// direct client for planting or inspecting objects.
pub struct Backend {
    pub name: &'static str,
    settings: Vec<(String, String)>,
    store: Arc<dyn ObjectStore>,
    _dir: Option<tempfile::TempDir>,
}

fn required(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: the S3 tests need the project's S3 server. \
             Run scripts/test.sh, or `scripts/ci-services.sh install && scripts/ci-services.sh start` \
             and `source target/ci-run/env`."
        )
    })
}

impl Backend {
    pub fn filesystem() -> Backend {
        let dir = tempfile::tempdir().expect("temp dir");
        // Let the unprivileged test user write there too.
        tree::chmod(dir.path(), 0o777);
        let root = dir.path().join("cache");
        std::fs::create_dir(&root).unwrap();
        tree::chmod(&root, 0o777);
        let store = LocalFileSystem::new_with_prefix(&root).expect("local store");
        Backend {
            name: "filesystem",
            settings: vec![
                ("PLUGIN_BACKEND".into(), "filesystem".into()),
                (
                    "PLUGIN_FILESYSTEM_CACHE_ROOT".into(),
                    root.display().to_string(),
                ),
            ],
            store: Arc::new(store),
            _dir: Some(dir),
        }
    }

    pub fn s3() -> Backend {
        let endpoint = required("LARDER_TEST_S3_ENDPOINT");
        let bucket = required("LARDER_TEST_S3_BUCKET");
        let access = required("LARDER_TEST_S3_ACCESS_KEY");
        let secret = required("LARDER_TEST_S3_SECRET_KEY");
        let store = AmazonS3Builder::new()
            .with_endpoint(&endpoint)
            .with_bucket_name(&bucket)
            .with_access_key_id(&access)
            .with_secret_access_key(&secret)
            .with_region("us-east-1")
            .with_allow_http(true)
            .build()
            .expect("s3 client");
        Backend {
            name: "s3",
            settings: vec![
                ("PLUGIN_BACKEND".into(), "s3".into()),
                ("PLUGIN_ENDPOINT".into(), endpoint),
                ("PLUGIN_BUCKET".into(), bucket),
                ("PLUGIN_PATH_STYLE".into(), "true".into()),
                ("PLUGIN_ACCESS_KEY".into(), access),
                ("PLUGIN_SECRET_KEY".into(), secret),
            ],
            store: Arc::new(store),
            _dir: None,
        }
    }

    pub fn settings(&self) -> &[(String, String)] {
        &self.settings
    }

    pub fn setting(&self, name: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn put(&self, object: &str, bytes: Vec<u8>) {
        block_on(
            self.store
                .put(&ObjectPath::from(object), PutPayload::from(bytes)),
        )
        .unwrap_or_else(|e| panic!("put {object}: {e}"));
    }

    pub fn get(&self, object: &str) -> Option<Vec<u8>> {
        let path = ObjectPath::from(object);
        match block_on(async { self.store.get(&path).await?.bytes().await }) {
            Ok(bytes) => Some(bytes.to_vec()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("get {object}: {e}"),
        }
    }

    /// Every object under `prefix`, sorted.
    pub fn list(&self, prefix: &str) -> Vec<String> {
        use futures::TryStreamExt;
        let prefix = ObjectPath::from(prefix);
        let mut names: Vec<String> =
            block_on(self.store.list(Some(&prefix)).try_collect::<Vec<_>>())
                .expect("list")
                .into_iter()
                .map(|m| m.location.to_string())
                .collect();
        names.sort();
        names
    }
}

pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

/// A unique remote root per test, so tests share one bucket safely.
pub fn unique_root(test: &str) -> String {
    format!("test/{test}-{}", uuid::Uuid::new_v4().simple())
}

/// The outcome of one larder run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn log(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "exit code; log:\n{}", self.log());
        self
    }

    #[track_caller]
    pub fn assert_log(&self, needle: &str) -> &Self {
        assert!(
            self.log().contains(needle),
            "log lacks {needle:?}:\n{}",
            self.log()
        );
        self
    }
}

/// A pipeline step: a workspace, a backend and settings.
pub struct Step<'a> {
    pub workspace: PathBuf,
    pub backend: &'a Backend,
    pub env: Vec<(String, String)>,
    pub unprivileged: bool,
}

impl<'a> Step<'a> {
    pub fn new(workspace: &Path, backend: &'a Backend, root: &str) -> Step<'a> {
        let mut env: Vec<(String, String)> = backend.settings().to_vec();
        env.extend(
            [
                ("PLUGIN_REMOTE_ROOT", root),
                ("PLUGIN_MOUNT", "pkg.mod"),
                ("PLUGIN_CACHE_KEY", "gomod-{{ .Commit.Branch }}"),
                ("PLUGIN_EXIT_CODE", "true"),
                ("DRONE_REPO", "octo/hello"),
                ("DRONE_COMMIT_BRANCH", "main"),
                ("DRONE_BUILD_NUMBER", "7"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        env.push(("DRONE_WORKSPACE".into(), workspace.display().to_string()));
        Step {
            workspace: workspace.to_path_buf(),
            backend,
            env,
            unprivileged: false,
        }
    }

    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn unset(mut self, key: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self
    }

    /// Runs as an unprivileged user (nobody) when the tests run as root, so
    /// permission bits really apply.
    pub fn unprivileged(mut self) -> Self {
        self.unprivileged = true;
        self
    }

    pub fn command(&self, mode: &str) -> Command {
        let binary = env!("CARGO_BIN_EXE_larder");
        let mut cmd = if self.unprivileged && is_root() {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", binary]);
            c
        } else {
            Command::new(binary)
        };
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_BACKTRACE", "0")
            .current_dir(&self.workspace)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env(format!("PLUGIN_{}", mode.to_ascii_uppercase()), "true");
        cmd
    }

    pub fn run(&self, mode: &str) -> Run {
        let output = self.command(mode).output().expect("run larder");
        to_run(output)
    }

    pub fn rebuild(&self) -> Run {
        self.run("rebuild")
    }

    pub fn restore(&self) -> Run {
        self.run("restore")
    }
}

pub fn to_run(output: Output) -> Run {
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A fresh workspace that the unprivileged user may write to.
pub fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    tree::chmod(dir.path(), 0o777);
    dir
}
