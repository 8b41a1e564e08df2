//! Where settings come from: the command line, then `PLUGIN_<NAME>`, then
//! the aliases in table order, then the default. An empty value counts as
//! unset, because Drone passes an empty string for a secret that does not
//! exist.
//!
//! The runners spell a setting's variable differently: Drone upper-cases the
//! key and keeps its `-` and `.` (`restore-keys:` arrives as
//! `PLUGIN_RESTORE-KEYS`), Woodpecker also turns them into `_`
//! (`PLUGIN_RESTORE_KEYS`). Both are read as the `_` spelling.

use std::collections::HashMap;

use super::error::SettingError;
use super::table::Setting;
use super::values::{Parse, Source, Sourced};

/// The command line and the environment, ready to be read setting by setting.
pub struct Sources<'a> {
    /// Setting name to the text given on the command line.
    flags: &'a HashMap<&'static str, String>,
    env: PluginEnv<'a>,
}

impl<'a> Sources<'a> {
    /// Fails when one setting is given in two spellings with different values.
    pub fn new(
        flags: &'a HashMap<&'static str, String>,
        env: &'a HashMap<String, String>,
    ) -> Result<Self, SettingError> {
        Ok(Sources {
            flags,
            env: PluginEnv::new(env)?,
        })
    }

    /// The text given for `setting` and where, default included.
    pub fn text(&self, setting: &'static Setting) -> Option<(&str, Source)> {
        let from_flag = self
            .flags
            .get(setting.name)
            .filter(|v| !v.trim().is_empty())
            .map(|v| (v.as_str(), Source::Flag(setting.flag())));
        from_flag
            .or_else(|| {
                setting.envs().into_iter().find_map(|var| {
                    self.env
                        .get(&var)
                        .map(|(name, value)| (value, Source::Env(name.to_string())))
                })
            })
            .or_else(|| setting.default.map(|d| (d, Source::Default)))
    }

    /// The value of a setting that may be absent.
    pub fn optional<T: Parse>(
        &self,
        setting: &'static Setting,
    ) -> Result<Option<Sourced<T>>, SettingError> {
        let Some((text, source)) = self.text(setting) else {
            return Ok(None);
        };
        let value = T::parse(setting, text.trim()).map_err(|problem| SettingError::Invalid {
            setting: setting.name,
            from: source.clone(),
            problem,
        })?;
        Ok(Some(Sourced {
            value,
            source,
            setting,
        }))
    }

    /// The value of a setting with a default, so always there.
    pub fn required<T: Parse>(
        &self,
        setting: &'static Setting,
    ) -> Result<Sourced<T>, SettingError> {
        self.optional(setting)?.ok_or_else(|| {
            SettingError::unusable(setting.name, "has no value and no default; set it")
        })
    }

    /// A list: empty when not given.
    pub fn list(&self, setting: &'static Setting) -> Result<Sourced<Vec<String>>, SettingError> {
        Ok(self.optional(setting)?.unwrap_or(Sourced {
            value: Vec::new(),
            source: Source::Default,
            setting,
        }))
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
    use crate::settings::check_names;
    use crate::settings::defs::{Values, find};
    use crate::settings::values::{Given, GivenText};
    use std::time::Duration;

    fn read(
        flags: &HashMap<&'static str, String>,
        env: &HashMap<String, String>,
    ) -> Result<Values, SettingError> {
        Values::read(&Sources::new(flags, env)?)
    }

    fn of_env(pairs: &[(&str, &str)]) -> Result<Values, SettingError> {
        read(&HashMap::new(), &env_of(pairs))
    }

    #[test]
    fn flag_beats_plugin_env_beats_alias_beats_default() {
        let v = of_env(&[("PLUGIN_BUCKET", "plugin"), ("S3_BUCKET", "alias")]).unwrap();
        assert_eq!(v.bucket.text(), Some("plugin"));
        assert_eq!(v.bucket.source(), Source::Env("PLUGIN_BUCKET".into()));

        let v = of_env(&[("S3_BUCKET", "alias")]).unwrap();
        assert_eq!(v.bucket.text(), Some("alias"));

        let flags = HashMap::from([("bucket", "flag".to_string())]);
        let v = read(&flags, &env_of(&[("PLUGIN_BUCKET", "plugin")])).unwrap();
        assert_eq!(v.bucket.text(), Some("flag"));
        assert_eq!(v.bucket.source(), Source::Flag("bucket".into()));

        let v = of_env(&[]).unwrap();
        assert_eq!(*v.backend, "s3");
        assert_eq!(v.backend.source, Source::Default);
    }

    #[test]
    fn empty_values_count_as_unset() {
        let v = of_env(&[("PLUGIN_SECRET_KEY", ""), ("AWS_SECRET_ACCESS_KEY", "real")]).unwrap();
        assert_eq!(v.secret_key.given().unwrap().expose(), "real");
    }

    fn list(setting: &str, text: &str) -> Result<Vec<String>, String> {
        Vec::<String>::parse(find(setting).unwrap(), text)
    }

    #[test]
    fn lists_come_comma_separated_or_as_json() {
        assert_eq!(list("mount", "a, b,,c").unwrap(), ["a", "b", "c"]);
        assert_eq!(list("mount", r#"["x,y", "z"]"#).unwrap(), ["x,y", "z"]);
    }

    /// What drone-runner-docker's encoder and Woodpecker's ParamsToEnv make
    /// of the YAML a user can write, read back as the list that was meant.
    #[test]
    fn lists_in_every_encoding_the_runners_produce() {
        let list = |text: &str| list("restore_keys", text).unwrap();
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
        let err = super::tests::list("restore_keys", r#"["a",{"path":"b"}]"#).unwrap_err();
        assert!(err.contains("item 2 of the list is itself a map"), "{err}");
        let err = super::tests::list("restore_keys", r#"{"path":"b"}"#).unwrap_err();
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
            let v = read(&HashMap::new(), &e).unwrap();
            assert_eq!(*v.restore_keys, ["a", "b"], "{var}");
            assert_eq!(v.restore_keys.source, Source::Env(var.into()));
            assert!(check_names(&e).unwrap().is_empty(), "{var}");
        }
        // Aliases are read in either spelling as well.
        let v = of_env(&[("PLUGIN_FAIL-RESTORE-IF-KEY-NOT-PRESENT", "true")]).unwrap();
        assert!(*v.fail_on_miss);
        // An empty dashed value does not hide the other spelling.
        let v = of_env(&[("PLUGIN_CACHE-KEY", ""), ("PLUGIN_CACHE_KEY", "k")]).unwrap();
        assert_eq!(v.cache_key.text(), Some("k"));
        // The same value twice is fine; two different values are a conflict.
        assert!(of_env(&[("PLUGIN_CACHE-KEY", "k"), ("PLUGIN_CACHE_KEY", "k")]).is_ok());
        let err = of_env(&[("PLUGIN_CACHE-KEY", "a"), ("PLUGIN_CACHE_KEY", "b")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("PLUGIN_CACHE-KEY") && err.contains("PLUGIN_CACHE_KEY"),
            "{err}"
        );
        assert!(of_env(&[("PLUGIN_CACHE-KEY", "a"), ("PLUGIN_CACHE.KEY", "b")]).is_err());
        // A typo with dashes is still reported under the setting's spelling.
        let err = check_names(&env_of(&[("PLUGIN_CACHE-KEYS", "x")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("PLUGIN_CACHE-KEYS") && err.contains("did you mean cache_key"),
            "{err}"
        );
    }

    #[test]
    fn booleans_durations_and_choices_explain_bad_input() {
        let restore = find("restore").unwrap();
        assert_eq!(bool::parse(restore, "TRUE"), Ok(true));
        let err = bool::parse(restore, "maybe").unwrap_err();
        assert!(err.contains("'maybe' is not a boolean"), "{err}");

        let timeout = find("backend_operation_timeout").unwrap();
        assert_eq!(
            Duration::parse(timeout, "1h30m"),
            Ok(Duration::from_secs(5400))
        );
        assert_eq!(Duration::parse(timeout, "45"), Ok(Duration::from_secs(45)));
        assert!(Duration::parse(timeout, "soon").is_err());

        let format = find("archive_format").unwrap();
        assert_eq!(<&str>::parse(format, "TAR.GZ"), Ok("gzip"));
        let err = <&str>::parse(format, "rar").unwrap_err();
        assert!(
            err.contains("'rar' is not one of gzip, zstd or tar"),
            "{err}"
        );
    }

    #[test]
    fn invalid_value_names_setting_and_source() {
        let err = of_env(&[("PLUGIN_RESTORE", "yes please")]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("restore"), "{msg}");
        assert!(msg.contains("PLUGIN_RESTORE"), "{msg}");
    }

    #[test]
    fn typos_stop_the_step_and_other_unknown_names_are_warnings() {
        for (typo, meant) in [
            ("PLUGIN_RESTOR", "restore"),
            ("PLUGIN_CAHCE_KEY", "cache_key"),
            ("PLUGIN_EXITCODE", "exit_code"),
        ] {
            let err = check_names(&env_of(&[(typo, "true")]))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("did you mean {meant}?")),
                "{typo}: {err}"
            );
        }
        let e = env_of(&[
            ("PLUGIN_S3_BUCKET_PUBLIC", "true"),
            ("PLUGIN_PRESERVE_METADATA", "true"),
            ("PLUGIN_ZEBRA", "x"),
            ("PLUGIN_MOUNT", "a"),
        ]);
        let warnings = check_names(&e).unwrap();
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("PLUGIN_S3_BUCKET_PUBLIC"))
        );
        assert!(warnings.iter().any(|w| w.contains("preserve_metadata")));
        assert!(warnings.iter().any(|w| w.contains("'zebra'")));
    }
}
