//! The S3 and Azure authentication enterprises use, against real servers
//! (`scripts/ci-services.sh`):
//!
//! - moto, checking every SigV4 signature and the caller's IAM policies: a
//!   user that may only assume roles, so a round trip proves the role's
//!   keys were used. moto records SSE, the KMS key, the ACL and the storage
//!   class as sent; boto3 reads them back.
//! - a second moto that checks nothing, for web identity (moto insists on
//!   signed AssumeRoleWithWebIdentity once checks are on; AWS does not).
//! - a recording TCP proxy in front of moto, to see what larder sent to STS.
//! - Azurite over https with `--oauth basic` (it checks a bearer token's
//!   issuer, audience and lifetime, not its signature) and a fake Microsoft
//!   Entra that logs every token request.
//!
//! What only real AWS and Azure can show (KMS permissions, buckets with
//! ACLs disabled, trust policies and external ids enforced, Entra's own
//! checks, RBAC) is listed in the README.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::{Backend, Step, tree, unique_root, workspace};

fn env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: these tests need moto, Azurite with --oauth and the fake Entra \
             of scripts/ci-services.sh. Run scripts/test.sh, or \
             `scripts/ci-services.sh install && scripts/ci-services.sh start` and \
             `source target/ci-run/env`."
        )
    })
}

/// What one connection carried: from the client (0) and from the server (1).
type Connection = Arc<Mutex<[Vec<u8>; 2]>>;

/// A TCP proxy that records what passes each way, connection by connection.
struct Recorder {
    url: String,
    connections: Arc<Mutex<Vec<Connection>>>,
}

impl Recorder {
    fn start(upstream: &str) -> Recorder {
        let target = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections: Arc<Mutex<Vec<Connection>>> = Arc::default();
        let all = Arc::clone(&connections);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let server = TcpStream::connect(&target)
                    .unwrap_or_else(|e| panic!("cannot reach {target}: {e}"));
                let record = Arc::new(Mutex::new([Vec::new(), Vec::new()]));
                all.lock().unwrap().push(Arc::clone(&record));
                pump(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    Arc::clone(&record),
                    0,
                );
                pump(server, client, record, 1);
            }
        });
        Recorder { url, connections }
    }

    /// What clients sent (0) or the server answered (1), per connection.
    fn side(&self, side: usize) -> Vec<String> {
        self.connections
            .lock()
            .unwrap()
            .iter()
            .map(|c| String::from_utf8_lossy(&c.lock().unwrap()[side]).into_owned())
            .collect()
    }

    /// Each request's head and body, split at the request lines.
    fn requests(&self) -> Vec<String> {
        let mut requests = Vec::new();
        for text in self.side(0) {
            let mut starts: Vec<usize> = ["GET /", "PUT /", "POST /", "HEAD /", "DELETE /"]
                .iter()
                .flat_map(|m| text.match_indices(m).map(|(i, _)| i))
                .filter(|&i| i == 0 || text[..i].ends_with('\n'))
                .collect();
            starts.sort();
            starts.push(text.len());
            for pair in starts.windows(2) {
                requests.push(text[pair[0]..pair[1]].to_string());
            }
        }
        requests
    }

    /// The STS requests of `action` (AssumeRole, AssumeRoleWithWebIdentity).
    fn sts(&self, action: &str) -> Vec<String> {
        let marker = format!("Action={action}&");
        self.requests()
            .into_iter()
            .filter(|r| r.contains(&marker))
            .collect()
    }

    /// The access key ids STS handed out, in order.
    fn issued_keys(&self) -> Vec<String> {
        self.side(1)
            .iter()
            .flat_map(|text| {
                text.split("<AccessKeyId>")
                    .skip(1)
                    .map(|rest| rest.split('<').next().unwrap().to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, record: Connection, side: usize) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown(Shutdown::Write);
                    break;
                }
                Ok(n) => {
                    record.lock().unwrap()[side].extend_from_slice(&buf[..n]);
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
    });
}

/// The key id a request was signed with.
fn signed_by(request: &str) -> Option<String> {
    let lower = request.to_ascii_lowercase();
    let at = lower.find("authorization: aws4-hmac-sha256 credential=")?;
    let rest = &request[at + "authorization: aws4-hmac-sha256 credential=".len()..];
    Some(rest.split('/').next()?.to_string())
}

fn urlencoded(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The rich tree plus 20 MB of noise, so an entry takes several parts.
fn big_tree(root: &Path) {
    tree::rich(root);
    std::fs::write(root.join("pkg.mod/blob.bin"), tree::noise(7, 20_000_000)).unwrap();
}

/// A step against moto through `proxy`, logging in as the user that may
/// only assume roles. Path style is not set: the endpoint is an IP address.
fn moto_step<'a>(ws: &Path, backend: &'a Backend, root: &str) -> Step<'a> {
    Step::new(ws, backend, root)
        .unset("PLUGIN_PATH_STYLE")
        .set("PLUGIN_DEBUG", "true")
}

fn moto_backend(endpoint: &str) -> Backend {
    Backend::s3_at(
        endpoint.to_string(),
        env("LARDER_TEST_MOTO_BUCKET"),
        env("LARDER_TEST_MOTO_ACCESS_KEY"),
        env("LARDER_TEST_MOTO_SECRET_KEY"),
    )
}

/// What moto stored for `key`, read with boto3 as the cache role, and
/// whether the user's own keys are refused.
fn moto_object(key: &str) -> serde_json::Value {
    const SCRIPT: &str = r#"
import json, os
import boto3
kw = dict(endpoint_url=os.environ["EP"], region_name="us-east-1")
user = dict(aws_access_key_id=os.environ["AK"], aws_secret_access_key=os.environ["SK"])
bucket, key = os.environ["BUCKET"], os.environ["KEY"]
c = boto3.client("sts", **kw, **user).assume_role(
    RoleArn=os.environ["ROLE"], RoleSessionName="readback")["Credentials"]
s3 = boto3.client("s3", **kw, aws_access_key_id=c["AccessKeyId"],
                  aws_secret_access_key=c["SecretAccessKey"], aws_session_token=c["SessionToken"])
head = s3.head_object(Bucket=bucket, Key=key)
grants = s3.get_object_acl(Bucket=bucket, Key=key)["Grants"]
# (moto miscomputes boto3's signature of a prefix with '/'; list all.)
prefix = key.rsplit("/", 1)[0] + "/"
listed = [o for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []) if o["Key"].startswith(prefix)]
try:
    boto3.client("s3", **kw, **user).head_object(Bucket=bucket, Key=key)
    user_refused = False
except Exception as e:
    user_refused = "403" in str(e)
print(json.dumps({
    "sse": head.get("ServerSideEncryption"),
    "kms_key_id": head.get("SSEKMSKeyId"),
    "storage_class": head.get("StorageClass"),
    "grants": sorted(g["Grantee"].get("URI", "owner") + " " + g["Permission"] for g in grants),
    "objects": sorted(o["Key"] for o in listed),
    "user_refused": user_refused,
}))
"#;
    let output = Command::new(env("LARDER_TEST_PYTHON"))
        .args(["-c", SCRIPT])
        .env("EP", env("LARDER_TEST_MOTO_ENDPOINT"))
        .env("AK", env("LARDER_TEST_MOTO_ACCESS_KEY"))
        .env("SK", env("LARDER_TEST_MOTO_SECRET_KEY"))
        .env("ROLE", env("LARDER_TEST_MOTO_ROLE_ARN"))
        .env("BUCKET", env("LARDER_TEST_MOTO_BUCKET"))
        .env("KEY", key)
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "boto3 read-back failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON from the read-back")
}

fn assert_restores(step: &Step, original: &Path) {
    let fresh = workspace();
    let mut restore = Step::new(fresh.path(), step.backend, "unused");
    restore.env = step.env.clone();
    restore.env.retain(|(k, _)| k != "DRONE_WORKSPACE");
    restore
        .env
        .push(("DRONE_WORKSPACE".into(), fresh.path().display().to_string()));
    restore.workspace = fresh.path().to_path_buf();
    restore.restore().assert_code(0).assert_log("restore: hit");
    tree::assert_same(
        &tree::snapshot(&original.join("pkg.mod")),
        &tree::snapshot(&fresh.path().join("pkg.mod")),
    );
}

#[test]
fn assumed_role_writes_encrypted_entries_with_acl_and_storage_class() {
    let recorder = Recorder::start(&env("LARDER_TEST_MOTO_ENDPOINT"));
    let backend = moto_backend(&recorder.url);
    let root = unique_root("assume-role");
    let ws = workspace();
    big_tree(ws.path());
    let session = format!("larder-{}", uuid::Uuid::new_v4().simple());
    let external_id = format!("ext-{}", uuid::Uuid::new_v4().simple());
    // drone-cache's and the fork's variable names.
    let step = moto_step(ws.path(), &backend, &root)
        .set("AWS_ASSUME_ROLE_ARN", &env("LARDER_TEST_MOTO_ROLE_ARN"))
        .set("ASSUME_ROLE_SESSION_NAME", &session)
        .set("PLUGIN_EXTERNAL_ID", &external_id)
        .set("AWS_STS_ENDPOINT", &recorder.url)
        .set("AWS_ENCRYPTION", "aws:kms")
        .set("PLUGIN_KMS_KEY_ID", "alias/ci-cache")
        .set("AWS_ACL", "public-read")
        .set("PLUGIN_STORAGE_CLASS", "standard_ia");
    let run = step.rebuild();
    run.assert_code(0)
        .assert_log("rebuild: stored key")
        .assert_log("path style")
        .assert_log(&format!("as session {session}"));
    assert_restores(&step, ws.path());

    // STS was asked as the user, for the role, with session name and external id.
    let calls = recorder.sts("AssumeRole");
    assert!(!calls.is_empty(), "no AssumeRole call reached STS");
    for call in &calls {
        assert!(
            call.contains(&format!(
                "RoleArn={}",
                urlencoded(&env("LARDER_TEST_MOTO_ROLE_ARN"))
            )) && call.contains(&format!("RoleSessionName={session}"))
                && call.contains(&format!("ExternalId={external_id}"))
                && call.contains("DurationSeconds=3600"),
            "{call}"
        );
        assert_eq!(
            signed_by(call).as_deref(),
            Some(env("LARDER_TEST_MOTO_ACCESS_KEY").as_str())
        );
    }
    // Keys are cached: one AssumeRole per run, not one per request.
    assert_eq!(calls.len(), 2, "rebuild and restore each assume once");
    // Every S3 request was signed with keys STS issued.
    let issued = recorder.issued_keys();
    for request in recorder.requests() {
        if request.contains("Action=AssumeRole") {
            continue;
        }
        let key = signed_by(&request).unwrap_or_default();
        assert!(issued.contains(&key), "S3 request signed by {key:?}");
    }

    // What moto stored, read back as the role.
    let entry = format!("{root}/gomod-main.tar.gz");
    let stored = moto_object(&entry);
    assert_eq!(stored["sse"], "aws:kms", "{stored}");
    assert_eq!(stored["kms_key_id"], "alias/ci-cache", "{stored}");
    assert_eq!(stored["storage_class"], "STANDARD_IA", "{stored}");
    assert_eq!(
        stored["grants"],
        serde_json::json!([
            "http://acs.amazonaws.com/groups/global/AllUsers READ",
            "owner FULL_CONTROL"
        ]),
        "{stored}"
    );
    // Only the entry: the claim is gone, and nothing was written otherwise.
    assert_eq!(stored["objects"], serde_json::json!([entry]), "{stored}");
    // The user's own keys cannot read it: the run used the role's.
    assert_eq!(stored["user_refused"], true, "{stored}");

    // No secret in the log: not the user's secret key, the external id,
    // nor the role's secret key or session token.
    let answers = recorder.side(1).join("");
    let mut secrets = vec![env("LARDER_TEST_MOTO_SECRET_KEY"), external_id.clone()];
    for tag in ["SecretAccessKey", "SessionToken"] {
        for part in answers.split(&format!("<{tag}>")).skip(1) {
            secrets.push(part.split('<').next().unwrap().to_string());
        }
    }
    assert!(secrets.len() >= 4, "{secrets:?}");
    for secret in &secrets {
        assert!(
            !run.log().contains(secret.as_str()),
            "secret in log:\n{}",
            run.log()
        );
    }
}

#[test]
fn a_second_role_is_assumed_with_the_first_roles_keys() {
    let recorder = Recorder::start(&env("LARDER_TEST_MOTO_ENDPOINT"));
    let backend = moto_backend(&recorder.url);
    let ws = workspace();
    tree::rich(ws.path());
    // The hop role may only assume roles; only the second may use S3.
    let step = moto_step(ws.path(), &backend, &unique_root("user-role"))
        .set("PLUGIN_ASSUME_ROLE", &env("LARDER_TEST_MOTO_HOP_ROLE_ARN"))
        .set("PLUGIN_EXTERNAL_ID", "first-hop-id")
        .set("AWS_USER_ROLE_ARN", &env("LARDER_TEST_MOTO_ROLE_ARN"))
        .set("PLUGIN_USER_ROLE_EXTERNAL_ID", "second-hop-id")
        .set("PLUGIN_STS_ENDPOINT", &recorder.url);
    step.rebuild()
        .assert_code(0)
        .assert_log("rebuild: stored key")
        // The fork's default session name.
        .assert_log("as session drone-cache");
    let calls = recorder.sts("AssumeRole");
    let issued = recorder.issued_keys();
    let first = calls
        .iter()
        .position(|c| c.contains(&urlencoded(&env("LARDER_TEST_MOTO_HOP_ROLE_ARN"))))
        .expect("the first role was assumed");
    let second = calls
        .iter()
        .position(|c| c.contains(&urlencoded(&env("LARDER_TEST_MOTO_ROLE_ARN"))))
        .expect("the second role was assumed");
    assert!(calls[first].contains("ExternalId=first-hop-id"));
    assert!(calls[second].contains("ExternalId=second-hop-id"));
    assert_eq!(
        signed_by(&calls[first]).unwrap(),
        env("LARDER_TEST_MOTO_ACCESS_KEY")
    );
    // The second hop is signed with keys the first one got.
    let second_signer = signed_by(&calls[second]).unwrap();
    assert!(
        issued.contains(&second_signer) && second_signer != env("LARDER_TEST_MOTO_ACCESS_KEY"),
        "{second_signer} not among {issued:?}"
    );
    assert_restores(&step, ws.path());
}

#[test]
fn a_web_identity_token_is_exchanged_for_the_roles_keys() {
    // moto checks nothing here (see the module comment), so what is checked
    // is what larder sends: an unsigned call with the token, then S3
    // requests signed with the keys STS answered.
    let recorder = Recorder::start(&env("LARDER_TEST_MOTO_OPEN_ENDPOINT"));
    let backend = Backend::s3_at(
        recorder.url.clone(),
        env("LARDER_TEST_MOTO_BUCKET"),
        "unused".into(),
        "unused".into(),
    );
    let ws = workspace();
    tree::rich(ws.path());
    let token = format!(
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyZXBvOm9jdG8vaGVsbG8ifQ.{}",
        uuid::Uuid::new_v4().simple()
    );
    let step = moto_step(ws.path(), &backend, &unique_root("web-identity"))
        .unset("PLUGIN_ACCESS_KEY")
        .unset("PLUGIN_SECRET_KEY")
        .set(
            "PLUGIN_ASSUME_ROLE_ARN",
            "arn:aws:iam::123456789012:role/oidc-ci",
        )
        .set("PLUGIN_OIDC_TOKEN_ID", &token)
        .set("PLUGIN_STS_ENDPOINT", &recorder.url);
    let run = step.rebuild();
    run.assert_code(0)
        .assert_log("AssumeRoleWithWebIdentity")
        .assert_log("rebuild: stored key");
    assert!(!run.log().contains(&token), "token in log:\n{}", run.log());
    let calls = recorder.sts("AssumeRoleWithWebIdentity");
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(
        calls[0].contains(&format!("WebIdentityToken={token}"))
            && calls[0].contains("RoleSessionName=drone-cache"),
        "{}",
        calls[0]
    );
    assert_eq!(signed_by(&calls[0]), None, "web identity is not signed");
    let issued = recorder.issued_keys();
    assert_eq!(issued.len(), 1);
    let s3: Vec<String> = recorder
        .requests()
        .into_iter()
        .filter(|r| !r.contains("Action=AssumeRole"))
        .collect();
    assert!(!s3.is_empty());
    for request in s3 {
        assert_eq!(
            signed_by(&request).as_ref(),
            Some(&issued[0]),
            "{request:.300}"
        );
    }
}

#[test]
fn sts_refusals_name_the_role_and_hide_the_secrets() {
    let recorder = Recorder::start(&env("LARDER_TEST_MOTO_ENDPOINT"));
    let backend = moto_backend(&recorder.url);
    let ws = workspace();
    tree::rich(ws.path());
    let started = std::time::Instant::now();
    let run = moto_step(ws.path(), &backend, &unique_root("sts-refused"))
        .set("PLUGIN_SECRET_KEY", "definitely-the-wrong-secret")
        .set("PLUGIN_ASSUME_ROLE_ARN", &env("LARDER_TEST_MOTO_ROLE_ARN"))
        .set("PLUGIN_EXTERNAL_ID", "hidden-external-id")
        .set("PLUGIN_STS_ENDPOINT", &recorder.url)
        .rebuild();
    run.assert_code(1)
        .assert_log(&format!(
            "AssumeRole of {} (session drone-cache)",
            env("LARDER_TEST_MOTO_ROLE_ARN")
        ))
        .assert_log("SignatureDoesNotMatch")
        .assert_log("trust policy");
    for secret in ["definitely-the-wrong-secret", "hidden-external-id"] {
        assert!(
            !run.log().contains(secret),
            "{secret} in log:\n{}",
            run.log()
        );
    }
    // A refusal is not retried as if it might pass.
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    // Nor asked again for each request of the run.
    let calls = recorder.sts("AssumeRole");
    assert_eq!(calls.len(), 1, "{calls:#?}");
}

#[test]
fn ip_and_localhost_endpoints_use_path_style_unasked() {
    let backend = Backend::s3();
    let endpoint = backend.setting("PLUGIN_ENDPOINT").unwrap().to_string();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    let ws = workspace();
    tree::rich(ws.path());
    let root = unique_root("path-style");
    let step = Step::new(ws.path(), &backend, &root)
        .unset("PLUGIN_PATH_STYLE")
        .set("PLUGIN_DEBUG", "true");
    step.rebuild()
        .assert_code(0)
        .assert_log("path style")
        .assert_log("an IP address");
    // localhost, with the signed headers of encryption, ACL and storage
    // class (s3s-fs checks the signature and ignores what they ask).
    let localhost = endpoint.replace("127.0.0.1", "localhost");
    let fresh = workspace();
    Step::new(fresh.path(), &backend, &root)
        .unset("PLUGIN_PATH_STYLE")
        .set("PLUGIN_ENDPOINT", &localhost)
        .restore()
        .assert_code(0)
        .assert_log("restore: hit");
    let other = workspace();
    tree::rich(other.path());
    Step::new(other.path(), &backend, &unique_root("path-style-headers"))
        .unset("PLUGIN_PATH_STYLE")
        .set("PLUGIN_ENDPOINT", &localhost)
        .set("PLUGIN_ENCRYPTION", "AES256")
        .set("PLUGIN_ACL", "bucket-owner-full-control")
        .set("PLUGIN_STORAGE_CLASS", "REDUCED_REDUNDANCY")
        .rebuild()
        .assert_code(0)
        .assert_log("rebuild: stored key");
    // path_style: false cannot apply to an IP address; it is ignored, with a warning.
    Step::new(fresh.path(), &backend, &root)
        .set("PLUGIN_PATH_STYLE", "false")
        .restore()
        .assert_code(0)
        .assert_log("path_style: false is ignored");
}

/// The Azurite that takes bearer tokens (the step replaces the plain
/// Azurite's endpoint), with no account key: logins through the fake Entra only.
fn entra_backend() -> Backend {
    Backend::azure()
}

fn entra_step<'a>(ws: &Path, backend: &'a Backend, root: &str) -> Step<'a> {
    Step::new(ws, backend, root)
        .unset("PLUGIN_ACCOUNT_KEY")
        .set("PLUGIN_ENDPOINT", &env("LARDER_TEST_AZURE_OAUTH_ENDPOINT"))
        .set("PLUGIN_CA_CERT", &env("LARDER_TEST_CA_CERT"))
        .set("AZURE_TENANT_ID", "larder-tenant")
        .set("AZURE_AUTHORITY_HOST", &env("LARDER_TEST_ENTRA_AUTHORITY"))
        .set("PLUGIN_DEBUG", "true")
}

/// The fake Entra's requests from `client_id`.
fn entra_requests(client_id: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(env("LARDER_TEST_ENTRA_LOG"))
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|r| r["form"]["client_id"] == client_id || r["query"]["client_id"] == client_id)
        .collect()
}

fn client_id() -> String {
    format!("app-{}", uuid::Uuid::new_v4())
}

#[test]
fn azure_client_secret_round_trips_and_a_wrong_one_is_named() {
    let backend = entra_backend();
    let ws = workspace();
    tree::rich(ws.path());
    let id = client_id();
    let secret = env("LARDER_TEST_ENTRA_SECRET");
    // The fork's variable names.
    let step = entra_step(ws.path(), &backend, &unique_root("entra-secret"))
        .set("CLIENT_ID", &id)
        .set("CLIENT_SECRET", &secret);
    let run = step.rebuild();
    run.assert_code(0)
        .assert_log(&format!(
            "the client secret of {id} in tenant larder-tenant"
        ))
        .assert_log("rebuild: stored key");
    assert!(
        !run.log().contains(&secret),
        "secret in log:\n{}",
        run.log()
    );
    assert_restores(&step, ws.path());
    let requests = entra_requests(&id);
    assert!(!requests.is_empty());
    for request in &requests {
        assert_eq!(request["path"], "/larder-tenant/oauth2/v2.0/token");
        assert_eq!(request["form"]["client_secret"], secret.as_str());
        assert_eq!(
            request["form"]["scope"],
            "https://storage.azure.com/.default"
        );
    }
    // A wrong secret: Entra's answer, and no secret.
    let other = workspace();
    tree::rich(other.path());
    let run = entra_step(other.path(), &backend, &unique_root("entra-wrong"))
        .set("AZURE_CLIENT_ID", &client_id())
        .set("AZURE_CLIENT_SECRET", "wrong-client-secret")
        .rebuild();
    run.assert_code(1).assert_log("AADSTS7000215");
    assert!(!run.log().contains("wrong-client-secret"), "{}", run.log());
}

#[test]
fn azure_workload_identity_from_oidc_token_id_or_a_token_file() {
    let backend = entra_backend();
    let ws = workspace();
    tree::rich(ws.path());
    // The fork's oidc_token_id: the token itself.
    let id = client_id();
    let token = format!(
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjaSJ9.{}",
        uuid::Uuid::new_v4().simple()
    );
    let step = entra_step(ws.path(), &backend, &unique_root("entra-oidc"))
        .set("PLUGIN_AZURE_CLIENT_ID", &id)
        .set("PLUGIN_OIDC_TOKEN_ID", &token);
    let run = step.rebuild();
    run.assert_code(0)
        .assert_log("the token in oidc_token_id")
        .assert_log("rebuild: stored key");
    assert!(!run.log().contains(&token), "token in log:\n{}", run.log());
    assert_restores(&step, ws.path());
    let requests = entra_requests(&id);
    assert!(!requests.is_empty());
    for request in &requests {
        assert_eq!(request["path"], "/larder-tenant/oauth2/v2.0/token");
        assert_eq!(request["form"]["client_assertion"], token.as_str());
        assert_eq!(
            request["form"]["client_assertion_type"],
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        );
        assert!(request["form"].get("client_secret").is_none());
    }
    // AKS's variables: a token file.
    let id = client_id();
    let dir = workspace();
    let file = dir.path().join("azure-identity-token");
    let file_token = format!(
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJha3MifQ.{}",
        uuid::Uuid::new_v4().simple()
    );
    std::fs::write(&file, &file_token).unwrap();
    let other = workspace();
    tree::rich(other.path());
    entra_step(other.path(), &backend, &unique_root("entra-file"))
        .set("AZURE_CLIENT_ID", &id)
        .set("AZURE_FEDERATED_TOKEN_FILE", file.to_str().unwrap())
        .rebuild()
        .assert_code(0)
        .assert_log("workload identity")
        .assert_log("rebuild: stored key");
    let requests = entra_requests(&id);
    assert!(!requests.is_empty());
    assert!(
        requests
            .iter()
            .all(|r| r["form"]["client_assertion"] == file_token.as_str())
    );
}

#[test]
fn azure_managed_identity_round_trips() {
    let backend = entra_backend();
    let ws = workspace();
    tree::rich(ws.path());
    let id = client_id();
    let step = entra_step(ws.path(), &backend, &unique_root("entra-msi"))
        .unset("AZURE_TENANT_ID")
        .unset("AZURE_AUTHORITY_HOST")
        .set("PLUGIN_AZURE_MANAGED_IDENTITY", "true")
        .set("AZURE_CLIENT_ID", &id)
        .set(
            "IDENTITY_ENDPOINT",
            &format!("{}/msi/token", env("LARDER_TEST_ENTRA_AUTHORITY")),
        );
    step.rebuild()
        .assert_code(0)
        .assert_log(&format!("the managed identity {id}"))
        .assert_log("rebuild: stored key");
    assert_restores(&step, ws.path());
    let requests = entra_requests(&id);
    assert!(!requests.is_empty());
    for request in &requests {
        assert_eq!(request["path"], "/msi/token");
        assert_eq!(request["metadata"], "true");
        assert_eq!(request["query"]["resource"], "https://storage.azure.com");
    }
}

#[test]
fn a_stalled_sts_fails_within_the_timeout() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let sts = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let backend = moto_backend(&env("LARDER_TEST_MOTO_ENDPOINT"));
    let ws = workspace();
    tree::rich(ws.path());
    let started = std::time::Instant::now();
    let run = moto_step(ws.path(), &backend, &unique_root("sts-stalled"))
        .set("PLUGIN_ASSUME_ROLE_ARN", &env("LARDER_TEST_MOTO_ROLE_ARN"))
        .set("PLUGIN_STS_ENDPOINT", &sts)
        .set("PLUGIN_BACKEND_OPERATION_TIMEOUT", "2s")
        .rebuild();
    run.assert_code(1)
        .assert_log("AssumeRole of")
        .assert_log("backend_operation_timeout");
    let elapsed = started.elapsed();
    assert!(
        elapsed < std::time::Duration::from_secs(20),
        "gave up only after {elapsed:?}"
    );
}
