//! The `larder` binary: one job per run, configured by the pipeline.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(larder::app::main())
}
