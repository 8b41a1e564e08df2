//! One run, from settings to exit code.
//!
//! Exit codes: 0 for success, a miss or a skipped upload; 2 for a
//! configuration error (the pipeline must be fixed); 1 for a failed restore
//! or rebuild when `exit_code` is true. With `exit_code` false (the default,
//! as in drone-cache) a failure is a loud warning and the step still passes,
//! because a cache problem should slow a build down, not break it.

use std::collections::HashMap;
use std::time::Duration;

use tracing::{debug, error, info, warn};

use crate::mode::Keys;
use crate::mount::MountSpec;
use crate::result::{self, Outcome, Report};
use crate::settings::{self, Config, Loaded, Mode};
use crate::storage::Store;
use crate::{interrupt, logging, mode};

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_CONFIG: u8 = 2;

pub fn main() -> u8 {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let env: HashMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let cwd = match std::env::current_dir() {
        Ok(cwd) => cwd,
        Err(e) => {
            eprintln!("larder: cannot determine the current directory: {e}");
            return EXIT_CONFIG;
        }
    };
    let (config, warnings, secrets) = match settings::load(args, &env, &cwd) {
        Ok(Loaded::Print(text)) => {
            print!("{text}");
            return EXIT_OK;
        }
        Ok(Loaded::Run {
            config,
            warnings,
            secrets,
        }) => (config, warnings, secrets),
        Err(e) => {
            let text = logging::scrub(&e.to_string(), &secret_values(&env));
            eprintln!("larder: configuration error: {text}");
            eprintln!("larder: see `larder --help` or docs/settings.md for every setting");
            return EXIT_CONFIG;
        }
    };
    logging::init(config.log_level, secrets);
    for warning in warnings {
        warn!("{warning}");
    }
    run(&config)
}

/// Secret-looking values straight from the environment, for scrubbing an
/// error raised before the settings were fully read.
fn secret_values(env: &HashMap<String, String>) -> Vec<String> {
    let names: Vec<String> = settings::defs::SETTINGS
        .iter()
        .filter(|s| s.kind == settings::defs::Kind::Secret)
        .flat_map(|s| s.envs())
        .collect();
    env.iter()
        .filter(|(var, _)| names.contains(&settings::raw::canonical_env_name(var)))
        .map(|(_, value)| value.clone())
        .filter(|v| v.len() >= 3)
        .collect()
}

fn run(config: &Config) -> u8 {
    let keys = match render_keys(config) {
        Ok(keys) => keys,
        Err(problem) => {
            error!("{problem}");
            return EXIT_CONFIG;
        }
    };
    let what = match config.mode {
        Mode::Flush => "old entries".to_string(),
        _ if config.mounts.is_empty() => "the whole entry".to_string(),
        _ => config
            .mounts
            .iter()
            .map(MountSpec::text)
            .collect::<Vec<_>>()
            .join(", "),
    };
    let key = match config.mode {
        Mode::Flush => String::new(),
        _ => format!(" with key '{}'", keys.key),
    };
    info!(
        "larder {}: {} of {what}{key} under '{}'",
        env!("CARGO_PKG_VERSION"),
        config.mode,
        config.remote_root
    );
    debug!("configuration: {config:?}");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            error!("cannot start the async runtime: {e}");
            return EXIT_FAILED;
        }
    };
    let result = runtime.block_on(async {
        interrupt::listen();
        let store = Store::open(&config.storage, config.timeout).await?;
        mode::run(config, &store, &keys).await
    });
    // Do not wait for background work (a claim renewal) once the result is known.
    runtime.shutdown_timeout(Duration::from_secs(5));
    let report = match &result {
        Ok(report) => report.clone(),
        Err(e) => {
            let mut report = Report::new(config.mode, Outcome::Failed);
            report.key = (config.mode != Mode::Flush).then(|| keys.key.clone());
            report.error = Some(format!("{e:#}"));
            report
        }
    };
    if let Some(path) = &config.result_file {
        match result::write(path, &report) {
            Ok(()) => debug!("wrote the result to {}", path.display()),
            Err(e) => warn!("could not write result_file {}: {e}", path.display()),
        }
    }
    match result {
        Ok(report) if report.result == Outcome::Miss && config.fail_on_miss => {
            error!("restore found no entry and fail_on_miss is true");
            EXIT_FAILED
        }
        Ok(_) => EXIT_OK,
        Err(e) if config.exit_code => {
            error!("{} failed: {e:#}", config.mode);
            EXIT_FAILED
        }
        Err(e) => {
            warn!("{} failed: {e:#}", config.mode);
            warn!(
                "the step still succeeds because exit_code is false; set exit_code: true \
                 to fail the build when the cache fails"
            );
            EXIT_OK
        }
    }
}

/// Renders `cache_key` and the restore keys; an error names the setting.
fn render_keys(config: &Config) -> Result<Keys, String> {
    if config.mode == Mode::Flush {
        return Ok(Keys {
            key: String::new(),
            restore_prefixes: Vec::new(),
        });
    }
    let render = |setting: &str, template: &crate::key::KeyTemplate| {
        template
            .render(&config.metadata, &config.workspace)
            .map_err(|problem| {
                format!(
                    "setting {setting}: '{}' cannot be rendered: {problem}",
                    template.source
                )
            })
    };
    let key = render("cache_key", &config.key)?;
    let restore_prefixes = match config.mode {
        Mode::Restore => config
            .restore_keys
            .iter()
            .map(|t| render("restore_keys", t))
            .collect::<Result<_, _>>()?,
        _ => Vec::new(),
    };
    Ok(Keys {
        key,
        restore_prefixes,
    })
}
