//! Settings: each defined once (`defs`: its names, kind, default, allowed
//! values and help, and a typed field of `Values`), read from flags and the
//! environment (`sources`, `values`). `cli` generates `--help` and the
//! settings reference from the same table. Checking the values and turning
//! them into work is the job's (`crate::job`).

pub mod cli;
pub mod defs;
pub mod drone_cache;
pub mod error;
pub mod sources;
pub mod table;
pub mod values;

use std::collections::HashMap;

use defs::{SETTINGS, UNSUPPORTED};
use sources::{Sources, canonical_env_name};
use table::Kind;

pub use defs::Values;
pub use error::SettingError;

/// What the command line and environment say.
pub enum Loaded {
    /// Print this and exit successfully (`--help`, `--version`).
    Print(String),
    Run {
        values: Box<Values>,
        /// Things worth a warning that do not stop the run.
        warnings: Vec<String>,
        /// Every secret value given, to scrub from all output.
        secrets: Vec<String>,
    },
}

pub fn load(args: Vec<String>, env: &HashMap<String, String>) -> Result<Loaded, SettingError> {
    let flags = match cli::parse(args).map_err(SettingError::CommandLine)? {
        cli::Invocation::Print(text) => return Ok(Loaded::Print(text)),
        cli::Invocation::Run(flags) => flags,
    };
    let sources = Sources::new(&flags, env)?;
    let secrets = secrets(&sources);
    let values = Values::read(&sources)?;
    let warnings = check_names(env)?;
    Ok(Loaded::Run {
        values: Box::new(values),
        warnings,
        secrets,
    })
}

/// Every secret value given, to scrub from all output.
fn secrets(sources: &Sources<'_>) -> Vec<String> {
    SETTINGS
        .iter()
        .filter(|s| s.kind == Kind::Secret)
        .filter_map(|s| sources.text(s))
        .map(|(text, _)| text.trim().to_string())
        .collect()
}

/// Checks the `PLUGIN_*` names that are no larder setting. One that is
/// clearly a typo of a setting (`restor`, `cahce_key`) stops the step: a
/// misspelt mode or key would otherwise run with a default nobody chose.
/// drone-cache's settings that larder does not implement, and names close
/// to nothing, are warnings.
pub fn check_names(env: &HashMap<String, String>) -> Result<Vec<String>, SettingError> {
    let known: Vec<String> = SETTINGS.iter().flat_map(|s| s.envs()).collect();
    let mut warnings = Vec::new();
    let mut names: Vec<&String> = env.keys().collect();
    names.sort();
    for var in names {
        let canonical = canonical_env_name(var);
        if !var.starts_with("PLUGIN_") || known.contains(&canonical) {
            continue;
        }
        if let Some((_, why)) = UNSUPPORTED.iter().find(|(name, _)| *name == canonical) {
            warnings.push(format!(
                "{var} is a drone-cache setting larder does not support ({why}); it is ignored"
            ));
            continue;
        }
        if let Some(old) = drone_cache::by_env(&canonical) {
            warnings.push(format!(
                "{var} is drone-cache's setting {}, which larder does not use; it is ignored",
                old.name
            ));
            continue;
        }
        let setting = canonical.trim_start_matches("PLUGIN_").to_ascii_lowercase();
        let closest = SETTINGS
            .iter()
            .map(|s| (strsim::jaro_winkler(&setting, s.name), s.name))
            .filter(|(score, _)| *score > 0.85)
            .max_by(|a, b| a.0.total_cmp(&b.0));
        match closest {
            Some((_, name)) => {
                return Err(SettingError::Conflict(format!(
                    "setting '{setting}' ({var}) is not a larder setting; did you mean {name}? \
                     Correct the name in the step's settings"
                )));
            }
            None => warnings.push(format!(
                "setting '{setting}' ({var}) is not a larder setting; it is ignored"
            )),
        }
    }
    Ok(warnings)
}

/// The values an environment of `pairs` gives, for tests.
#[cfg(test)]
pub fn values_of(pairs: &[(&str, &str)]) -> Result<Values, SettingError> {
    let env = sources::env_of(pairs);
    Values::read(&sources::Sources::new(&HashMap::new(), &env)?)
}
