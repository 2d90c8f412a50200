//! `zlayer-agent`: one binary that is the CLI, the daemon and the per-container shim.
//!
//! The CLI holds no logic of its own: each command is one or two calls of the daemon's API.

mod daemon;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use zlayer_agent::paths::DEFAULT_SOCKET;
use zlayer_api::client::ClientError;
use zlayer_api::Client;

#[derive(Parser)]
#[command(
    name = "zlayer-agent",
    version,
    about = "A small, fast container runtime agent"
)]
struct Cli {
    /// The daemon's API socket.
    #[arg(long, global = true, env = "ZLAYER_AGENT_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent daemon (serves the API; keeps images, containers and services).
    Daemon(daemon::DaemonArgs),
    /// Show the client's and the daemon's versions.
    Version,
    /// Internal: the per-container shim (started by the daemon, not by users).
    #[command(hide = true)]
    Shim {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        // The shim must stay single-threaded: it runs before any runtime is built.
        Command::Shim { args } => ExitCode::from(clamp_status(zlayer_runtime::shim::main(args))),
        Command::Daemon(args) => report(daemon::run(args, cli.socket)),
        command => {
            let client = Client::new(cli.socket);
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return report(Err(anyhow::anyhow!("starting the client runtime: {e}"))),
            };
            rt.block_on(run_client(client, command))
        }
    }
}

async fn run_client(client: Client, command: Command) -> ExitCode {
    let result = match command {
        Command::Version => version(&client).await,
        Command::Daemon(_) | Command::Shim { .. } => unreachable!("handled in main"),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::from(exit_code_for(&e))
        }
    }
}

/// 125 for the agent's own failures, as docker uses for "the daemon failed"; 1 for other errors.
fn exit_code_for(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<ClientError>() {
        Some(ClientError::Unreachable { .. }) => 1,
        Some(_) => 125,
        None => 1,
    }
}

fn clamp_status(status: i32) -> u8 {
    u8::try_from(status).unwrap_or(1)
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn version(client: &Client) -> anyhow::Result<ExitCode> {
    println!("Client: zlayer-agent {}", env!("CARGO_PKG_VERSION"));
    let info: zlayer_api::types::VersionInfo = client.get("/v1/version").await?;
    println!(
        "Daemon: zlayer-agent {} (API {})",
        info.version, info.api_version
    );
    println!("  root:  {}", info.root);
    println!("  state: {}", info.state);
    Ok(ExitCode::SUCCESS)
}
