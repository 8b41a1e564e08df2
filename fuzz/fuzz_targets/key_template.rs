//! Arbitrary text as `cache_key`: parsing must return a template or a
//! message, never panic or overflow the stack; rendering must give a key
//! that is already sanitized (one safe path segment, at most 200 bytes) or
//! a message.
//!
//! Rendering reads files (`checksum`, `hashFiles`), so it runs against a
//! small fixed workspace, and only for templates whose file arguments stay
//! inside it: no absolute paths, no `..`.
#![no_main]

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::sync::OnceLock;

use larder::key::functions::Function;
use larder::key::metadata::Field;
use larder::key::template::Context;
use larder::key::{self, KeyTemplate, Metadata, Template};
use libfuzzer_sys::fuzz_target;

struct Setup {
    _dir: tempfile::TempDir,
    ws: PathBuf,
    metadata: Metadata,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let dir = tempfile::tempdir_in(larder_fuzz::temp_root()).unwrap();
        let ws = dir.path().join("ws");
        for (rel, text) in [
            ("go.mod", "module example.com/x\n"),
            ("go.sum", "example.com/y v1.0.0 h1:abc=\n"),
            ("a/b/go.sum", "nested\n"),
            ("package-lock.json", "{}\n"),
            ("with space.txt", "space\n"),
            ("ünï.txt", "unicode\n"),
        ] {
            let path = ws.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        let env: HashMap<String, String> = [
            ("DRONE_COMMIT_BRANCH", "feature/x y"),
            ("DRONE_REPO", "octo/hello"),
            ("DRONE_REPO_NAME", "hello"),
            ("CI_COMMIT_SHA", "0123456789abcdef"),
            ("DRONE_BUILD_NUMBER", "42"),
            ("DRONE_BUILD_EVENT", ""),
            (
                "DRONE_COMMIT_MESSAGE",
                "fix: ünïcode {{ .Commit.Branch }}\n(two lines)",
            ),
            ("CI_COMMIT_AUTHOR_EMAIL", "a@example.com"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Setup {
            _dir: dir,
            ws,
            metadata: Metadata::from_env(&env),
        }
    })
}

/// A file argument that stays inside the workspace.
fn inside(arg: &str) -> bool {
    !arg.starts_with('/') && !arg.split('/').any(|part| part == "..") && !arg.contains('\0')
}

/// Renders like larder does, but refuses to run a function on an argument
/// that could leave the workspace.
struct Guarded<'a> {
    setup: &'a Setup,
    refused: RefCell<bool>,
}

impl Context for Guarded<'_> {
    fn field(&self, field: &Field) -> Result<String, String> {
        self.setup
            .metadata
            .get(field)
            .map(str::to_string)
            .ok_or_else(|| format!("{} unset", field.path))
    }

    fn call(&self, function: Function, args: &[String]) -> Result<String, String> {
        if !args.iter().all(|a| inside(a)) {
            *self.refused.borrow_mut() = true;
            return Err("refused".into());
        }
        function.call(&self.setup.ws, args)
    }
}

fuzz_target!(
    init: larder_fuzz::write_seeds(larder_fuzz::seeds::key_templates),
    |data: &[u8]| {
        let source = String::from_utf8_lossy(data);
        let parsed = KeyTemplate::parse(&source);
        let template = Template::parse(&source);
        assert_eq!(parsed.is_ok(), template.is_ok(), "KeyTemplate and Template disagree");
        let (key, template) = match (parsed, template) {
            (Ok(key), Ok(template)) => (key, template),
            (Err(message), _) => {
                assert!(!message.trim().is_empty(), "a parse error without a message");
                return;
            }
            _ => unreachable!(),
        };
        let setup = setup();
        let guarded = Guarded {
            setup,
            refused: RefCell::new(false),
        };
        let _ = template.render(&guarded);
        if guarded.refused.into_inner() {
            return;
        }
        match key.render(&setup.metadata, &setup.ws) {
            Ok(rendered) => {
                assert!(!rendered.is_empty() && rendered.len() <= 200, "bad key length: {rendered:?}");
                assert!(!rendered.starts_with('.'), "hidden key: {rendered:?}");
                assert!(
                    rendered
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-+=@".contains(c)),
                    "unsafe key: {rendered:?}"
                );
                assert_eq!(key::sanitize(&rendered).as_deref(), Ok(rendered.as_str()));
            }
            Err(message) => assert!(!message.trim().is_empty(), "a render error without a message"),
        }
    }
);
