//! What a setting is: its names, kind, default, group and help. The
//! settings themselves are listed in `defs`.

/// How a setting's text is interpreted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `true`/`false` (also `1`/`0`, `yes`/`no`); a bare `--flag` means true.
    Bool,
    /// Free text.
    Text,
    /// Text that must never be printed: keys, passwords, tokens.
    Secret,
    /// A list: `mount: [a, b]` arrives comma-joined as `a,b`; a list holding
    /// a map (Woodpecker: a `from_secret` item) arrives as a JSON array.
    List,
    /// A whole number.
    Int,
    /// A duration such as `90s`, `3m`, `1h30m`, `14d`.
    Duration,
    /// A size such as `10GB`, `500MiB`.
    Size,
    /// One of a fixed set of words (case does not matter), each with the
    /// other spellings it accepts.
    Choice(&'static [Choice]),
}

/// One allowed value of a `Kind::Choice` setting.
#[derive(Debug, PartialEq, Eq)]
pub struct Choice {
    pub value: &'static str,
    /// Other spellings read as `value` (drone-cache's, common abbreviations).
    pub also: &'static [&'static str],
}

impl Choice {
    /// The value `text` names, if any.
    pub fn find(choices: &'static [Choice], text: &str) -> Option<&'static str> {
        let text = text.to_ascii_lowercase();
        choices
            .iter()
            .find(|c| c.value == text || c.also.contains(&text.as_str()))
            .map(|c| c.value)
    }

    /// `a, b or c`, for messages and help.
    pub fn list(choices: &[Choice]) -> String {
        let values: Vec<&str> = choices.iter().map(|c| c.value).collect();
        match values.split_last() {
            Some((last, [])) => last.to_string(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        }
    }
}

/// Where a setting is shown in `--help` and in the settings reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    Mode,
    Cache,
    Archive,
    Storage,
    S3,
    Filesystem,
    Sftp,
    Azure,
    Gcs,
    Output,
}

impl Group {
    pub const ALL: [Group; 10] = [
        Group::Mode,
        Group::Cache,
        Group::Archive,
        Group::Storage,
        Group::S3,
        Group::Filesystem,
        Group::Sftp,
        Group::Azure,
        Group::Gcs,
        Group::Output,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Group::Mode => "Mode",
            Group::Cache => "What to cache and under which key",
            Group::Archive => "Archive",
            Group::Storage => "Storage",
            Group::S3 => "S3 and S3-compatible storage (backend: s3)",
            Group::Filesystem => "Mounted volume (backend: filesystem)",
            Group::Sftp => "SFTP server (backend: sftp)",
            Group::Azure => "Azure Blob Storage (backend: azure)",
            Group::Gcs => "Google Cloud Storage (backend: gcs)",
            Group::Output => "Logging and failure handling",
        }
    }
}

/// One setting: its name, where its value may come from, and what it means.
#[derive(Debug)]
pub struct Setting {
    /// The key under `settings:`; the flag is `--` plus this with `-` for `_`.
    pub name: &'static str,
    /// Environment variables read after `PLUGIN_<NAME>`, in order.
    pub aliases: &'static [&'static str],
    /// Extra command-line spellings (drone-cache's dotted flag names).
    pub flag_aliases: &'static [&'static str],
    pub kind: Kind,
    /// Used when no source sets the setting; parsed like any user input.
    pub default: Option<&'static str>,
    pub group: Group,
    /// One paragraph of help: what it does, and what to write.
    pub help: &'static str,
}

impl Setting {
    /// The environment variable Drone and Woodpecker set from `settings:`.
    pub fn plugin_env(&self) -> String {
        format!("PLUGIN_{}", self.name.to_ascii_uppercase())
    }

    /// The command-line flag, without the leading dashes.
    pub fn flag(&self) -> String {
        self.name.replace('_', "-")
    }

    /// Every environment variable that can set this setting, in precedence order.
    pub fn envs(&self) -> Vec<String> {
        std::iter::once(self.plugin_env())
            .chain(self.aliases.iter().map(|a| a.to_string()))
            .collect()
    }
}
