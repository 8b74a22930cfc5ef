//! `txcat` entrypoint: parses the command line, runs it, and turns any failure into the
//! SageMaker failure file plus a non-zero exit status.
//!
//! Invariants: the only place that prints an error chain, writes `output/failure` and chooses the
//! exit status (0 success; 1 runtime failure; 2 bad configuration or data; 3 internal error, i.e.
//! a caught panic). Logs go to stderr, one line per event, filtered by `RUST_LOG` (default info).

use clap::Parser;
use std::panic::AssertUnwindSafe;
use std::process::ExitCode;
use std::sync::Mutex;
use txcat::cli::{Cli, Command};
use txcat::job::{self, JobError, EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_RUNTIME};
use txcat::predict::PredictError;
use txcat::sagemaker::{self, Paths};
use txcat::serve::ServeError;

/// libgomp (libtorch's OpenMP) lets idle workers spin a while before sleeping, and it reads
/// `OMP_WAIT_POLICY` only once, when libtorch loads it, before `main`. Training and `predict`
/// keep that default: on a quiet 2-core machine MiniLM trained at 192-200 samples/s with it and
/// 113-188 with `PASSIVE` (2026-12-02, alternating runs), the Python references run with it,
/// and a SageMaker training instance is not shared. `serve` shares the cores between HTTP
/// workers, the batcher and libtorch, where spinning workers steal time from the threads that
/// answer requests, so unless the user chose a policy it re-executes once with
/// `OMP_WAIT_POLICY=PASSIVE` (same PID, arguments and environment otherwise).
fn ensure_passive_openmp_for_serve() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("OMP_WAIT_POLICY").is_some()
        || std::env::args_os().nth(1).is_none_or(|a| a != "serve")
    {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    let error = std::process::Command::new(&exe)
        .arg0(arg0)
        .args(args)
        .env("OMP_WAIT_POLICY", "PASSIVE")
        .exec();
    // Only reached when exec failed: run on with libgomp's default.
    eprintln!(
        "txcat: could not re-execute with OMP_WAIT_POLICY=PASSIVE ({error}); continuing with spinning OpenMP workers"
    );
}

/// Loads libtorch's CUDA backend where a GPU can use it (`TXCAT_CUDA_BACKEND`), before any
/// libtorch call; a bad value is a bad configuration.
fn load_cuda_backend() -> Result<(), ExitCode> {
    use txcat::cuda_backend::{self, Outcome, Policy};
    let value = std::env::var("TXCAT_CUDA_BACKEND").ok();
    let policy = Policy::parse(value.as_deref()).map_err(|e| {
        tracing::error!("{e}");
        // As for a bad command line: the failure file where a SageMaker root exists.
        let paths = Paths::resolve(None);
        if paths.root.is_dir() {
            report_failure(&paths, &e);
        }
        ExitCode::from(EXIT_BAD_INPUT as u8)
    })?;
    let outcome = cuda_backend::load(policy);
    match &outcome {
        // A driver is there but libtorch cannot use it: say so, the job will run on the CPU.
        Outcome::Unavailable(_) => tracing::warn!("CUDA backend {}", outcome.describe()),
        _ => tracing::debug!("CUDA backend {}", outcome.describe()),
    }
    Ok(())
}

/// Where the last panic happened, recorded by the panic hook for the failure reason.
static PANIC_LOCATION: Mutex<Option<String>> = Mutex::new(None);

fn main() -> ExitCode {
    ensure_passive_openmp_for_serve();
    init_logging();
    if let Err(code) = load_cuda_backend() {
        return code;
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help / --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            // SageMaker can pass arguments too (ContainerArguments): report where it will look,
            // but only where a root exists, so a typo on a laptop creates no /opt/ml.
            let paths = Paths::resolve(None);
            if paths.root.is_dir() {
                let reason = format!("invalid command line: {}", first_line(&e.to_string()));
                report_failure(&paths, &reason);
            }
            return ExitCode::from(EXIT_BAD_INPUT as u8);
        }
    };
    install_panic_hook();
    let command = cli.into_command();
    let paths = match &command {
        Command::Train(args) => Paths::resolve(args.root.as_deref()),
        Command::Predict(_) | Command::Serve(_) | Command::Report(_) => Paths::resolve(None),
    };
    let is_train = matches!(command, Command::Train(_));
    // A data-parallel worker reports to its launcher, which writes the job's one failure line.
    let worker_failure = txcat::train::distributed::launch::worker_failure_file();
    if is_train && worker_failure.is_none() {
        if let Err(e) = sagemaker::clear_stale_failure(&paths) {
            tracing::warn!(error = %e, "could not remove an old failure file");
        }
    }
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| run(command, &paths)));
    let (reason, code) = match outcome {
        Ok(Ok(())) => return ExitCode::SUCCESS,
        Ok(Err(error)) => {
            let chain = error_chain(&error);
            tracing::error!("{chain}");
            let code = exit_code(&error);
            (chain, code)
        }
        Err(_) => {
            let location = PANIC_LOCATION
                .lock()
                .ok()
                .and_then(|mut l| l.take())
                .unwrap_or_else(|| "unknown location".into());
            let reason = format!(
                "internal error in txcat at {location} (a bug, not a problem with your data or settings); the log has details, please report it"
            );
            tracing::error!("{reason}");
            (reason, EXIT_INTERNAL)
        }
    };
    match worker_failure {
        Some(file) => {
            if let Err(e) = std::fs::write(&file, format!("{reason}\n")) {
                tracing::error!(path = %file.display(), error = %e, "could not hand the failure to the launcher");
            }
        }
        None if is_train => report_failure(&paths, &reason),
        None => {}
    }
    ExitCode::from(code as u8)
}

fn run(command: Command, paths: &Paths) -> anyhow::Result<()> {
    match command {
        Command::Train(args) => {
            if args.test_panic {
                panic!("panic requested with --test-panic");
            }
            job::run_train(paths, &args)?
        }
        Command::Predict(args) => txcat::predict::run(&args)?,
        Command::Serve(args) => txcat::serve::run(&args, paths)?,
        Command::Report(args) => {
            let path = txcat::report::rebuild(&args.output_dir)?;
            tracing::info!(path = %path.display(), "report written");
        }
    }
    Ok(())
}

/// The error and its sources joined by ": ", skipping a source whose text an outer message
/// already includes (many of our messages embed their cause).
fn error_chain(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// The exit status for a failed command: 2 when the user's input is at fault, else 1.
fn exit_code(error: &anyhow::Error) -> i32 {
    if let Some(e) = error.downcast_ref::<JobError>() {
        e.exit_code()
    } else if let Some(e) = error.downcast_ref::<PredictError>() {
        if e.is_bad_input() {
            EXIT_BAD_INPUT
        } else {
            EXIT_RUNTIME
        }
    } else if let Some(e) = error.downcast_ref::<ServeError>() {
        if e.is_bad_input() {
            EXIT_BAD_INPUT
        } else {
            EXIT_RUNTIME
        }
    } else if let Some(e) = error.downcast_ref::<txcat::report::ReportError>() {
        if e.is_bad_input() {
            EXIT_BAD_INPUT
        } else {
            EXIT_RUNTIME
        }
    } else {
        EXIT_RUNTIME
    }
}

fn first_line(text: &str) -> &str {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(text)
        .trim()
}

fn report_failure(paths: &Paths, reason: &str) {
    if let Err(e) = sagemaker::write_failure(paths, reason) {
        tracing::error!(path = %paths.failure_file.display(), error = %e, "could not write the failure file");
    }
}

fn init_logging() {
    // Data-parallel ranks other than 0 log only warnings unless RUST_LOG says otherwise: their
    // info lines repeat rank 0's, and SageMaker's metric regexes would count them twice.
    let default = match std::env::var("RANK") {
        Ok(rank) if rank.trim() != "0" => "warn",
        _ => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
}

/// Logs the panic (message and location) as one event and remembers where it happened; the
/// failure file gets a fixed "internal error" wording instead of the raw panic text.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_else(|| "unknown location".into());
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-text panic payload".into());
        tracing::error!(location = %location, "panic: {}", message.replace('\n', " "));
        if let Ok(mut slot) = PANIC_LOCATION.lock() {
            *slot = Some(location);
        }
    }));
}
