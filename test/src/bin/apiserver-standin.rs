//! Runs the API server stand-in on its own, for demos:
//! `apiserver-standin [--port PORT] [--kubeconfig-out PATH]`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use netclaim_test::apiserver::ApiServer;

struct Args {
    port: u16,
    kubeconfig_out: Option<PathBuf>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        port: 0,
        kubeconfig_out: None,
    };
    let mut raw = std::env::args().skip(1);
    while let Some(flag) = raw.next() {
        let mut value = || raw.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--port" => args.port = value()?.parse().context("--port must be a port number")?,
            "--kubeconfig-out" => args.kubeconfig_out = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                println!("usage: apiserver-standin [--port PORT] [--kubeconfig-out PATH]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = parse_args()?;
    let server = ApiServer::start_on(SocketAddr::from(([127, 0, 0, 1], args.port))).await?;
    if let Some(path) = &args.kubeconfig_out {
        server.write_kubeconfig(path)?;
        println!("kubeconfig written to {}", path.display());
    }
    println!("API server stand-in serving on {}", server.url());
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    server.shutdown().await;
    Ok(())
}
