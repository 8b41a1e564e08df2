//! Settings: defined once (`defs`), parsed from flags and environment
//! (`raw`), validated into a `Config` (`config`). `cli` generates `--help`
//! and the settings reference from the same table.

pub mod backends;
pub mod cli;
pub mod config;
pub mod defs;
pub mod error;
pub mod raw;

use std::collections::HashMap;
use std::path::Path;

pub use config::{Config, Mode};
pub use error::SettingError;
pub use raw::Secret;

use crate::key::Metadata;
use raw::RawSettings;

/// The result of reading the command line and environment.
pub enum Loaded {
    /// Print this and exit successfully (`--help`, `--version`).
    Print(String),
    Run {
        config: Box<Config>,
        /// Things worth a warning that do not stop the run.
        warnings: Vec<String>,
        /// Every secret value given, to scrub from all output.
        secrets: Vec<String>,
    },
}

pub fn load(
    args: Vec<String>,
    env: &HashMap<String, String>,
    cwd: &Path,
) -> Result<Loaded, SettingError> {
    let flags = match cli::parse(args).map_err(SettingError::CommandLine)? {
        cli::Invocation::Print(text) => return Ok(Loaded::Print(text)),
        cli::Invocation::Run(flags) => flags,
    };
    let raw = RawSettings::resolve(&flags, env)?;
    let secrets = defs::SETTINGS
        .iter()
        .filter_map(|s| raw.secret(s.name))
        .map(|s| s.expose().to_string())
        .collect();
    let mut warnings = raw::environment_warnings(env);
    warnings.extend(backends::warnings(&raw));
    let config = Config::from_raw(&raw, Metadata::from_env(env), cwd)?;
    Ok(Loaded::Run {
        config: Box::new(config),
        warnings,
        secrets,
    })
}
