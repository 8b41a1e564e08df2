//! Configuration errors. Each names the setting, where its value came from
//! and what to write instead; `main` turns them into exit code 2.

use super::values::Source;

#[derive(Debug, thiserror::Error)]
pub enum SettingError {
    /// A value that does not parse as its kind.
    #[error("setting {setting} (from {from}): {problem}")]
    Invalid {
        setting: &'static str,
        from: Source,
        problem: String,
    },
    /// A value that parses but cannot be used, or a missing required value.
    #[error("setting {setting}: {problem}")]
    Unusable {
        setting: &'static str,
        problem: String,
    },
    /// Settings that contradict each other.
    #[error("{0}")]
    Conflict(String),
    /// A bad command line; clap's message says what and how.
    #[error("{0}")]
    CommandLine(String),
}

impl SettingError {
    pub fn unusable(setting: &'static str, problem: impl Into<String>) -> Self {
        SettingError::Unusable {
            setting,
            problem: problem.into(),
        }
    }
}
