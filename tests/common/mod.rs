//! Test harness: run the real `larder` binary as a pipeline step would,
//! against real storage servers, and compare directory trees exactly.
#![allow(dead_code)]

pub mod docker;
pub mod golang;
pub mod hostile;
pub mod runners;
pub mod tree;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// A storage backend under test, with the settings that select it and a
/// direct client for planting or inspecting objects.
pub struct Backend {
    pub name: &'static str,
    settings: Vec<(String, String)>,
    store: Arc<dyn ObjectStore>,
    /// How tests plant objects, when object_store cannot write to the server.
    writer: Writer,
    _dir: Option<tempfile::TempDir>,
}

/// How `Backend::put` writes an object.
enum Writer {
    ObjectStore,
    /// The SFTP root seen as a local folder: objects written there are
    /// handed to the SFTP user, as if the server had written them.
    SftpRoot {
        root: std::path::PathBuf,
        owner: Option<(u32, u32)>,
    },
    /// fake-gcs-server's JSON upload API (object_store only speaks the XML API).
    GcsJson {
        endpoint: String,
        bucket: String,
    },
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
            writer: Writer::ObjectStore,
            _dir: Some(dir),
        }
    }

    pub fn s3() -> Backend {
        Backend::s3_at(
            required("LARDER_TEST_S3_ENDPOINT"),
            required("LARDER_TEST_S3_BUCKET"),
            required("LARDER_TEST_S3_ACCESS_KEY"),
            required("LARDER_TEST_S3_SECRET_KEY"),
        )
    }

    /// An S3 server of the test's own (see `S3Server`).
    pub fn s3_at(endpoint: String, bucket: String, access: String, secret: String) -> Backend {
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
            writer: Writer::ObjectStore,
            _dir: None,
        }
    }

    /// The project's sshd, logging in with a key; the host key is pinned.
    pub fn sftp() -> Backend {
        let host = required("LARDER_TEST_SFTP_HOST");
        let port = required("LARDER_TEST_SFTP_PORT");
        let user = required("LARDER_TEST_SFTP_KEY_USER");
        let home = required("LARDER_TEST_SFTP_HOME");
        // Each test gets its own cache root under the user's home.
        let root = format!("cache-{}", uuid::Uuid::new_v4().simple());
        let local = std::path::Path::new(&home).join(&user).join(&root);
        std::fs::create_dir_all(&local).unwrap();
        let owner = std::fs::metadata(local.parent().unwrap())
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                (m.uid(), m.gid())
            })
            .ok();
        if let Some((uid, gid)) = owner {
            let _ = std::os::unix::fs::chown(&local, Some(uid), Some(gid));
        }
        let store = LocalFileSystem::new_with_prefix(&local).expect("local view of the sftp root");
        // A copy of the client key that the unprivileged test user may read too.
        let dir = tempfile::tempdir().expect("temp dir");
        tree::chmod(dir.path(), 0o755);
        let key = dir.path().join("id_ed25519");
        std::fs::copy(required("LARDER_TEST_SFTP_KEY_FILE"), &key).unwrap();
        tree::chmod(&key, 0o600);
        if is_root() {
            std::os::unix::fs::chown(&key, Some(65534), Some(65534)).unwrap();
        }
        Backend {
            name: "sftp",
            settings: vec![
                ("PLUGIN_BACKEND".into(), "sftp".into()),
                ("PLUGIN_SFTP_HOST".into(), host),
                ("PLUGIN_SFTP_PORT".into(), port),
                ("PLUGIN_SFTP_USERNAME".into(), user),
                (
                    "PLUGIN_SFTP_PUBLIC_KEY_FILE".into(),
                    key.display().to_string(),
                ),
                (
                    "PLUGIN_SFTP_KNOWN_HOSTS".into(),
                    required("LARDER_TEST_SFTP_KNOWN_HOSTS"),
                ),
                ("PLUGIN_SFTP_CACHE_ROOT".into(), root),
            ],
            store: Arc::new(store),
            writer: Writer::SftpRoot {
                root: local.clone(),
                owner,
            },
            _dir: Some(dir),
        }
    }

    /// Azurite, with the development account and a named container.
    pub fn azure() -> Backend {
        let endpoint = required("LARDER_TEST_AZURE_ENDPOINT");
        let account = required("LARDER_TEST_AZURE_ACCOUNT");
        let key = required("LARDER_TEST_AZURE_KEY");
        let container = required("LARDER_TEST_AZURE_CONTAINER");
        let store = MicrosoftAzureBuilder::new()
            .with_account(&account)
            .with_access_key(&key)
            .with_container_name(&container)
            .with_endpoint(endpoint.clone())
            .with_allow_http(true)
            .build()
            .expect("azure client");
        Backend {
            name: "azure",
            settings: vec![
                ("PLUGIN_BACKEND".into(), "azure".into()),
                ("PLUGIN_ENDPOINT".into(), endpoint),
                ("PLUGIN_ACCOUNT_NAME".into(), account),
                ("PLUGIN_ACCOUNT_KEY".into(), key),
                ("PLUGIN_CONTAINER".into(), container),
            ],
            store: Arc::new(store),
            writer: Writer::ObjectStore,
            _dir: None,
        }
    }

    /// fake-gcs-server: larder reads through object_store; the tests plant
    /// entries through the emulator's JSON API, because no emulator here
    /// accepts object_store's XML-API writes.
    pub fn gcs() -> Backend {
        let endpoint = required("LARDER_TEST_GCS_ENDPOINT");
        let bucket = required("LARDER_TEST_GCS_BUCKET");
        let key = format!(
            r#"{{"gcs_base_url":"{endpoint}","disable_oauth":true,"client_email":"","private_key":"","private_key_id":""}}"#
        );
        let store = GoogleCloudStorageBuilder::new()
            .with_bucket_name(&bucket)
            .with_service_account_key(&key)
            .with_client_options(object_store::ClientOptions::new().with_allow_http(true))
            .build()
            .expect("gcs client");
        Backend {
            name: "gcs",
            settings: vec![
                ("PLUGIN_BACKEND".into(), "gcs".into()),
                ("PLUGIN_ENDPOINT".into(), endpoint.clone()),
                ("PLUGIN_BUCKET".into(), bucket.clone()),
                ("PLUGIN_JSON_KEY".into(), key),
            ],
            store: Arc::new(store),
            writer: Writer::GcsJson { endpoint, bucket },
            _dir: None,
        }
    }

    /// Whether larder itself can write entries to this backend's server.
    pub fn writable(&self) -> bool {
        matches!(self.writer, Writer::ObjectStore | Writer::SftpRoot { .. })
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
        match &self.writer {
            Writer::ObjectStore => {
                block_on(
                    self.store
                        .put(&ObjectPath::from(object), PutPayload::from(bytes)),
                )
                .unwrap_or_else(|e| panic!("put {object}: {e}"));
            }
            Writer::SftpRoot { root, owner } => {
                block_on(
                    self.store
                        .put(&ObjectPath::from(object), PutPayload::from(bytes)),
                )
                .unwrap_or_else(|e| panic!("put {object}: {e}"));
                if let Some((uid, gid)) = owner {
                    // Every folder on the way down and the file itself.
                    let mut path = root.clone();
                    for part in object.split('/') {
                        path.push(part);
                        std::os::unix::fs::chown(&path, Some(*uid), Some(*gid))
                            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
                    }
                }
            }
            Writer::GcsJson { endpoint, bucket } => {
                use std::io::Write;
                let url = format!(
                    "{endpoint}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={object}"
                );
                let mut curl = Command::new("curl")
                    .args([
                        "-sf",
                        "-o",
                        "/dev/null",
                        "-X",
                        "POST",
                        "--data-binary",
                        "@-",
                        &url,
                    ])
                    .stdin(std::process::Stdio::piped())
                    .spawn()
                    .expect("curl");
                curl.stdin.take().unwrap().write_all(&bytes).unwrap();
                assert!(
                    curl.wait().unwrap().success(),
                    "uploading {object} to fake-gcs-server failed"
                );
            }
        }
    }

    pub fn get(&self, object: &str) -> Option<Vec<u8>> {
        let path = ObjectPath::from(object);
        match block_on(async { self.store.get(&path).await?.bytes().await }) {
            Ok(bytes) => Some(bytes.to_vec()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("get {object}: {e}"),
        }
    }

    /// An object's metadata as the server reports it.
    pub fn meta(&self, object: &str) -> Option<object_store::ObjectMeta> {
        match block_on(self.store.head(&ObjectPath::from(object))) {
            Ok(meta) => Some(meta),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("head {object}: {e}"),
        }
    }

    /// An object's metadata as a listing reports it, which is what flush
    /// reads: S3 servers give milliseconds there and whole seconds in a
    /// HEAD's `Last-Modified`.
    pub fn listed(&self, object: &str) -> Option<object_store::ObjectMeta> {
        use futures::TryStreamExt;
        let object = ObjectPath::from(object);
        let parent: ObjectPath = object.parts().take(object.parts().count() - 1).collect();
        block_on(self.store.list(Some(&parent)).try_collect::<Vec<_>>())
            .unwrap_or_else(|e| panic!("list {parent}: {e}"))
            .into_iter()
            .find(|meta| meta.location == object)
    }

    /// Deletes an object (as a person with access to the storage would).
    pub fn delete(&self, object: &str) {
        block_on(self.store.delete(&ObjectPath::from(object)))
            .unwrap_or_else(|e| panic!("delete {object}: {e}"));
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
                // The suites name the entry format they test: whole archives
                // unless a test asks for chunks. (Chunked is larder's default;
                // tests that set nothing, in cli.rs and dropin.rs, check that.)
                ("PLUGIN_ENTRY_FORMAT", "archive"),
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

    /// A copy of this step with one more setting.
    pub fn clone_with(&self, key: &str, value: &str) -> Step<'a> {
        let mut step = Step {
            workspace: self.workspace.clone(),
            backend: self.backend,
            env: self.env.clone(),
            unprivileged: self.unprivileged,
        };
        step.env.retain(|(k, _)| k != key);
        step.env.push((key.to_string(), value.to_string()));
        step
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
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        if mode != "export" {
            cmd.env(format!("PLUGIN_{}", mode.to_ascii_uppercase()), "true");
        }
        cmd
    }

    /// `export: <file>`: writes the key's entry to `file`.
    pub fn export(&self, file: &Path) -> Run {
        let mut cmd = self.command("export");
        cmd.env("PLUGIN_EXPORT", file);
        to_run(cmd.output().expect("run larder"))
    }

    pub fn run(&self, mode: &str) -> Run {
        let output = self.command(mode).output().expect("run larder");
        to_run(output)
    }

    pub fn rebuild(&self) -> Run {
        self.run("rebuild")
    }

    /// Stores an entry for this step's key: a larder rebuild on a writable
    /// backend; on a read-only test server, a rebuild into a scratch
    /// filesystem backend whose objects are then planted on the server.
    pub fn store_entry(&self) -> Run {
        if self.backend.writable() {
            let run = self.rebuild();
            run.assert_code(0);
            return run;
        }
        let scratch = Backend::filesystem();
        let mut step = Step::new(&self.workspace, &scratch, "unused");
        step.env = self.env.clone();
        step.env
            .retain(|(k, _)| !self.backend.settings().iter().any(|(b, _)| b == k));
        step.env.extend(scratch.settings().iter().cloned());
        step.unprivileged = self.unprivileged;
        let run = step.rebuild();
        run.assert_code(0);
        for object in scratch.list("") {
            self.backend.put(&object, scratch.get(&object).unwrap());
        }
        run
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

/// An s3s-fs server of one test's own, on a free port, for tests that stop
/// and restart it; `Drop` stops it.
pub struct S3Server {
    pub port: u16,
    pub data: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl S3Server {
    pub const BUCKET: &'static str = "own";
    pub const ACCESS: &'static str = "AKIDOWN";
    pub const SECRET: &'static str = "own-secret";

    pub fn start() -> S3Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let data = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(data.path().join(Self::BUCKET)).unwrap();
        let mut server = S3Server {
            port,
            data,
            child: None,
        };
        server.resume();
        server
    }

    /// Starts the server (again) on the same port and data.
    pub fn resume(&mut self) {
        let binary = required("LARDER_TEST_S3S_FS");
        let child = Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", Self::ACCESS, "--secret-key", Self::SECRET])
            .arg(self.data.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "s3s-fs did not start on port {}",
                self.port
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Kills the server, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn backend(&self) -> Backend {
        Backend::s3_at(
            format!("http://127.0.0.1:{}", self.port),
            Self::BUCKET.into(),
            Self::ACCESS.into(),
            Self::SECRET.into(),
        )
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}
