//! The `netclaim` binary: `netclaim run` (the node daemon), `netclaim devices`,
//! `netclaim check`, `netclaim validate`, `netclaim explain` and `netclaim controller`
//! (the PodNetwork condition writer).

use std::process::ExitCode;

use clap::Parser;
use netclaim::cli::{Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // First, while this is the only thread (memory.rs says why).
    netclaim::memory::limit_arenas();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    // Two workers: the daemon is I/O-bound and idles almost always, but a CPU-heavy
    // moment (a discovery pass over many NICs, a TLS handshake) on one worker must not
    // delay an NRI hook, which every pod on the node waits for. Disk and sysfs work runs
    // on the blocking pool, never on a worker; its threads exit soon when idle.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .thread_keep_alive(std::time::Duration::from_secs(2))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("netclaim: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Run(args) => netclaim::daemon::run(args).await,
            Command::Devices(args) => {
                netclaim::cli::devices(args, &mut std::io::stdout().lock()).await
            }
            Command::Validate(args) => {
                if netclaim::validate::run(args, &mut std::io::stdout().lock())? {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("validation found problems"))
                }
            }
            Command::Explain(args) => {
                if netclaim::explain::run(args, &mut std::io::stdout().lock()).await? {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!(
                        "a request cannot be satisfied on this node, or prepare would refuse it"
                    ))
                }
            }
            Command::Controller(args) => netclaim::daemon::run_controller(args).await,
            Command::Check(args) => {
                let runner = args.cni.runner(&args.state_dir)?;
                let mut out = std::io::stdout().lock();
                let all_passed = netclaim::check::run(
                    args.state_dir.clone(),
                    &runner,
                    args.claim.as_deref(),
                    &mut out,
                )
                .await?;
                if all_passed {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("a CNI CHECK failed"))
                }
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("netclaim: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr; the level comes from `RUST_LOG` (default `info`).
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: a log file or a container log should hold plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
