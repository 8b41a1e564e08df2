//! Parsed, not yet validated: each setting's typed value and where it came from.
//!
//! Precedence: command-line flag, then `PLUGIN_<NAME>`, then the aliases in
//! table order, then the default. An empty value counts as unset, because
//! Drone passes an empty string for a secret that does not exist.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use super::defs::{Kind, SETTINGS, Setting, UNSUPPORTED};
use super::error::SettingError;

/// A value that must never reach a log. Its `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The real value, for handing to a storage client. Never format it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Bool(bool),
    Text(String),
    Secret(Secret),
    List(Vec<String>),
    Int(i64),
    Duration(Duration),
    Size(u64),
}

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

#[derive(Clone, Debug)]
pub struct RawValue {
    pub value: Value,
    pub source: Source,
}

/// Every setting that has a value, by name.
#[derive(Debug, Default)]
pub struct RawSettings {
    values: HashMap<&'static str, RawValue>,
}

impl RawSettings {
    /// Resolves every setting from command-line values and the environment.
    ///
    /// `flags` maps a setting name to the text given on the command line.
    pub fn resolve(
        flags: &HashMap<&'static str, String>,
        env: &HashMap<String, String>,
    ) -> Result<Self, SettingError> {
        let mut values = HashMap::new();
        for setting in SETTINGS {
            if let Some(raw) = resolve_one(setting, flags, env)? {
                values.insert(setting.name, raw);
            }
        }
        Ok(RawSettings { values })
    }

    pub fn get(&self, name: &str) -> Option<&RawValue> {
        self.values.get(name)
    }

    pub fn bool(&self, name: &str) -> bool {
        matches!(self.get(name).map(|r| &r.value), Some(Value::Bool(true)))
    }

    pub fn text(&self, name: &str) -> Option<&str> {
        match self.get(name).map(|r| &r.value) {
            Some(Value::Text(t)) => Some(t),
            _ => None,
        }
    }

    pub fn secret(&self, name: &str) -> Option<&Secret> {
        match self.get(name).map(|r| &r.value) {
            Some(Value::Secret(s)) => Some(s),
            _ => None,
        }
    }

    pub fn list(&self, name: &str) -> &[String] {
        match self.get(name).map(|r| &r.value) {
            Some(Value::List(l)) => l,
            _ => &[],
        }
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        match self.get(name).map(|r| &r.value) {
            Some(Value::Int(i)) => Some(*i),
            _ => None,
        }
    }

    pub fn duration(&self, name: &str) -> Option<Duration> {
        match self.get(name).map(|r| &r.value) {
            Some(Value::Duration(d)) => Some(*d),
            _ => None,
        }
    }

    pub fn size(&self, name: &str) -> Option<u64> {
        match self.get(name).map(|r| &r.value) {
            Some(Value::Size(s)) => Some(*s),
            _ => None,
        }
    }

    /// Where the value of `name` came from, for error messages.
    pub fn source(&self, name: &str) -> Source {
        self.get(name)
            .map(|r| r.source.clone())
            .unwrap_or(Source::Default)
    }
}

fn resolve_one(
    setting: &'static Setting,
    flags: &HashMap<&'static str, String>,
    env: &HashMap<String, String>,
) -> Result<Option<RawValue>, SettingError> {
    let from_flag = flags
        .get(setting.name)
        .map(|v| (v.as_str(), Source::Flag(setting.flag())));
    let from_env = setting.envs().into_iter().find_map(|var| {
        env.get(&var)
            .filter(|v| !v.trim().is_empty())
            .map(|v| (v.as_str(), Source::Env(var)))
    });
    let from_default = setting.default.map(|d| (d, Source::Default));
    let Some((text, source)) = from_flag
        .filter(|(v, _)| !v.trim().is_empty())
        .or(from_env)
        .or(from_default)
    else {
        return Ok(None);
    };
    let value = parse_value(setting, text).map_err(|problem| SettingError::Invalid {
        setting: setting.name,
        from: source.clone(),
        problem,
    })?;
    Ok(Some(RawValue { value, source }))
}

/// Parses one setting's text according to its kind. The error says what is
/// wrong with the text and what would be right, without repeating a secret.
pub fn parse_value(setting: &Setting, text: &str) -> Result<Value, String> {
    let text = text.trim();
    Ok(match setting.kind {
        Kind::Bool => Value::Bool(parse_bool(text)?),
        Kind::Text => Value::Text(text.to_string()),
        Kind::Secret => Value::Secret(Secret::new(text)),
        Kind::List => Value::List(parse_list(text)),
        Kind::Int => Value::Int(
            text.parse()
                .map_err(|_| format!("'{text}' is not a whole number"))?,
        ),
        Kind::Duration => Value::Duration(parse_duration(text)?),
        Kind::Size => Value::Size(
            text.parse::<bytesize::ByteSize>()
                .map_err(|_| format!("'{text}' is not a size; write e.g. 10GB or 500MiB"))?
                .as_u64(),
        ),
    })
}

fn parse_bool(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "t" | "1" | "yes" | "y" | "on" => Ok(true),
        "false" | "f" | "0" | "no" | "n" | "off" => Ok(false),
        _ => Err(format!("'{text}' is not a boolean; write true or false")),
    }
}

/// Splits `a,b` (how Drone passes a YAML list); also accepts a JSON array.
fn parse_list(text: &str) -> Vec<String> {
    if text.starts_with('[')
        && let Ok(items) = serde_json::from_str::<Vec<String>>(text)
    {
        return items
            .into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
    }
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Go-style durations (`90s`, `3m`, `1h30m`); a bare number means seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let duration = humantime::parse_duration(text)
        .map_err(|_| format!("'{text}' is not a duration; write e.g. 90s, 3m or 1h30m"))?;
    if duration.is_zero() {
        return Err("a timeout of zero would fail every request; write e.g. 3m".into());
    }
    Ok(duration)
}

/// Warnings for the environment: drone-cache settings larder ignores, and
/// `PLUGIN_*` names that are no setting at all (usually a typo).
pub fn environment_warnings(env: &HashMap<String, String>) -> Vec<String> {
    let known: Vec<String> = SETTINGS.iter().flat_map(|s| s.envs()).collect();
    let mut warnings = Vec::new();
    let mut names: Vec<&String> = env.keys().collect();
    names.sort();
    for var in names {
        if !var.starts_with("PLUGIN_") || known.contains(var) {
            continue;
        }
        if let Some((_, why)) = UNSUPPORTED.iter().find(|(name, _)| name == var) {
            warnings.push(format!(
                "{var} is a drone-cache setting larder does not support ({why}); it is ignored"
            ));
            continue;
        }
        let setting = var.trim_start_matches("PLUGIN_").to_ascii_lowercase();
        let hint = SETTINGS
            .iter()
            .map(|s| (strsim::jaro_winkler(&setting, s.name), s.name))
            .filter(|(score, _)| *score > 0.85)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, name)| format!(" (did you mean {name}?)"))
            .unwrap_or_default();
        warnings.push(format!(
            "setting '{setting}' ({var}) is not a larder setting{hint}; it is ignored"
        ));
    }
    warnings
}

/// An environment made of `pairs`, for tests that resolve settings.
#[cfg(test)]
pub fn env_of(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::defs::find;

    #[test]
    fn flag_beats_plugin_env_beats_alias_beats_default() {
        let e = env_of(&[("PLUGIN_BUCKET", "plugin"), ("S3_BUCKET", "alias")]);
        let raw = RawSettings::resolve(&HashMap::new(), &e).unwrap();
        assert_eq!(raw.text("bucket"), Some("plugin"));
        assert_eq!(raw.source("bucket"), Source::Env("PLUGIN_BUCKET".into()));

        let e = env_of(&[("S3_BUCKET", "alias")]);
        let raw = RawSettings::resolve(&HashMap::new(), &e).unwrap();
        assert_eq!(raw.text("bucket"), Some("alias"));

        let flags = HashMap::from([("bucket", "flag".to_string())]);
        let e = env_of(&[("PLUGIN_BUCKET", "plugin")]);
        let raw = RawSettings::resolve(&flags, &e).unwrap();
        assert_eq!(raw.text("bucket"), Some("flag"));
        assert_eq!(raw.source("bucket"), Source::Flag("bucket".into()));

        let raw = RawSettings::resolve(&HashMap::new(), &HashMap::new()).unwrap();
        assert_eq!(raw.text("backend"), Some("s3"));
        assert_eq!(raw.source("backend"), Source::Default);
    }

    #[test]
    fn empty_values_count_as_unset() {
        let e = env_of(&[("PLUGIN_SECRET_KEY", ""), ("AWS_SECRET_ACCESS_KEY", "real")]);
        let raw = RawSettings::resolve(&HashMap::new(), &e).unwrap();
        assert_eq!(raw.secret("secret_key").unwrap().expose(), "real");
    }

    #[test]
    fn lists_come_comma_separated_or_as_json() {
        let mount = find("mount").unwrap();
        assert_eq!(
            parse_value(mount, "a, b,,c").unwrap(),
            Value::List(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(
            parse_value(mount, r#"["x,y", "z"]"#).unwrap(),
            Value::List(vec!["x,y".into(), "z".into()])
        );
    }

    #[test]
    fn booleans_and_durations_explain_bad_input() {
        let restore = find("restore").unwrap();
        assert_eq!(parse_value(restore, "TRUE").unwrap(), Value::Bool(true));
        let err = parse_value(restore, "maybe").unwrap_err();
        assert!(err.contains("'maybe' is not a boolean"), "{err}");

        let timeout = find("backend_operation_timeout").unwrap();
        assert_eq!(
            parse_value(timeout, "1h30m").unwrap(),
            Value::Duration(Duration::from_secs(5400))
        );
        assert_eq!(
            parse_value(timeout, "45").unwrap(),
            Value::Duration(Duration::from_secs(45))
        );
        assert!(parse_value(timeout, "soon").is_err());
    }

    #[test]
    fn invalid_value_names_setting_and_source() {
        let e = env_of(&[("PLUGIN_RESTORE", "yes please")]);
        let err = RawSettings::resolve(&HashMap::new(), &e).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("restore"), "{msg}");
        assert!(msg.contains("PLUGIN_RESTORE"), "{msg}");
    }

    #[test]
    fn secrets_never_format() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
    }

    #[test]
    fn typos_and_unsupported_settings_are_reported() {
        let e = env_of(&[
            ("PLUGIN_CACHE_KEYS", "x"),
            ("PLUGIN_ACL", "private"),
            ("PLUGIN_MOUNT", "a"),
        ]);
        let warnings = environment_warnings(&e);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("did you mean cache_key"))
        );
        assert!(warnings.iter().any(|w| w.contains("PLUGIN_ACL")));
    }
}
