//! Parsed, not yet validated: each setting's typed value and where it came from.
//!
//! Precedence: command-line flag, then `PLUGIN_<NAME>`, then the aliases in
//! table order, then the default. An empty value counts as unset, because
//! Drone passes an empty string for a secret that does not exist.
//!
//! The runners spell a setting's variable differently: Drone upper-cases the
//! key and keeps its `-` and `.` (`restore-keys:` arrives as
//! `PLUGIN_RESTORE-KEYS`), Woodpecker also turns them into `_`
//! (`PLUGIN_RESTORE_KEYS`). Both are read as the `_` spelling.

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
        let env = PluginEnv::new(env)?;
        let mut values = HashMap::new();
        for setting in SETTINGS {
            if let Some(raw) = resolve_one(setting, flags, &env)? {
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

/// The name larder reads a variable under: `PLUGIN_` names with `-` or `.`
/// (Drone's spelling of a key written with them) as Woodpecker spells them,
/// with `_`. Other names are returned as they are.
pub fn canonical_env_name(var: &str) -> String {
    if var.starts_with("PLUGIN_") {
        var.replace(['-', '.'], "_")
    } else {
        var.to_string()
    }
}

/// The environment with both runners' spellings of a setting's variable.
struct PluginEnv<'a> {
    env: &'a HashMap<String, String>,
    /// `PLUGIN_RESTORE_KEYS` -> `PLUGIN_RESTORE-KEYS`, for each variable
    /// that is set (non-empty) only in a spelling other than the canonical one.
    respelled: HashMap<String, &'a str>,
}

impl<'a> PluginEnv<'a> {
    /// Fails when one setting is given in two spellings with different values.
    fn new(env: &'a HashMap<String, String>) -> Result<Self, SettingError> {
        let set = |var: &str| env.get(var).filter(|v| !v.trim().is_empty());
        let mut respelled: HashMap<String, &'a str> = HashMap::new();
        let mut names: Vec<&'a String> = env.keys().collect();
        names.sort();
        for var in names {
            let canonical = canonical_env_name(var);
            if canonical == *var || set(var).is_none() {
                continue;
            }
            let other = match respelled.get(&canonical) {
                Some(earlier) => Some(*earlier),
                None => set(&canonical).map(|_| canonical.as_str()),
            };
            if let Some(other) = other {
                if set(other) != set(var) {
                    return Err(SettingError::Conflict(format!(
                        "{other} and {var} are both set, to different values: they are one \
                         setting, written once with '_' and once with '-' or '.'; write it once"
                    )));
                }
                continue;
            }
            respelled.insert(canonical, var.as_str());
        }
        Ok(PluginEnv { env, respelled })
    }

    /// The non-empty value of `var` in any spelling, and the spelling that was set.
    fn get(&self, var: &str) -> Option<(&'a str, &'a str)> {
        let env = self.env;
        let found = |name: &'a str| {
            env.get(name)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (name, v.as_str()))
        };
        self.env
            .get_key_value(var)
            .and_then(|(name, _)| found(name.as_str()))
            .or_else(|| self.respelled.get(var).copied().and_then(found))
    }
}

fn resolve_one(
    setting: &'static Setting,
    flags: &HashMap<&'static str, String>,
    env: &PluginEnv<'_>,
) -> Result<Option<RawValue>, SettingError> {
    let from_flag = flags
        .get(setting.name)
        .map(|v| (v.as_str(), Source::Flag(setting.flag())));
    let from_env = setting.envs().into_iter().find_map(|var| {
        env.get(&var)
            .map(|(name, value)| (value, Source::Env(name.to_string())))
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
        Kind::List => Value::List(parse_list(text)?),
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

/// A list as the runners pass one. A YAML list of plain values arrives
/// joined with `,` (no escaping, so an item cannot contain a comma); a list
/// with a map or a list inside (Woodpecker: also a `from_secret` item)
/// arrives as JSON. Both are read; a JSON array is also the way to give an
/// item with a comma in it (`mount: '["a,b"]'`). Empty items are dropped.
fn parse_list(text: &str) -> Result<Vec<String>, String> {
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
        let setting = canonical.trim_start_matches("PLUGIN_").to_ascii_lowercase();
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

    /// What drone-runner-docker's encoder and Woodpecker's ParamsToEnv make
    /// of the YAML a user can write, read back as the list that was meant.
    #[test]
    fn lists_in_every_encoding_the_runners_produce() {
        let keys = find("restore_keys").unwrap();
        let list = |text: &str| match parse_value(keys, text) {
            Ok(Value::List(items)) => items,
            other => panic!("{text}: {other:?}"),
        };
        // [a, b] on both runners; [3, true] from unquoted YAML scalars.
        assert_eq!(list("gomod-main-,gomod-"), ["gomod-main-", "gomod-"]);
        assert_eq!(list("3,true"), ["3", "true"]);
        // Woodpecker: a list with a from_secret item arrives as JSON, secret resolved.
        assert_eq!(
            list(r#"["gomod-{{ .Commit.Branch }}-","gomod-"]"#),
            ["gomod-{{ .Commit.Branch }}-", "gomod-"]
        );
        // JSON numbers, booleans and nulls are plain values too.
        assert_eq!(list("[1, false, null, \" x \"]"), ["1", "false", "x"]);
        // A glob that only looks like JSON is split by commas as usual.
        assert_eq!(list("[ab]*,c"), ["[ab]*", "c"]);
        // An empty list: Woodpecker passes "", Drone "" too.
        assert!(list("[]").is_empty());
        // A map, or a list holding one, cannot be a list of paths or keys.
        let err = parse_value(keys, r#"["a",{"path":"b"}]"#).unwrap_err();
        assert!(err.contains("item 2 of the list is itself a map"), "{err}");
        let err = parse_value(keys, r#"{"path":"b"}"#).unwrap_err();
        assert!(err.contains("is a map"), "{err}");
    }

    #[test]
    fn drone_keeps_dashes_woodpecker_makes_underscores() {
        for var in [
            "PLUGIN_RESTORE-KEYS",
            "PLUGIN_RESTORE_KEYS",
            "PLUGIN_RESTORE.KEYS",
        ] {
            let e = env_of(&[(var, "a,b")]);
            let raw = RawSettings::resolve(&HashMap::new(), &e).unwrap();
            assert_eq!(raw.list("restore_keys"), ["a", "b"], "{var}");
            assert_eq!(raw.source("restore_keys"), Source::Env(var.into()));
            assert!(environment_warnings(&e).is_empty(), "{var}");
        }
        // Aliases are read in either spelling as well.
        let e = env_of(&[("PLUGIN_FAIL-RESTORE-IF-KEY-NOT-PRESENT", "true")]);
        let raw = RawSettings::resolve(&HashMap::new(), &e).unwrap();
        assert!(raw.bool("fail_on_miss"));
        // An empty dashed value does not hide the other spelling.
        let e = env_of(&[("PLUGIN_CACHE-KEY", ""), ("PLUGIN_CACHE_KEY", "k")]);
        let raw = RawSettings::resolve(&HashMap::new(), &e).unwrap();
        assert_eq!(raw.text("cache_key"), Some("k"));
        // The same value twice is fine; two different values are a conflict.
        let e = env_of(&[("PLUGIN_CACHE-KEY", "k"), ("PLUGIN_CACHE_KEY", "k")]);
        assert!(RawSettings::resolve(&HashMap::new(), &e).is_ok());
        let e = env_of(&[("PLUGIN_CACHE-KEY", "a"), ("PLUGIN_CACHE_KEY", "b")]);
        let err = RawSettings::resolve(&HashMap::new(), &e)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("PLUGIN_CACHE-KEY") && err.contains("PLUGIN_CACHE_KEY"),
            "{err}"
        );
        let e = env_of(&[("PLUGIN_CACHE-KEY", "a"), ("PLUGIN_CACHE.KEY", "b")]);
        assert!(RawSettings::resolve(&HashMap::new(), &e).is_err());
        // A typo with dashes is still reported under the setting's spelling.
        let warnings = environment_warnings(&env_of(&[("PLUGIN_CACHE-KEYS", "x")]));
        assert!(
            warnings[0].contains("PLUGIN_CACHE-KEYS") && warnings[0].contains("cache_key"),
            "{warnings:?}"
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
