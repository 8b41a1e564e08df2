//! Settings: each defined once (`defs`: its names, kind, default, allowed
//! values and help, and a typed field of `Values`), read from flags and the
//! environment (`sources`, `values`). `cli` generates `--help` and the
//! settings reference from the same table. Checking the values and turning
//! them into work is the job's (`crate::job`).

pub mod cli;
pub mod defs;
pub mod error;
pub mod sources;
pub mod values;

use std::collections::HashMap;

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
    let sources = sources::Sources::new(&flags, env)?;
    let secrets = sources.secrets();
    let values = Values::read(&sources)?;
    let warnings = sources::environment_warnings(env);
    Ok(Loaded::Run {
        values: Box::new(values),
        warnings,
        secrets,
    })
}

/// The values an environment of `pairs` gives, for tests.
#[cfg(test)]
pub fn values_of(pairs: &[(&str, &str)]) -> Result<Values, SettingError> {
    let env = sources::env_of(pairs);
    Values::read(&sources::Sources::new(&HashMap::new(), &env)?)
}
