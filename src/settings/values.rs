//! Typed setting values, each with the setting it belongs to and where its
//! text came from, so a later check can name both in its message.

use std::fmt;
use std::ops::Deref;
use std::time::Duration;

use super::table::{Choice, Kind, Setting};
use crate::secret::Secret;

/// Where a value came from, so an error can point at the right line of the pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Flag(String),
    Env(String),
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(flag) => write!(f, "--{flag}"),
            Source::Env(var) => f.write_str(var),
            Source::Default => f.write_str("the default"),
        }
    }
}

/// A setting's value and its origin.
#[derive(Clone, Debug)]
pub struct Sourced<T> {
    pub value: T,
    pub source: Source,
    pub setting: &'static Setting,
}

impl<T> Deref for Sourced<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> Sourced<T> {
    pub fn name(&self) -> &'static str {
        self.setting.name
    }
}

/// Reading a setting that may be absent.
pub trait Given<T> {
    /// The value, if the setting was given (or has a default).
    fn given(&self) -> Option<&T>;
    /// Where the value came from; `Source::Default` when absent.
    fn source(&self) -> Source;
}

impl<T> Given<T> for Option<Sourced<T>> {
    fn given(&self) -> Option<&T> {
        self.as_ref().map(|s| &s.value)
    }

    fn source(&self) -> Source {
        self.as_ref().map_or(Source::Default, |s| s.source.clone())
    }
}

/// Text settings read as `&str`.
pub trait GivenText {
    fn text(&self) -> Option<&str>;
}

impl GivenText for Option<Sourced<String>> {
    fn text(&self) -> Option<&str> {
        self.as_ref().map(|s| s.value.as_str())
    }
}

/// Parses a setting's text into its Rust type. The error says what is wrong
/// with the text and what would be right, without repeating a secret.
pub trait Parse: Sized {
    fn parse(setting: &'static Setting, text: &str) -> Result<Self, String>;
}

impl Parse for bool {
    fn parse(_: &'static Setting, text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "true" | "t" | "1" | "yes" | "y" | "on" => Ok(true),
            "false" | "f" | "0" | "no" | "n" | "off" => Ok(false),
            _ => Err(format!("'{text}' is not a boolean; write true or false")),
        }
    }
}

impl Parse for String {
    fn parse(_: &'static Setting, text: &str) -> Result<Self, String> {
        Ok(text.to_string())
    }
}

impl Parse for Secret {
    fn parse(_: &'static Setting, text: &str) -> Result<Self, String> {
        Ok(Secret::new(text))
    }
}

impl Parse for i64 {
    fn parse(_: &'static Setting, text: &str) -> Result<Self, String> {
        text.parse()
            .map_err(|_| format!("'{text}' is not a whole number"))
    }
}

impl Parse for u64 {
    fn parse(_: &'static Setting, text: &str) -> Result<Self, String> {
        text.parse::<bytesize::ByteSize>()
            .map(|size| size.as_u64())
            .map_err(|_| format!("'{text}' is not a size; write e.g. 10GB or 500MiB"))
    }
}

impl Parse for Duration {
    /// Go-style durations (`90s`, `3m`, `1h30m`); a bare number means seconds.
    /// Zero is refused with a reason that fits the setting, except where it
    /// means something (`flush_age: 0s`: every entry is old enough).
    fn parse(setting: &'static Setting, text: &str) -> Result<Self, String> {
        let duration = match text.parse::<u64>() {
            Ok(secs) => Duration::from_secs(secs),
            Err(_) => humantime::parse_duration(text)
                .map_err(|_| format!("'{text}' is not a duration; write e.g. 90s, 3m or 1h30m"))?,
        };
        if duration.is_zero()
            && let Some(problem) = zero_duration_problem(setting)
        {
            return Err(problem);
        }
        Ok(duration)
    }
}

/// Why a duration setting cannot be zero, if it cannot.
fn zero_duration_problem(setting: &Setting) -> Option<String> {
    match setting.name {
        // Every entry is older than no time at all: flush deletes them all
        // (with dry_run, lists them), as max_size: 0 does.
        "flush_age" => None,
        name if name.ends_with("timeout") => Some(format!(
            "a {name} of zero would fail every request; write e.g. 3m"
        )),
        name => Some(format!(
            "{name} cannot be zero; write e.g. 90s, 3m or 1h30m"
        )),
    }
}

impl Parse for &'static str {
    fn parse(setting: &'static Setting, text: &str) -> Result<Self, String> {
        let Kind::Choice(choices) = setting.kind else {
            return Err(format!("{} is not a choice", setting.name));
        };
        Choice::find(choices, text)
            .ok_or_else(|| format!("'{text}' is not one of {}", Choice::list(choices)))
    }
}

impl Parse for Vec<String> {
    /// A list as the runners pass one. A YAML list of plain values arrives
    /// joined with `,` (no escaping, so an item cannot contain a comma); a
    /// list with a map or a list inside (Woodpecker: also a `from_secret`
    /// item) arrives as JSON. Both are read; a JSON array is also the way to
    /// give an item with a comma in it (`mount: '["a,b"]'`). Empty items
    /// are dropped.
    fn parse(_: &'static Setting, text: &str) -> Result<Self, String> {
        use serde_json::Value as Json;
        let json = match text.as_bytes().first() {
            Some(b'[' | b'{') => serde_json::from_str::<Json>(text).ok(),
            _ => None,
        };
        let items: Vec<String> = match json {
            Some(Json::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Json::String(s) => Ok(s),
                    Json::Number(n) => Ok(n.to_string()),
                    Json::Bool(b) => Ok(b.to_string()),
                    Json::Null => Ok(String::new()),
                    Json::Array(_) | Json::Object(_) => Err(format!(
                        "item {} of the list is itself a {}; each item must be a plain value \
                         such as a path or a key template",
                        i + 1,
                        if matches!(item, Json::Array(_)) {
                            "list"
                        } else {
                            "map"
                        }
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(Json::Object(_)) => {
                return Err("is a map; write a list, e.g. [a, b]".into());
            }
            _ => text.split(',').map(String::from).collect(),
        };
        Ok(items
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect())
    }
}

/// Checks that `text` is a valid value for `setting`, whatever its kind
/// (for defaults, and for `--help` users).
pub fn check(setting: &'static Setting, text: &str) -> Result<(), String> {
    match setting.kind {
        Kind::Bool => bool::parse(setting, text).map(drop),
        Kind::Text | Kind::Secret => Ok(()),
        Kind::List => Vec::<String>::parse(setting, text).map(drop),
        Kind::Int => i64::parse(setting, text).map(drop),
        Kind::Duration => Duration::parse(setting, text).map(drop),
        Kind::Size => u64::parse(setting, text).map(drop),
        Kind::Choice(_) => <&'static str>::parse(setting, text).map(drop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::defs::find;

    #[test]
    fn zero_durations_are_judged_by_the_setting() {
        let flush_age = find("flush_age").unwrap();
        assert_eq!(Duration::parse(flush_age, "0s"), Ok(Duration::ZERO));
        assert_eq!(Duration::parse(flush_age, "0"), Ok(Duration::ZERO));
        let timeout = find("backend_operation_timeout").unwrap();
        for zero in ["0s", "0"] {
            let problem = Duration::parse(timeout, zero).unwrap_err();
            assert!(
                problem.contains("backend_operation_timeout of zero would fail every request"),
                "{problem}"
            );
        }
        assert_eq!(Duration::parse(timeout, "90"), Ok(Duration::from_secs(90)));
        assert!(
            !Duration::parse(flush_age, "soon")
                .unwrap_err()
                .contains("timeout")
        );
    }
}
