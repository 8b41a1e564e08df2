//! What each backend adds beyond the shared suite: SFTP logins and host-key
//! checks, Azure's container and credentials, GCS key files, and a stalled
//! server on every network backend failing within the operation timeout.

mod common;

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Backend, Run, Step, tree, unique_root, workspace};

fn env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: run scripts/test.sh"))
}

/// Rebuilds the rich tree into `backend` with `change` applied to the step.
fn rebuild_with(backend: &Backend, change: impl Fn(Step) -> Step) -> Run {
    let ws = workspace();
    tree::rich(ws.path());
    change(Step::new(ws.path(), backend, &unique_root("backend"))).rebuild()
}

fn ssh_keygen(path: &Path, passphrase: &str) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", passphrase, "-C", "test", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
}

#[test]
fn sftp_password_login_round_trips() {
    let backend = Backend::sftp();
    let ws = workspace();
    tree::rich(ws.path());
    let root = unique_root("sftp-password");
    // Its own directory: another checkout's tests may run as another user.
    let cache_root = format!(
        "/tmp/larder-sftp-password-test-{}",
        uuid::Uuid::new_v4().simple()
    );
    fn password_login<'a>(step: Step<'a>, cache_root: &str) -> Step<'a> {
        step.unset("PLUGIN_SFTP_PUBLIC_KEY_FILE")
            .set(
                "PLUGIN_SFTP_USERNAME",
                &env("LARDER_TEST_SFTP_PASSWORD_USER"),
            )
            .set("PLUGIN_SFTP_PASSWORD", &env("LARDER_TEST_SFTP_PASSWORD"))
            .set("PLUGIN_SFTP_CACHE_ROOT", cache_root)
    }
    password_login(Step::new(ws.path(), &backend, &root), &cache_root)
        .rebuild()
        .assert_code(0)
        .assert_log("rebuild: stored key");
    let fresh = workspace();
    let run = password_login(Step::new(fresh.path(), &backend, &root), &cache_root).restore();
    run.assert_code(0).assert_log("restore: hit");
    assert!(!run.log().contains(&env("LARDER_TEST_SFTP_PASSWORD")));
    tree::assert_same(
        &tree::snapshot(&ws.path().join("pkg.mod")),
        &tree::snapshot(&fresh.path().join("pkg.mod")),
    );
    let _ = fs::remove_dir_all(&cache_root);
}

#[test]
fn sftp_says_which_credential_was_rejected() {
    let backend = Backend::sftp();
    // A wrong password.
    let run = rebuild_with(&backend, |s| {
        s.unset("PLUGIN_SFTP_PUBLIC_KEY_FILE")
            .set(
                "PLUGIN_SFTP_USERNAME",
                &env("LARDER_TEST_SFTP_PASSWORD_USER"),
            )
            .set("PLUGIN_SFTP_PASSWORD", "not-the-password")
    });
    run.assert_code(1).assert_log(&format!(
        "rejected the password for user '{}'",
        env("LARDER_TEST_SFTP_PASSWORD_USER")
    ));
    assert!(!run.log().contains("not-the-password"));
    // A key the server does not know.
    let dir = workspace();
    let stranger = dir.path().join("stranger");
    ssh_keygen(&stranger, "");
    rebuild_with(&backend, |s| {
        s.set("PLUGIN_SFTP_PUBLIC_KEY_FILE", stranger.to_str().unwrap())
    })
    .assert_code(1)
    .assert_log("rejected key file")
    .assert_log("authorized_keys");
}

#[test]
fn sftp_encrypted_keys_need_their_passphrase() {
    let backend = Backend::sftp();
    let dir = workspace();
    let key = dir.path().join("locked");
    ssh_keygen(&key, "open sesame");
    // Make the server accept this key for the key user.
    let authorized = Path::new(&env("LARDER_TEST_SFTP_KNOWN_HOSTS"))
        .parent()
        .unwrap()
        .join("authorized_keys")
        .join(env("LARDER_TEST_SFTP_KEY_USER"));
    let mut keys = fs::read_to_string(&authorized).unwrap();
    keys.push_str(&fs::read_to_string(key.with_extension("pub")).unwrap());
    fs::write(&authorized, keys).unwrap();
    let content = fs::read_to_string(&key).unwrap();
    rebuild_with(&backend, |s| {
        s.unset("PLUGIN_SFTP_PUBLIC_KEY_FILE")
            .set("PLUGIN_SFTP_PRIVATE_KEY", &content)
    })
    .assert_code(1)
    .assert_log("is encrypted; set sftp_key_passphrase");
    let run = rebuild_with(&backend, |s| {
        s.unset("PLUGIN_SFTP_PUBLIC_KEY_FILE")
            .set("PLUGIN_SFTP_PRIVATE_KEY", &content)
            .set("PLUGIN_SFTP_KEY_PASSPHRASE", "open sesame")
    });
    run.assert_code(0).assert_log("rebuild: stored key");
    assert!(!run.log().contains("BEGIN OPENSSH"), "key content in log");
    assert!(!run.log().contains("open sesame"), "passphrase in log");
}

#[test]
fn sftp_checks_the_host_key() {
    let backend = Backend::sftp();
    let known = fs::read_to_string(env("LARDER_TEST_SFTP_KNOWN_HOSTS")).unwrap();
    let port = env("LARDER_TEST_SFTP_PORT");
    // Another key recorded for this host: a man in the middle, or a changed server.
    let dir = workspace();
    let other = dir.path().join("other_host");
    ssh_keygen(&other, "");
    let other_pub = fs::read_to_string(other.with_extension("pub")).unwrap();
    let mut fields = other_pub.split_whitespace();
    let forged = format!(
        "[127.0.0.1]:{port} {} {}\n",
        fields.next().unwrap(),
        fields.next().unwrap()
    );
    rebuild_with(&backend, |s| s.set("PLUGIN_SFTP_KNOWN_HOSTS", &forged))
        .assert_code(1)
        .assert_log("refusing 127.0.0.1")
        .assert_log("is not the one in sftp_known_hosts")
        .assert_log("ssh-keyscan");
    // known_hosts lines for other hosts only.
    let elsewhere = known.replace("[127.0.0.1]", "[192.0.2.1]");
    rebuild_with(&backend, |s| s.set("PLUGIN_SFTP_KNOWN_HOSTS", &elsewhere))
        .assert_code(1)
        .assert_log("has no key for this host");
    // The right key given as known_hosts content (not a file) works.
    rebuild_with(&backend, |s| s.set("PLUGIN_SFTP_KNOWN_HOSTS", &known))
        .assert_code(0)
        .assert_log("rebuild: stored key");
    // The fingerprint, right and wrong.
    let fingerprint = Command::new("ssh-keygen")
        .args(["-lf", &env("LARDER_TEST_SFTP_KNOWN_HOSTS")])
        .output()
        .unwrap();
    let fingerprint = String::from_utf8_lossy(&fingerprint.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    assert!(fingerprint.starts_with("SHA256:"));
    rebuild_with(&backend, |s| {
        s.unset("PLUGIN_SFTP_KNOWN_HOSTS")
            .set("PLUGIN_SFTP_HOST_KEY_FINGERPRINT", &fingerprint)
    })
    .assert_code(0);
    rebuild_with(&backend, |s| {
        s.unset("PLUGIN_SFTP_KNOWN_HOSTS").set(
            "PLUGIN_SFTP_HOST_KEY_FINGERPRINT",
            "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )
    })
    .assert_code(1)
    .assert_log("not the SHA256:AAAA");
    // No check configured at all is a configuration error...
    rebuild_with(&backend, |s| s.unset("PLUGIN_SFTP_KNOWN_HOSTS"))
        .assert_code(2)
        .assert_log("setting sftp_known_hosts");
    // ...unless skipping it is asked for, which is logged loudly.
    rebuild_with(&backend, |s| {
        s.unset("PLUGIN_SFTP_KNOWN_HOSTS")
            .set("PLUGIN_SFTP_INSECURE_IGNORE_HOST_KEY", "true")
    })
    .assert_code(0)
    .assert_log("WARNING: sftp: the host key of 127.0.0.1")
    .assert_log("NOT checked");
}

#[test]
fn sftp_names_a_missing_key_file() {
    let backend = Backend::sftp();
    rebuild_with(&backend, |s| {
        s.set("PLUGIN_SFTP_PUBLIC_KEY_FILE", "/nonexistent/id_ed25519")
    })
    .assert_code(2)
    .assert_log("setting sftp_public_key_file: cannot read /nonexistent/id_ed25519");
}

#[test]
fn sftp_refusal_points_at_the_cache_root_not_at_cloud_keys() {
    let backend = Backend::sftp();
    // The test user may not create folders in /etc.
    let run = rebuild_with(&backend, |s| {
        s.set("PLUGIN_SFTP_CACHE_ROOT", "/etc/larder-denied")
    });
    run.assert_code(1)
        .assert_log("cannot use sftp_cache_root '/etc/larder-denied'")
        .assert_log("permission denied")
        .assert_log("set sftp_cache_root to a folder that user owns");
    assert!(!run.log().contains("access_key"), "{}", run.log());
}

#[test]
fn drone_cache_sftp_variables_work() {
    let backend = Backend::sftp();
    let run = rebuild_with(&backend, |s| {
        let key = s
            .env
            .iter()
            .find(|(k, _)| k == "PLUGIN_SFTP_PUBLIC_KEY_FILE")
            .unwrap()
            .1
            .clone();
        s.unset("PLUGIN_SFTP_HOST")
            .unset("PLUGIN_SFTP_PORT")
            .unset("PLUGIN_SFTP_USERNAME")
            .unset("PLUGIN_SFTP_PUBLIC_KEY_FILE")
            .set("SFTP_HOST", &env("LARDER_TEST_SFTP_HOST"))
            .set("SFTP_PORT", &env("LARDER_TEST_SFTP_PORT"))
            .set("SFTP_USERNAME", &env("LARDER_TEST_SFTP_KEY_USER"))
            .set("SFTP_AUTH_METHOD", "PUBLIC_KEY_FILE")
            .set("SFTP_PUBLIC_KEY_FILE", &key)
    });
    run.assert_code(0).assert_log("rebuild: stored key");
}

#[test]
fn azure_uses_the_configured_container() {
    let backend = Backend::azure();
    let ws = workspace();
    tree::rich(ws.path());
    let root = unique_root("azure-container");
    // drone-cache's variable name for the container, which drone-cache itself ignored.
    Step::new(ws.path(), &backend, &root)
        .unset("PLUGIN_CONTAINER")
        .set("AZURE_CONTAINER_NAME", &env("LARDER_TEST_AZURE_CONTAINER"))
        .rebuild()
        .assert_code(0);
    assert_eq!(
        backend.list(&root),
        vec![format!("{root}/gomod-main.tar.gz")]
    );
    // A container that does not exist is named in the error.
    rebuild_with(&backend, |s| s.set("PLUGIN_CONTAINER", "no-such-container"))
        .assert_code(1)
        .assert_log("container 'no-such-container'");
}

#[test]
fn azure_wrong_key_is_reported_without_the_key() {
    let backend = Backend::azure();
    // A well-formed key that is not the account's.
    let wrong = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ==";
    let run = rebuild_with(&backend, |s| s.set("PLUGIN_ACCOUNT_KEY", wrong));
    run.assert_code(1)
        .assert_log("azure")
        .assert_log("credentials were rejected")
        .assert_log("check account_name and account_key");
    assert!(!run.log().contains(wrong));
}

#[test]
fn gcs_reads_with_a_key_file() {
    let backend = Backend::gcs();
    let ws = workspace();
    tree::rich(ws.path());
    let root = unique_root("gcs-key-file");
    Step::new(ws.path(), &backend, &root).store_entry();
    let dir = workspace();
    let key_file = dir.path().join("key.json");
    fs::write(&key_file, backend.setting("PLUGIN_JSON_KEY").unwrap()).unwrap();
    let fresh = workspace();
    Step::new(fresh.path(), &backend, &root)
        .unset("PLUGIN_JSON_KEY")
        .set("GOOGLE_APPLICATION_CREDENTIALS", key_file.to_str().unwrap())
        .restore()
        .assert_code(0)
        .assert_log("restore: hit");
    tree::assert_same(
        &tree::snapshot(&ws.path().join("pkg.mod")),
        &tree::snapshot(&fresh.path().join("pkg.mod")),
    );
}

/// A server that accepts connections and never says a word.
fn silent_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            held.push(stream);
        }
    });
    port
}

#[test]
fn a_stalled_server_fails_within_the_timeout_on_every_backend() {
    for backend in [Backend::sftp(), Backend::azure(), Backend::gcs()] {
        let port = silent_server();
        let started = Instant::now();
        let run = rebuild_with(&backend, |s| {
            let s = s.set("PLUGIN_BACKEND_OPERATION_TIMEOUT", "2s");
            match backend.name {
                "sftp" => s.set("PLUGIN_SFTP_PORT", &port.to_string()),
                "azure" => s.set(
                    "PLUGIN_ENDPOINT",
                    &format!("http://127.0.0.1:{port}/devstoreaccount1"),
                ),
                _ => s.set("PLUGIN_ENDPOINT", &format!("http://127.0.0.1:{port}")),
            }
        });
        let elapsed = started.elapsed();
        run.assert_code(1).assert_log("backend_operation_timeout");
        assert!(
            elapsed < Duration::from_secs(20),
            "{}: gave up only after {elapsed:?}",
            backend.name
        );
    }
}
