//! larder's image, run the way Drone and Woodpecker start a plugin: the
//! image's entrypoint, the workspace on a volume at the runner's path and as
//! the working directory, the runner's metadata variables, settings encoded
//! as that runner encodes them (tests/common/runners.rs), and storage
//! reached by host name, over http and over https with a private CA.
//!
//! Needs Docker and the image: scripts/test.sh starts the daemon, builds the
//! image with scripts/image.sh and sets LARDER_TEST_IMAGE. Without them
//! these tests fail; they never skip.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::docker::{self, AZURE_HOST, Container, GCS_HOST, S3_HOST, SFTP_HOST, Volume};
use common::runners::{self, Runner};
use common::{Backend, Run, golang, tree};

fn env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: run scripts/test.sh"))
}

fn port_of(url_var: &str) -> u16 {
    let url = url::Url::parse(&env(url_var)).expect("URL");
    url.port_or_known_default().expect("port")
}

/// The secrets the tests' settings name with `from_secret`.
fn secrets() -> Vec<(&'static str, String)> {
    vec![
        ("s3_access_key", env("LARDER_TEST_S3_ACCESS_KEY")),
        ("s3_secret_key", env("LARDER_TEST_S3_SECRET_KEY")),
        ("azure_key", env("LARDER_TEST_AZURE_KEY")),
        ("private_ca", read(env("LARDER_TEST_CA_CERT"))),
        ("fallback_prefix", "gomod-main-".to_string()),
        ("gcs_key", gcs_key()),
    ]
}

/// The https GCS emulator's address, as the containers reach it.
fn gcs_tls_endpoint() -> String {
    format!("https://{GCS_HOST}:{}", env("LARDER_TEST_GCS_TLS_PORT"))
}

/// A service account key for the emulator: no OAuth, its own base URL.
fn gcs_key() -> String {
    format!(
        r#"{{"gcs_base_url":"{}","disable_oauth":true,"client_email":"","private_key":"","private_key_id":""}}"#,
        gcs_tls_endpoint()
    )
}

fn read(path: impl AsRef<Path>) -> String {
    fs::read_to_string(path.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()))
}

/// S3 (s3s-fs) by host name: plain http, or https through stunnel on `port`.
fn s3_settings(scheme: &str, host: &str, port: u16) -> String {
    format!(
        "backend: s3\n\
         bucket: {}\n\
         endpoint: {scheme}://{host}:{port}\n\
         path_style: true\n\
         access_key: {{ from_secret: s3_access_key }}\n\
         secret_key: {{ from_secret: s3_secret_key }}\n",
        env("LARDER_TEST_S3_BUCKET")
    )
}

fn s3_http() -> String {
    s3_settings("http", S3_HOST, port_of("LARDER_TEST_S3_ENDPOINT"))
}

fn s3_https(port_var: &str) -> String {
    let port: u16 = env(port_var).parse().expect("port");
    s3_settings("https", S3_HOST, port)
}

/// Azurite by host name, over http or (its own TLS) https.
fn azure_settings(endpoint_var: &str) -> String {
    let url = url::Url::parse(&env(endpoint_var)).expect("URL");
    format!(
        "backend: azure\n\
         endpoint: {}://{AZURE_HOST}:{}{}\n\
         account_name: {}\n\
         account_key: {{ from_secret: azure_key }}\n\
         container: {}\n",
        url.scheme(),
        url.port_or_known_default().expect("port"),
        url.path(),
        env("LARDER_TEST_AZURE_ACCOUNT"),
        env("LARDER_TEST_AZURE_CONTAINER"),
    )
}

/// One pipeline run: a fresh workspace volume, the runner's layout and metadata.
struct Pipeline {
    runner: Runner,
    repo: String,
    /// The build (pipeline) number.
    build: u32,
    volume: Volume,
}

impl Pipeline {
    fn new(runner: Runner, repo: &str) -> Pipeline {
        let volume = Volume::new(match runner {
            Runner::Drone => "drone",
            Runner::Woodpecker => "woodpecker",
        });
        let pipeline = Pipeline {
            runner,
            repo: repo.to_string(),
            build: 42,
            volume,
        };
        fs::create_dir_all(pipeline.src()).unwrap();
        pipeline
    }

    /// The same, as build number `build`.
    fn number(mut self, build: u32) -> Pipeline {
        self.build = build;
        self
    }

    /// Where the volume is mounted in every step.
    fn volume_at(&self) -> &'static str {
        match self.runner {
            Runner::Drone => "/drone/src",
            Runner::Woodpecker => "/woodpecker",
        }
    }

    /// The workspace inside the containers (also their working directory).
    fn workspace(&self) -> String {
        match self.runner {
            Runner::Drone => "/drone/src".into(),
            Runner::Woodpecker => runners::woodpecker_workspace(&self.repo),
        }
    }

    /// The workspace on this machine, in the volume.
    fn src(&self) -> PathBuf {
        let inside = self.workspace();
        let rel = Path::new(&inside)
            .strip_prefix(self.volume_at())
            .expect("workspace in the volume");
        self.volume.join(rel)
    }

    fn metadata(&self) -> Vec<(String, String)> {
        match self.runner {
            Runner::Drone => runners::drone_metadata(&self.repo, "main", self.build),
            Runner::Woodpecker => runners::woodpecker_metadata(&self.repo, "main", self.build),
        }
    }

    /// A step running `image` with the workspace volume, as the runner starts it.
    fn step(&self, image: &str) -> Container {
        Container::new(image)
            .volume(&self.volume, self.volume_at())
            .workdir(&self.workspace())
            .envs(self.metadata())
            .host(S3_HOST)
            .host(AZURE_HOST)
            .host(GCS_HOST)
            .host(SFTP_HOST)
    }

    /// A larder plugin step with `settings` (YAML, as under `settings:`).
    fn larder(&self, settings: &str) -> Container {
        let secrets = secrets();
        let secrets: Vec<(&str, &str)> = secrets.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.step(docker::image())
            .envs(self.runner.settings_env(settings, &secrets))
    }
}

fn unique_repo(test: &str) -> String {
    format!(
        "octo/{test}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

#[track_caller]
fn assert_ok(run: &Run, needle: &str) {
    run.assert_code(0).assert_log(needle);
    assert!(!run.log().contains("WARNING"), "warnings:\n{}", run.log());
}

#[test]
fn the_image_is_small_static_and_labelled() {
    let image = docker::image();
    let size: u64 = docker::docker_ok(&["image", "inspect", "--format", "{{.Size}}", image])
        .trim()
        .parse()
        .expect("size");
    eprintln!("image {image}: {size} bytes");
    assert!(size < 40 << 20, "the image is {size} bytes");
    let labels: serde_json::Value = serde_json::from_str(&docker::docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Labels}}",
        image,
    ]))
    .expect("labels");
    let label = |name: &str| {
        labels[format!("org.opencontainers.image.{name}")]
            .as_str()
            .unwrap_or_else(|| panic!("label {name} missing: {labels}"))
            .to_string()
    };
    assert_eq!(label("title"), "larder");
    assert_eq!(label("version"), env!("CARGO_PKG_VERSION"));
    assert!(label("source").starts_with("https://"));
    assert!(!label("description").is_empty() && !label("licenses").is_empty());
    let revision = label("revision");
    assert!(revision.len() >= 40 && revision != "unknown", "{revision}");
    let entrypoint = docker::docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Entrypoint}}",
        image,
    ]);
    assert_eq!(entrypoint.trim(), r#"["/larder"]"#);

    // What is in it: larder, the CA bundle, an empty /tmp for everyone. No shell.
    let id = docker::docker_ok(&["create", image]);
    let id = id.trim();
    let listing = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("docker export {id} | tar -tvf -"))
        .output()
        .expect("docker export");
    let bundle = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "docker export {id} | tar -xOf - etc/ssl/certs/ca-certificates.crt"
        ))
        .output()
        .expect("docker export");
    docker::docker_ok(&["rm", id]);
    let listing = String::from_utf8_lossy(&listing.stdout);
    let mut files: Vec<&str> = listing
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split(" -> ").next()?.split_whitespace().last())
        .collect();
    // Docker adds these to every container.
    files.retain(|f| {
        ![
            ".dockerenv",
            "dev/console",
            "etc/hostname",
            "etc/hosts",
            "etc/mtab",
            "etc/resolv.conf",
        ]
        .contains(f)
    });
    files.sort();
    assert_eq!(
        files,
        ["etc/ssl/certs/ca-certificates.crt", "larder"],
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("drwxrwxrwt") && l.ends_with(" tmp/")),
        "/tmp must be world-writable and sticky:\n{listing}"
    );
    assert_eq!(
        bundle.stdout,
        fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap(),
        "the image carries the build machine's CA bundle"
    );
    let version = Container::larder().command(&["--version"]).run();
    assert_eq!(
        version.stdout.trim(),
        format!("larder {}", env!("CARGO_PKG_VERSION"))
    );
    let shell = Container::new(image)
        .option("--entrypoint", "/bin/sh")
        .command(&["-c", "true"])
        .run();
    assert_ne!(shell.code, 0, "the image has a shell");

    // From `docker run` to larder's first log line.
    let ws = Pipeline::new(Runner::Drone, &unique_repo("start"));
    let (run, first_line) = ws
        .larder("restore: true\nbackend: filesystem\nmount: [pkg.mod]\ncache_key: start\n")
        .run_timed();
    assert_ok(&run, "restore: miss");
    let first_line = first_line.expect("a log line");
    eprintln!(
        "first log line {} ms after docker run",
        first_line.as_millis()
    );
    assert!(first_line < Duration::from_secs(10), "{first_line:?}");
}

/// Drone: PLUGIN_ names keep their dashes, lists arrive comma-joined,
/// DRONE_* metadata names the repository and branch.
#[test]
fn drone_runs_the_plugin_with_its_encodings() {
    let repo = unique_repo("drone");
    let first = Pipeline::new(Runner::Drone, &repo);
    tree::rich(&first.src());
    fs::create_dir_all(first.src().join("vendor/lib")).unwrap();
    fs::write(first.src().join("vendor/lib/lib.go"), "package lib\n").unwrap();
    let settings = |extra: &str| {
        format!(
            "mount: [pkg.mod, vendor]\n\
             cache-key: 'gomod-{{{{ .Commit.Branch }}}}-{{{{ .Build.Number }}}}'\n\
             entry-format: archive\n\
             archive-format: zstd\n\
             compression_level: 5\n\
             exit_code: true\n\
             result_file: .cache-result.json\n\
             {}{extra}",
            s3_http()
        )
    };
    let run = first.larder(&settings("rebuild: true\n")).run();
    assert_ok(&run, "rebuild: stored key 'gomod-main-42'");
    // The default remote root is DRONE_REPO.
    let s3 = Backend::s3();
    assert!(s3.meta(&format!("{repo}/gomod-main-42.tar.zst")).is_some());

    // The next build has a new number: the key misses, restore-keys (a
    // dashed name, a comma-joined list) finds the previous entry.
    let second = Pipeline::new(Runner::Drone, &repo).number(43);
    let restore = second
        .larder(&settings(
            "restore: true\nrestore-keys: ['gomod-{{ .Commit.Branch }}-', 'gomod-']\n",
        ))
        .run();
    assert_ok(&restore, "restore: partial hit for key 'gomod-main-43'");
    for mount in ["pkg.mod", "vendor"] {
        tree::assert_same(
            &tree::snapshot(&first.src().join(mount)),
            &tree::snapshot(&second.src().join(mount)),
        );
    }
    let result: serde_json::Value =
        serde_json::from_str(&read(second.src().join(".cache-result.json"))).unwrap();
    assert_eq!(result["result"], "partial");
    assert_eq!(result["matched_key"], "gomod-main-42");
}

/// Woodpecker: the volume at /woodpecker, the workspace below it, CI_* and
/// the DRONE_* subset; dashes become underscores, and a list holding a
/// from_secret item arrives as JSON.
#[test]
fn woodpecker_runs_the_plugin_with_its_encodings() {
    let repo = unique_repo("woodpecker");
    let first = Pipeline::new(Runner::Woodpecker, &repo);
    tree::rich(&first.src());
    let settings = |extra: &str| {
        format!(
            "mount: [pkg.mod]\n\
             cache-key: 'gomod-{{{{ .Commit.Branch }}}}-{{{{ .Build.Number }}}}'\n\
             exit-code: true\n\
             {}{extra}",
            azure_settings("LARDER_TEST_AZURE_ENDPOINT")
        )
    };
    assert_ok(
        &first.larder(&settings("rebuild: true\n")).run(),
        "rebuild: stored key 'gomod-main-42'",
    );
    // Stored under CI_REPO, found again by a JSON list (from_secret item).
    let second = Pipeline::new(Runner::Woodpecker, &repo).number(43);
    let restore = second
        .larder(&settings(
            "restore: true\nrestore_keys: ['nothing-', { from_secret: fallback_prefix }]\n",
        ))
        .run();
    assert_ok(&restore, "restore: partial hit for key 'gomod-main-43'");
    assert!(restore.log().contains(&repo), "{}", restore.log());
    tree::assert_same(
        &tree::snapshot(&first.src().join("pkg.mod")),
        &tree::snapshot(&second.src().join("pkg.mod")),
    );
    // Nothing landed at the volume's root, outside the workspace.
    assert!(!second.volume.join("pkg.mod").exists());
}

/// https with a private CA given through ca_cert, for S3 (stunnel in front
/// of s3s-fs) and Azure (Azurite's own TLS); the image's bundled CAs stay
/// trusted besides it.
#[test]
fn https_storage_behind_a_private_ca() {
    let repo = unique_repo("tls");
    let first = Pipeline::new(Runner::Woodpecker, &repo);
    tree::rich(&first.src());
    let s3 = s3_https("LARDER_TEST_S3_TLS_PORT");
    let step = |p: &Pipeline, mode: &str, extra: &str, storage: &str| {
        p.larder(&format!(
            "{mode}: true\nmount: [pkg.mod]\ncache_key: tls-{{{{ .Commit.Branch }}}}\n\
             exit_code: true\nbackend_operation_timeout: 20s\n{storage}{extra}"
        ))
    };
    // S3, the CA as PEM text from a secret (Woodpecker plugins take no environment).
    let with_ca = "ca_cert: { from_secret: private_ca }\n";
    assert_ok(
        &step(&first, "rebuild", with_ca, &s3).run(),
        "rebuild: stored",
    );
    let second = Pipeline::new(Runner::Woodpecker, &repo);
    assert_ok(
        &step(&second, "restore", with_ca, &s3).run(),
        "restore: hit",
    );
    tree::assert_same(
        &tree::snapshot(&first.src().join("pkg.mod")),
        &tree::snapshot(&second.src().join("pkg.mod")),
    );
    // Without ca_cert the certificate is refused, and the log says what to set.
    let refused = step(
        &Pipeline::new(Runner::Woodpecker, &repo),
        "restore",
        "",
        &s3,
    )
    .run();
    refused
        .assert_code(1)
        .assert_log("certificate")
        .assert_log("ca_cert");

    // Azure over Azurite's https, the CA as a file in the workspace (Drone).
    let azure = azure_settings("LARDER_TEST_AZURE_TLS_ENDPOINT");
    let third = Pipeline::new(Runner::Drone, &repo);
    tree::rich(&third.src());
    fs::create_dir_all(third.src().join("ci")).unwrap();
    fs::copy(env("LARDER_TEST_CA_CERT"), third.src().join("ci/ca.pem")).unwrap();
    let ca_file = "ca_cert: ci/ca.pem\n";
    assert_ok(
        &step(&third, "rebuild", ca_file, &azure).run(),
        "rebuild: stored",
    );
    let fourth = Pipeline::new(Runner::Drone, &repo);
    fs::create_dir_all(fourth.src().join("ci")).unwrap();
    fs::copy(env("LARDER_TEST_CA_CERT"), fourth.src().join("ci/ca.pem")).unwrap();
    assert_ok(
        &step(&fourth, "restore", ca_file, &azure).run(),
        "restore: hit",
    );
    step(&Pipeline::new(Runner::Drone, &repo), "restore", "", &azure)
        .run()
        .assert_code(1)
        .assert_log("ca_cert");

    // A server whose CA is in the image's bundle: still trusted when ca_cert
    // adds another CA. (A bundle with the second test CA in it stands in for
    // the image's public CAs; without it the same step is refused.)
    let bundled = s3_https("LARDER_TEST_S3_TLS_BUNDLED_PORT");
    let bundle_dir = tempfile::tempdir().unwrap();
    let bundle = bundle_dir.path().join("ca-certificates.crt");
    fs::write(
        &bundle,
        read("/etc/ssl/certs/ca-certificates.crt") + &read(env("LARDER_TEST_BUNDLED_CA_CERT")),
    )
    .unwrap();
    let fifth = Pipeline::new(Runner::Woodpecker, &repo);
    assert_ok(
        &step(&fifth, "restore", with_ca, &bundled)
            .file(&bundle, "/etc/ssl/certs/ca-certificates.crt")
            .run(),
        "restore: hit",
    );
    step(
        &Pipeline::new(Runner::Woodpecker, &repo),
        "restore",
        with_ca,
        &bundled,
    )
    .run()
    .assert_code(1)
    .assert_log("certificate");
}

/// GCS over https with ca_cert as well. object_store's GCS writes use the
/// XML API, which no emulator here accepts, so the entry (one archive) is
/// made on a filesystem cache and planted through the emulator's JSON API.
#[test]
fn gcs_reads_over_https_with_ca_cert() {
    let repo = unique_repo("gcs");
    let first = Pipeline::new(Runner::Drone, &repo);
    tree::rich(&first.src());
    let base = "mount: [pkg.mod]\ncache_key: gcs\nexit_code: true\n";
    assert_ok(
        &first
            .larder(&format!(
                "rebuild: true\n{base}backend: filesystem\nfilesystem_cache_root: /drone/src/.cache\n\
                 entry_format: archive\n"
            ))
            .run(),
        "rebuild: stored",
    );
    let cache = first.src().join(".cache");
    let port = env("LARDER_TEST_GCS_TLS_PORT");
    let mut planted = 0;
    for entry in walkdir::WalkDir::new(&cache) {
        let entry = entry.unwrap();
        if !entry.file_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .strip_prefix(&cache)
            .unwrap()
            .display()
            .to_string();
        let status = std::process::Command::new("curl")
            .args([
                "-sf",
                "-o",
                "/dev/null",
                "--cacert",
                &env("LARDER_TEST_CA_CERT"),
            ])
            .args([
                "--resolve",
                &format!("{GCS_HOST}:{port}:127.0.0.1"),
                "-X",
                "POST",
            ])
            .arg("--data-binary")
            .arg(format!("@{}", entry.path().display()))
            .arg(format!(
                "{}/upload/storage/v1/b/ci-cache/o?uploadType=media&name={name}",
                gcs_tls_endpoint()
            ))
            .status()
            .expect("curl");
        assert!(status.success(), "planting {name} failed");
        planted += 1;
    }
    assert_eq!(planted, 1, "one entry");
    let gcs = format!(
        "backend: gcs\nbucket: ci-cache\nendpoint: {}\njson_key: {{ from_secret: gcs_key }}\n",
        gcs_tls_endpoint()
    );
    let second = Pipeline::new(Runner::Drone, &repo);
    assert_ok(
        &second
            .larder(&format!(
                "restore: true\n{base}{gcs}ca_cert: {{ from_secret: private_ca }}\n"
            ))
            .run(),
        "restore: hit",
    );
    tree::assert_same(
        &tree::snapshot(&first.src().join("pkg.mod")),
        &tree::snapshot(&second.src().join("pkg.mod")),
    );
    Pipeline::new(Runner::Drone, &repo)
        .larder(&format!(
            "restore: true\n{base}{gcs}backend_operation_timeout: 20s\n"
        ))
        .run()
        .assert_code(1)
        .assert_log("ca_cert");
}

/// Host names resolve in the scratch image through /etc/hosts (the
/// runner's extra hosts) and through the DNS server in /etc/resolv.conf;
/// SFTP finds the host key in OpenSSH's system known_hosts file.
#[test]
fn names_resolve_through_hosts_and_dns() {
    let resolv_dir = tempfile::tempdir().unwrap();
    let resolv = resolv_dir.path().join("resolv.conf");
    fs::write(
        &resolv,
        format!("nameserver {}\n", env("LARDER_TEST_DNS_ADDR")),
    )
    .unwrap();
    let repo = unique_repo("names");
    let first = Pipeline::new(Runner::Drone, &repo);
    tree::rich(&first.src());
    let base = "mount: [pkg.mod]\ncache_key: names\nexit_code: true\n";

    // A name only the DNS server knows (no --add-host for it).
    let dns_name = "s3.dns.larder.test";
    let dns = s3_settings("http", dns_name, port_of("LARDER_TEST_S3_ENDPOINT"));
    assert_ok(
        &first
            .larder(&format!("rebuild: true\n{base}{dns}"))
            .file(&resolv, "/etc/resolv.conf")
            .run(),
        "rebuild: stored",
    );
    assert!(
        read(env("LARDER_TEST_DNS_LOG")).contains(&format!("query[A] {dns_name}")),
        "the name was not looked up through the DNS server"
    );
    // An /etc/hosts name, with a DNS server that does not know it.
    let second = Pipeline::new(Runner::Drone, &repo);
    assert_ok(
        &second
            .larder(&format!("restore: true\n{base}{}", s3_http()))
            .file(&resolv, "/etc/resolv.conf")
            .run(),
        "restore: hit",
    );

    // SFTP by name; no sftp_known_hosts: /etc/ssh/ssh_known_hosts is used.
    let port = env("LARDER_TEST_SFTP_PORT");
    let known_hosts =
        read(env("LARDER_TEST_SFTP_KNOWN_HOSTS")).replace("[127.0.0.1]", &format!("[{SFTP_HOST}]"));
    let ssh_dir = tempfile::tempdir().unwrap();
    fs::write(ssh_dir.path().join("ssh_known_hosts"), known_hosts).unwrap();
    let key_user = env("LARDER_TEST_SFTP_KEY_USER");
    let key = read(env("LARDER_TEST_SFTP_KEY_FILE"));
    let sftp_root = format!("cache-{}", uuid::Uuid::new_v4().simple());
    let sftp = format!(
        "backend: sftp\nsftp_host: {SFTP_HOST}\nsftp_port: {port}\nsftp_username: {key_user}\n\
         sftp_private_key: {{ from_secret: sftp_key }}\nsftp_cache_root: {sftp_root}\n"
    );
    let with_key = |p: &Pipeline, mode: &str| {
        let secrets = [("sftp_key", key.as_str())];
        p.step(docker::image())
            .envs(Runner::Drone.settings_env(&format!("{mode}: true\n{base}{sftp}"), &secrets))
            .file(
                &ssh_dir.path().join("ssh_known_hosts"),
                "/etc/ssh/ssh_known_hosts",
            )
    };
    assert_ok(&with_key(&first, "rebuild").run(), "rebuild: stored");
    let third = Pipeline::new(Runner::Drone, &repo);
    assert_ok(&with_key(&third, "restore").run(), "restore: hit");
    tree::assert_same(
        &tree::snapshot(&first.src().join("pkg.mod")),
        &tree::snapshot(&third.src().join("pkg.mod")),
    );
}

/// The design card's pipeline, in containers: restore, a Go build, rebuild,
/// all on one workspace volume with GOMODCACHE in it. Run 1 misses and
/// stores; run 2 (a fresh volume) hits, builds offline and skips the upload.
#[test]
fn go_pipeline_in_containers() {
    let go_image = docker::go_image();
    let proxy = tempfile::tempdir().unwrap();
    golang::module_proxy(proxy.path());
    let go_sum = golang::go_sum(proxy.path());
    let repo = unique_repo("go");
    let cache = format!(
        "mount: [pkg.mod]\ncache_key: 'gomod-{{{{ checksum \"go.sum\" }}}}'\nexit_code: true\n{}",
        s3_http()
    );
    let go = |p: &Pipeline, goproxy: &str, args: &[&str]| {
        p.step(go_image)
            .file(proxy.path(), "/proxy")
            .env("GOMODCACHE", "/drone/src/pkg.mod")
            .env("GOCACHE", "/drone/src/.gocache")
            .env("GOPATH", "/drone/src/.gopath")
            .env("HOME", "/drone/src")
            .env("GOPROXY", goproxy)
            .env("GOSUMDB", "off")
            .env("GOFLAGS", "-mod=mod")
            .command(args)
            .run()
    };
    let clone = |p: &Pipeline| {
        golang::write_app(&p.src());
        fs::write(p.src().join("go.sum"), &go_sum).unwrap();
    };

    let run1 = Pipeline::new(Runner::Drone, &repo);
    clone(&run1);
    assert_ok(
        &run1.larder(&format!("restore: true\n{cache}")).run(),
        "restore: miss",
    );
    let build = go(&run1, "file:///proxy", &["go", "build", "-o", "app", "."]);
    build.assert_code(0);
    assert!(
        run1.src()
            .join("pkg.mod/example.com/greet@v1.0.0/greet.go")
            .is_file(),
        "go filled the module cache in the workspace:\n{}",
        build.log()
    );
    assert_ok(
        &run1.larder(&format!("rebuild: true\n{cache}")).run(),
        "rebuild: stored",
    );

    let run2 = Pipeline::new(Runner::Drone, &repo);
    clone(&run2);
    assert_ok(
        &run2.larder(&format!("restore: true\n{cache}")).run(),
        "restore: hit",
    );
    go(&run2, "off", &["go", "build", "-o", "app", "."]).assert_code(0);
    let hello = go(&run2, "off", &["/drone/src/app"]);
    hello.assert_code(0);
    assert_eq!(hello.stdout.trim(), "hello from the cache");
    assert_ok(
        &run2.larder(&format!("rebuild: true\n{cache}")).run(),
        "rebuild: skipped",
    );
}

/// A step with `user:` restores into a workspace that user owns; the
/// restored files are the user's (no root to keep the stored owners).
#[test]
fn restore_as_a_non_root_user() {
    let repo = unique_repo("user");
    let first = Pipeline::new(Runner::Drone, &repo);
    tree::rich(&first.src());
    let settings = format!(
        "mount: [pkg.mod]\ncache_key: user\nexit_code: true\n{}",
        s3_http()
    );
    assert_ok(
        &first.larder(&format!("rebuild: true\n{settings}")).run(),
        "rebuild: stored",
    );
    let second = Pipeline::new(Runner::Drone, &repo);
    fs::write(second.src().join("README"), "cloned by the user\n").unwrap();
    docker::chown_tree(&second.volume.path, 1000, 1000);
    let run = second
        .larder(&format!("restore: true\n{settings}"))
        .user("1000:1000")
        .run();
    assert_ok(&run, "restore: hit");
    let before = tree::snapshot(&first.src().join("pkg.mod"));
    let after = tree::snapshot(&second.src().join("pkg.mod"));
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (path, node) in &after {
        assert_eq!((node.uid, node.gid), (1000, 1000), "{}", path.display());
        let want = &before[path];
        assert_eq!(
            (node.kind, &node.content, node.mtime),
            (want.kind, &want.content, want.mtime)
        );
    }
    assert_eq!(
        fs::metadata(second.src().join("README")).unwrap().uid(),
        1000
    );
}
