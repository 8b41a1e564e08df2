//! One run, from the process to its exit code: the only place that reads
//! the process's environment, arguments and signals, and the only place
//! that decides the exit code.
//!
//! Exit codes: 0 for success, a miss or a skipped upload; 2 for a
//! configuration error (the pipeline must be fixed); 1 for a failed restore
//! or rebuild when `exit_code` is true. With `exit_code` false (the default,
//! as in drone-cache) a failure is a loud warning and the step still passes,
//! because a cache problem should slow a build down, not break it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use tracing::{debug, error, info, warn};

use crate::cancel::{self, Cancel};
use crate::describe::{self, Given};
use crate::job::{self, Job, JobError, Mode, Process, Task};
use crate::logging::Format;
use crate::mount::MountSpec;
use crate::settings::{self, Loaded, SettingError};
use crate::storage::Store;
use crate::summary::{self, Outcome, Summary};
use crate::{logging, mode, progress};

/// How often a long transfer logs its progress, e.g. `100ms`, `30s`; `0` or
/// `off` for never. Not a setting: tests shorten it, nobody else needs to.
pub const PROGRESS_INTERVAL_VAR: &str = "LARDER_PROGRESS_INTERVAL";

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_CONFIG: u8 = 2;

pub fn main() -> u8 {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let process = match read_process() {
        Ok(process) => process,
        Err(problem) => {
            eprintln!("larder: {problem}");
            return EXIT_CONFIG;
        }
    };
    let (values, mut warnings, secrets) = match settings::load(args.clone(), &process.env) {
        Ok(Loaded::Print(text)) => {
            print!("{text}");
            return EXIT_OK;
        }
        Ok(Loaded::Run {
            values,
            warnings,
            secrets,
        }) => (values, warnings, secrets),
        Err(e) => {
            let format = format_before_settings(&args, &process.env);
            return configuration_error(&e, format, &secret_values(&process.env, &args));
        }
    };
    let format = Format::named(*values.log_format);
    let job = match Job::new(&values, &process) {
        Ok(job) => job,
        Err(JobError::Setting(e)) => return configuration_error(&e, format, &secrets),
        Err(JobError::Unrenderable {
            mode,
            exit_code,
            result_file,
            message,
        }) => {
            logging::init(
                tracing::Level::INFO,
                format,
                secrets,
                vec![("mode", mode.to_string())],
            );
            let mut summary = Summary::new(mode, Outcome::Failed);
            summary.error = Some(message.clone());
            logging::summary(&summary);
            write_summary(result_file.as_deref(), &summary);
            return failed(mode, exit_code, &anyhow::anyhow!(message));
        }
    };
    match progress_interval(&process.env) {
        Ok(interval) => progress::set_interval(interval),
        Err(problem) => warnings.push(problem),
    }
    let context = std::iter::once(("mode", job.mode().to_string()))
        .chain(job.key().map(|key| ("key", key.to_string())))
        .collect();
    logging::init(job.log_level, format, secrets, context);
    let job_warnings = job::storage::warnings(&values);
    for warning in warnings.iter().chain(&job_warnings).chain(&job.notes) {
        warn!("{warning}");
    }
    if tracing::enabled!(tracing::Level::DEBUG) {
        let given = Given::read(args, &process.env);
        for line in
            given
                .lines()
                .into_iter()
                .chain(describe::job(&job, &values, &given, &process.env))
        {
            debug!("{line}");
        }
    }
    run(&job)
}

/// `LARDER_PROGRESS_INTERVAL`, if set: `None` turns progress lines off.
fn progress_interval(env: &HashMap<String, String>) -> Result<Option<Duration>, String> {
    let default = Some(progress::DEFAULT_INTERVAL);
    let Some(text) = env.get(PROGRESS_INTERVAL_VAR).map(|t| t.trim()) else {
        return Ok(default);
    };
    let parsed = match text {
        "" => return Ok(default),
        "off" | "never" => Ok(Duration::ZERO),
        _ => text
            .parse::<u64>()
            .map(Duration::from_secs)
            .or_else(|_| humantime::parse_duration(text)),
    };
    match parsed {
        Ok(interval) if interval.is_zero() => Ok(None),
        Ok(interval) => Ok(Some(interval)),
        Err(_) => Err(format!(
            "{PROGRESS_INTERVAL_VAR} is '{text}', not a duration such as 10s; progress is \
             logged every {}",
            humantime::format_duration(progress::DEFAULT_INTERVAL)
        )),
    }
}

/// Whether a configuration error should be a JSON line, when the settings
/// could not be read: `log_format` from the flags or the environment, as
/// far as it can be told.
fn format_before_settings(args: &[String], env: &HashMap<String, String>) -> Format {
    let mut from_flags = None;
    for (i, arg) in args.iter().enumerate() {
        let inline = ["--log-format=", "--log.format="]
            .iter()
            .find_map(|prefix| arg.strip_prefix(prefix));
        if inline.is_some() {
            from_flags = inline;
        } else if arg == "--log-format" || arg == "--log.format" {
            from_flags = args.get(i + 1).map(String::as_str);
        }
    }
    let from_env = || {
        let setting = settings::defs::find("log_format")?;
        let names = setting.envs();
        env.iter()
            .filter(|(var, _)| names.contains(&settings::sources::canonical_env_name(var)))
            .map(|(_, value)| value.as_str())
            .find(|value| !value.trim().is_empty())
    };
    from_flags
        .or_else(from_env)
        .map(|value| Format::named(value.trim()))
        .unwrap_or_default()
}

/// The process's environment, working directory, host name and user.
fn read_process() -> Result<Process, String> {
    let env: HashMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let cwd = std::env::current_dir()
        .map_err(|e| format!("cannot determine the current directory: {e}"))?;
    let hostname = env
        .get("HOSTNAME")
        .cloned()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let home = env.get("HOME").map(PathBuf::from);
    Ok(Process {
        known_hosts_files: job::storage::known_hosts_files(home.as_deref()),
        root: rustix::process::geteuid().is_root(),
        hostname,
        cwd,
        env,
    })
}

fn configuration_error(error: &SettingError, format: Format, secrets: &[String]) -> u8 {
    logging::early_error(
        format,
        &format!("configuration error: {error}"),
        "see `larder --help` or docs/settings.md for every setting",
        secrets,
    );
    EXIT_CONFIG
}

/// Secret values straight from the environment and the command line, for
/// scrubbing an error raised before the settings were fully read.
fn secret_values(env: &HashMap<String, String>, args: &[String]) -> Vec<String> {
    let secret_settings = || {
        settings::defs::SETTINGS
            .iter()
            .filter(|s| s.kind == settings::table::Kind::Secret)
    };
    let names: Vec<String> = secret_settings().flat_map(|s| s.envs()).collect();
    let flags: Vec<String> = secret_settings()
        .flat_map(|s| std::iter::once(s.flag()).chain(s.flag_aliases.iter().map(|f| f.to_string())))
        .map(|f| format!("--{f}"))
        .collect();
    let from_env = env
        .iter()
        .filter(|(var, _)| names.contains(&settings::sources::canonical_env_name(var)))
        .map(|(_, value)| value.clone());
    // `--secret-key=x` and `--secret-key x`, wherever they stand (also after `--`).
    let from_args = args.iter().enumerate().filter_map(|(i, arg)| {
        let (flag, value) = match arg.split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_string())),
            None => (arg.as_str(), args.get(i + 1).cloned()),
        };
        flags.iter().any(|f| f == flag).then_some(value).flatten()
    });
    from_env.chain(from_args).filter(|v| v.len() >= 3).collect()
}

fn run(job: &Job) -> u8 {
    info!(
        "larder {}: {} of {}{} under '{}'",
        env!("CARGO_PKG_VERSION"),
        job.mode(),
        what(job),
        job.key()
            .map(|key| format!(" with key '{key}'"))
            .unwrap_or_default(),
        job.remote_root
    );
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
    let cancel = Cancel::new();
    let result = runtime.block_on(async {
        cancel::listen(cancel.clone());
        let store = Store::open(&job.storage, job.timeout, &job.remote_root).await?;
        debug!(
            "storage: {} {}, entries under '{}'",
            store.backend, store.location, store.root
        );
        mode::run(job, &store, &cancel).await
    });
    // Do not wait for background work (a claim renewal) once the result is known.
    runtime.shutdown_timeout(Duration::from_secs(5));
    let report = match &result {
        Ok(report) => report.clone(),
        Err(e) => {
            let mut report = Summary::new(job.mode(), Outcome::Failed);
            report.key = job.key().map(str::to_string);
            report.error = Some(format!("{e:#}"));
            report
        }
    };
    logging::summary(&report);
    write_summary(job.result_file.as_deref(), &report);
    exit_code(job, result)
}

/// What the step was asked to cache, for the first log line.
fn what(job: &Job) -> String {
    let mounts = match &job.task {
        Task::Flush(_) => return "old entries".to_string(),
        Task::Export(task) => return format!("the entry, into {}", task.output.display()),
        Task::Restore(task) => &task.mounts,
        Task::Rebuild(task) => &task.mounts,
    };
    if mounts.is_empty() {
        return "the whole entry".to_string();
    }
    mounts
        .iter()
        .map(MountSpec::text)
        .collect::<Vec<_>>()
        .join(", ")
}

fn exit_code(job: &Job, result: anyhow::Result<Summary>) -> u8 {
    let fail_on_miss = matches!(&job.task, Task::Restore(task) if task.fail_on_miss);
    match result {
        Ok(report) if report.result == Outcome::Miss && fail_on_miss => {
            error!("restore found no entry and fail_on_miss is true");
            EXIT_FAILED
        }
        Ok(_) => EXIT_OK,
        Err(e) => failed(job.mode(), job.exit_code, &e),
    }
}

/// A failed restore, rebuild or flush: exit 1 with `exit_code`, else a
/// warning and exit 0, so a cache problem slows a build but never breaks it.
fn failed(mode: Mode, exit_code: bool, error: &anyhow::Error) -> u8 {
    if exit_code {
        error!("{mode} failed: {error:#}");
        return EXIT_FAILED;
    }
    warn!("{mode} failed: {error:#}");
    warn!(
        "the step still succeeds because exit_code is false; set exit_code: true \
         to fail the build when the cache fails"
    );
    EXIT_OK
}

fn write_summary(path: Option<&std::path::Path>, summary: &Summary) {
    let Some(path) = path else { return };
    match summary::write(path, summary) {
        Ok(()) => debug!("wrote the result to {}", path.display()),
        Err(e) => warn!("could not write result_file {}: {e}", path.display()),
    }
}
