//! What the log tells a person or a log pipeline: JSON lines, the debug
//! summary of the settings, progress during long transfers, and hints that
//! point at the real cause of a storage failure. Secrets never appear.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{Backend, Run, S3Server, Step, to_run, tree, unique_root, workspace};
use serde_json::Value;

fn larder(env: &[(&str, &str)], cwd: &std::path::Path) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_larder"))
        .env_clear()
        .env("RUST_BACKTRACE", "0")
        .envs(env.iter().copied())
        .current_dir(cwd)
        .output()
        .expect("run larder");
    to_run(output)
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Every line of stderr as JSON; fails on a line that is not a JSON object.
#[track_caller]
fn json_lines(run: &Run) -> Vec<Value> {
    assert!(run.stdout.is_empty(), "stdout: {}", run.stdout);
    run.stderr
        .lines()
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(value @ Value::Object(_)) => value,
            _ => panic!("not a JSON object: {line}\n{}", run.stderr),
        })
        .collect()
}

#[track_caller]
fn assert_no_secret(run: &Run, secrets: &[&str]) {
    let log = run.log();
    for secret in secrets {
        let escaped = serde_json::to_string(secret).unwrap();
        let escaped = &escaped[1..escaped.len() - 1];
        assert!(
            !log.contains(secret) && !log.contains(escaped),
            "{secret} appears in:\n{log}"
        );
    }
}

/// Secrets that reach the log if nothing scrubbed them: one in the key, one
/// with JSON's special characters in a setting the debug summary lists.
const KEY_SECRET: &str = "zz-key-secret-zz";
const ODD_SECRET: &str = r#"zz"odd\secret"#;

#[test]
fn json_logs_are_one_object_per_line_ending_with_the_summary() {
    let ws = workspace();
    tree::rich(ws.path());
    let backend = Backend::filesystem();
    let endpoint = format!("http://example.invalid/{ODD_SECRET}");
    let step = Step::new(ws.path(), &backend, &unique_root("json"))
        .set("PLUGIN_LOG_FORMAT", "json")
        .set("PLUGIN_DEBUG", "true")
        .set("PLUGIN_CACHE_KEY", &format!("gomod-{KEY_SECRET}"))
        .set("PLUGIN_ACCOUNT_KEY", KEY_SECRET)
        .set("PLUGIN_SFTP_PASSWORD", ODD_SECRET)
        // Ignored by the filesystem backend, but listed by debug.
        .set("PLUGIN_ENDPOINT", &endpoint);
    for (run, mode, result) in [
        (step.rebuild(), "rebuild", "stored"),
        (step.restore(), "restore", "exact"),
    ] {
        run.assert_code(0);
        let lines = json_lines(&run);
        assert_no_secret(&run, &[KEY_SECRET, ODD_SECRET]);
        for line in &lines {
            for field in ["timestamp", "level", "message"] {
                assert!(line[field].is_string(), "{field} missing: {line}");
            }
            assert_eq!(line["mode"], mode, "{line}");
            assert_eq!(line["key"], "gomod-***", "{line}");
        }
        assert!(
            lines.iter().any(|l| l["level"] == "debug"
                && l["message"]
                    .as_str()
                    .unwrap()
                    .contains("endpoint: http://example.invalid/***")),
            "the debug summary lists the endpoint, scrubbed:\n{}",
            run.stderr
        );
        let summary = lines.last().unwrap();
        assert_eq!(summary["event"], "summary", "{summary}");
        assert_eq!(summary["level"], "info");
        assert_eq!(summary["result"], result);
        for field in ["files", "bytes", "stored_bytes"] {
            assert!(summary[field].as_u64().unwrap() > 0, "{field}: {summary}");
        }
        assert!(summary["seconds"].is_f64(), "{summary}");
    }
}

#[test]
fn a_configuration_error_is_a_json_line_too() {
    let ws = workspace();
    let run = larder(
        &[
            ("PLUGIN_RESTORE", "true"),
            ("PLUGIN_BUCKET", "b"),
            ("PLUGIN_LOG_FORMAT", "json"),
            ("PLUGIN_ACCESS_KEY", "AKID"),
            ("PLUGIN_SECRET_KEY", ODD_SECRET),
            ("PLUGIN_ENDPOINT", &format!("ftp://{ODD_SECRET}")),
            ("DRONE_REPO", "o/r"),
        ],
        ws.path(),
    );
    run.assert_code(2);
    let lines = json_lines(&run);
    assert_eq!(lines.len(), 1, "{}", run.stderr);
    assert_eq!(lines[0]["level"], "error");
    assert!(
        lines[0]["message"]
            .as_str()
            .unwrap()
            .contains("configuration error: setting endpoint"),
        "{}",
        run.stderr
    );
    assert_no_secret(&run, &[ODD_SECRET]);
}

#[test]
fn debug_summarises_the_settings_and_the_job_without_secrets() {
    let ws = workspace();
    let port = closed_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let base = [
        ("PLUGIN_RESTORE", "true"),
        ("PLUGIN_DEBUG", "true"),
        ("PLUGIN_MOUNT", "pkg.mod"),
        ("PLUGIN_RESTORE_KEYS", "gomod-"),
        ("PLUGIN_BUCKET", "ci-cache"),
        ("PLUGIN_ENDPOINT", endpoint.as_str()),
        ("PLUGIN_PATH_STYLE", "true"),
        ("DRONE_REPO", "octo/hello"),
        ("DRONE_COMMIT_BRANCH", "main"),
    ];
    let mut with_keys = base.to_vec();
    with_keys.extend([
        ("PLUGIN_ACCESS_KEY", "AKIDDEBUG"),
        ("PLUGIN_SECRET_KEY", KEY_SECRET),
    ]);
    let run = larder(&with_keys, ws.path());
    run.assert_code(0)
        .assert_log("debug: settings given (secrets shown as ***):")
        .assert_log("debug:   bucket: ci-cache (from PLUGIN_BUCKET)")
        .assert_log("debug:   secret_key: *** (from PLUGIN_SECRET_KEY)")
        .assert_log("debug: job: restore of key 'main'")
        .assert_log("debug:   restore keys, tried in order when the key misses: 'gomod-'")
        .assert_log("debug:   credentials: static keys: access_key, secret_key")
        .assert_log("debug:   timeouts: each storage request 3m (backend_operation_timeout)")
        .assert_log("debug: storage: s3 s3://ci-cache at");
    assert_no_secret(&run, &[KEY_SECRET, "AKIDDEBUG"]);
    assert!(!run.log().contains("Job {"), "{}", run.log());

    let mut chain = base.to_vec();
    chain.push(("AWS_METADATA_ENDPOINT", endpoint.as_str()));
    larder(&chain, ws.path())
        .assert_code(0)
        .assert_log("credentials: the AWS credential chain")
        .assert_log("set: AWS_METADATA_ENDPOINT");
}

/// Runs a restore against `endpoint` that must fail, and returns its log.
fn failing_restore(endpoint: &str, extra: &[(&str, &str)]) -> Run {
    let ws = workspace();
    let mut env = vec![
        ("PLUGIN_RESTORE", "true"),
        ("PLUGIN_MOUNT", "pkg.mod"),
        ("PLUGIN_BUCKET", "ci-cache"),
        ("PLUGIN_ENDPOINT", endpoint),
        ("PLUGIN_PATH_STYLE", "true"),
        ("PLUGIN_EXIT_CODE", "true"),
        ("PLUGIN_BACKEND_OPERATION_TIMEOUT", "20s"),
        ("DRONE_REPO", "o/r"),
        ("DRONE_COMMIT_BRANCH", "main"),
    ];
    env.extend_from_slice(extra);
    let run = larder(&env, ws.path());
    run.assert_code(1);
    run
}

const KEYS: [(&str, &str); 2] = [
    ("PLUGIN_ACCESS_KEY", "AKID"),
    ("PLUGIN_SECRET_KEY", "secret"),
];

#[test]
fn a_host_that_does_not_resolve_is_called_a_dns_failure() {
    let run = failing_restore("http://larder-test.invalid:9", &KEYS);
    run.assert_log("The host name 'larder-test.invalid' does not resolve (DNS)");
    assert!(!run.log().contains("timed out"), "{}", run.log());
}

#[test]
fn a_refused_connection_names_the_address_not_a_timeout() {
    let port = closed_port();
    let run = failing_restore(&format!("http://127.0.0.1:{port}"), &KEYS);
    run.assert_log(&format!(
        "Nothing accepts connections at 127.0.0.1:{port}: check endpoint"
    ));
    assert!(
        !run.log().contains("backend_operation_timeout"),
        "{}",
        run.log()
    );
}

/// No keys and no credential chain: object_store ends at the instance
/// metadata service (here a closed local port instead of 169.254.169.254).
#[test]
fn missing_credentials_are_not_called_a_network_problem() {
    let metadata = format!("http://127.0.0.1:{}", closed_port());
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let run = failing_restore(&endpoint, &[("AWS_METADATA_ENDPOINT", &metadata)]);
    run.assert_log("/latest/api/token")
        .assert_log("No credentials found: access_key and secret_key are not set")
        .assert_log("run where the AWS chain provides credentials");
    assert!(
        !run.log().contains("Nothing accepts connections"),
        "{}",
        run.log()
    );
}

#[test]
fn flush_age_zero_deletes_every_entry_and_a_zero_timeout_names_its_setting() {
    let ws = workspace();
    tree::rich(ws.path());
    let backend = Backend::filesystem();
    let root = unique_root("flush0");
    let step = Step::new(ws.path(), &backend, &root);
    step.rebuild().assert_code(0);
    assert_eq!(backend.list(&root).len(), 1);
    step.clone_with("PLUGIN_FLUSH_AGE", "0s")
        .run("flush")
        .assert_code(0)
        .assert_log("flush: deleted 'gomod-main'");
    assert!(backend.list(&root).is_empty(), "{:?}", backend.list(&root));
    step.clone_with("PLUGIN_BACKEND_OPERATION_TIMEOUT", "0")
        .restore()
        .assert_code(2)
        .assert_log("backend_operation_timeout of zero would fail every request");
}

/// A TCP proxy to `upstream` that passes at most `rate` bytes a second,
/// both directions together, so a transfer takes a known time.
fn throttled_proxy(upstream: String, rate: f64) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let next_slot = Arc::new(Mutex::new(Instant::now()));
    thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            for (from, to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                let next_slot = Arc::clone(&next_slot);
                thread::spawn(move || pipe(from, to, &next_slot, rate));
            }
        }
    });
    port
}

fn pipe(mut from: TcpStream, mut to: TcpStream, next_slot: &Mutex<Instant>, rate: f64) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let slot = {
            let mut next = next_slot.lock().unwrap();
            let start = (*next).max(Instant::now());
            *next = start + Duration::from_secs_f64(n as f64 / rate);
            start
        };
        thread::sleep(slot.saturating_duration_since(Instant::now()));
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// The percentages of the progress lines in a text log that start with
/// `what`: `rebuild: archived 3.1 MB of 10.0 MB (31.0%), ...` gives 31.0.
fn percents(log: &str, what: &str) -> Vec<f64> {
    log.lines()
        .filter(|l| l.starts_with(what))
        .map(|l| {
            let open = l.find(" (").expect("a percentage") + 2;
            let close = l[open..].find("%)").expect("a percentage") + open;
            l[open..close].parse().unwrap()
        })
        .collect()
}

/// The size after `word` in each line that has it, in bytes: `uploaded 8.4
/// MB` gives 8,400,000.
fn sizes_after(log: &str, word: &str) -> Vec<f64> {
    log.lines()
        .filter_map(|l| l.split(word).nth(1))
        .map(|rest| {
            let mut parts = rest.split([' ', ',', ';']);
            let number: f64 = parts.next().unwrap().parse().unwrap();
            let unit = match parts.next().unwrap() {
                "B" => 1.0,
                "kB" => 1e3,
                "MB" => 1e6,
                "GB" => 1e9,
                other => panic!("unit {other}"),
            };
            number * unit
        })
        .collect()
}

/// A 20 MB entry through a 10 MB/s link takes about two seconds each way:
/// a progress line every 100 ms, with growing numbers.
#[test]
fn long_transfers_log_progress_with_growing_numbers() {
    let server = S3Server::start();
    let proxy = throttled_proxy(format!("127.0.0.1:{}", server.port), 10_000_000.0);
    let backend = Backend::s3_at(
        format!("http://127.0.0.1:{proxy}"),
        S3Server::BUCKET.into(),
        S3Server::ACCESS.into(),
        S3Server::SECRET.into(),
    );
    let ws = workspace();
    std::fs::create_dir(ws.path().join("pkg.mod")).unwrap();
    std::fs::write(ws.path().join("pkg.mod/blob"), tree::noise(7, 20_000_000)).unwrap();
    let step = Step::new(ws.path(), &backend, &unique_root("progress"))
        .set("LARDER_PROGRESS_INTERVAL", "100ms");

    // Archiving runs ahead of the upload by a few parts; the upload is
    // counted as parts (8 MiB) are acknowledged.
    let run = step.rebuild();
    run.assert_code(0).assert_log("rebuild: stored key");
    let stored = run.stderr.find("rebuild: stored key").unwrap();
    assert!(
        !run.stderr[stored..].contains("rebuild: archived"),
        "no progress after the result:\n{}",
        run.stderr
    );
    let archived = percents(&run.stderr, "rebuild: archived");
    assert!(archived.len() >= 3, "{}", run.stderr);
    assert!(archived.windows(2).all(|w| w[0] <= w[1]), "{archived:?}");
    assert_eq!(archived.last(), Some(&100.0), "{}", run.stderr);
    let uploaded = sizes_after(&run.stderr, "uploaded ");
    assert!(uploaded.windows(2).all(|w| w[0] <= w[1]), "{uploaded:?}");
    assert!(uploaded.first() < uploaded.last(), "{}", run.stderr);
    // Archiving 20 MB of noise takes a fraction of the link's 2 s.
    run.assert_log("for the upload: the upload (network or storage) set the pace");

    tree::remove(&ws.path().join("pkg.mod"));
    let run = step.clone_with("PLUGIN_LOG_FORMAT", "json").restore();
    run.assert_code(0);
    let progress: Vec<Value> = json_lines(&run)
        .into_iter()
        .filter(|l| l["event"] == "progress")
        .collect();
    assert!(progress.len() >= 3, "{}", run.stderr);
    let done: Vec<u64> = progress
        .iter()
        .map(|l| l["bytes_done"].as_u64().unwrap())
        .collect();
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "{done:?}");
    assert!(done.first() < done.last(), "{done:?}");
    let total = progress[0]["bytes_total"].as_u64().unwrap();
    assert!(total > 20_000_000, "{}", progress[0]);
    // The link (2 s for the entry) set the pace, and the log says so.
    let lines = json_lines(&run);
    let summary = lines.iter().find(|l| l["event"] == "summary").unwrap();
    let waited = summary["download_wait_seconds"].as_f64().unwrap();
    let seconds = summary["seconds"].as_f64().unwrap();
    assert!(waited >= 1.0 && waited <= seconds, "{summary}");
    assert!(
        lines.iter().any(|l| l["message"]
            .as_str()
            .unwrap()
            .ends_with("for the download: the download (network or storage) set the pace")),
        "{}",
        run.stderr
    );
    for line in &progress {
        assert!(line["percent"].as_f64().unwrap() <= 100.0, "{line}");
        assert!(
            line["message"]
                .as_str()
                .unwrap()
                .starts_with("restore: received"),
            "{line}"
        );
    }
}

/// A run that ends within the first interval (5 s by default) logs no progress.
#[test]
fn quick_runs_log_no_progress() {
    let ws = workspace();
    tree::rich(ws.path());
    let backend = Backend::filesystem();
    let step = Step::new(ws.path(), &backend, &unique_root("quick"));
    for run in [
        step.rebuild(),
        step.clone_with("PLUGIN_OVERRIDE", "true").restore(),
    ] {
        run.assert_code(0);
        for word in ["received", "archived", "measuring"] {
            assert!(!run.log().contains(word), "{}", run.log());
        }
    }
}
