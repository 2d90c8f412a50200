//! `zlayer-agent`: one binary that is the CLI, the daemon and the per-container shim.
//!
//! The CLI holds no logic of its own: each command is one or two calls of the daemon's API.

#[macro_use]
mod output;
mod commands;
mod daemon;
mod template;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use commands::{containers, images, networks, services, volumes};
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
    /// Convert Windows container layers for the Host Compute Service (local, no daemon).
    #[command(subcommand)]
    Wclayer(commands::wclayer::WclayerCommand),
    /// Internal: the per-container shim (started by the daemon, not by users).
    #[command(hide = true)]
    Shim {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    #[command(flatten)]
    Client(ClientCommand),
}

/// Commands that talk to the daemon.
#[derive(Subcommand)]
enum ClientCommand {
    /// Show the client's and the daemon's versions.
    Version,
    /// Pull an image from a registry.
    Pull(images::PullArgs),
    /// List images.
    Images(images::ListArgs),
    /// Remove images.
    Rmi(images::RmiArgs),
    /// Load images from an OCI layout, an OCI archive or a `docker save` tarball.
    Load(images::LoadArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(images::ImageCommand),
    /// Create and start a container; without -d, wait for it and exit with its status.
    Run(Box<containers::RunArgs>),
    /// List containers.
    Ps(containers::PsArgs),
    /// Show a container's output.
    Logs(containers::LogsArgs),
    /// Run a command in a running container.
    Exec(containers::ExecArgs),
    /// Stop containers: stop signal, grace period, then SIGKILL.
    Stop(containers::StopArgs),
    /// Send a signal to containers.
    Kill(containers::KillArgs),
    /// Pause all processes within containers (cgroup freezer).
    Pause(commands::pause::PauseArgs),
    /// Unpause all processes within paused containers.
    Unpause(commands::pause::PauseArgs),
    /// Rename a container.
    Rename(commands::rename::RenameArgs),
    /// List a container's published ports, or the host side of one of them.
    Port(commands::port::PortArgs),
    /// Show a container's processes (ps -ef, or the ps options given).
    Top(commands::top::TopArgs),
    /// Remove containers.
    Rm(containers::RmArgs),
    /// Wait for containers to exit and print their exit codes.
    Wait(containers::WaitArgs),
    /// Show containers' details as JSON.
    Inspect(containers::InspectArgs),
    /// Show containers' CPU, memory and pids.
    Stats(containers::StatsArgs),
    /// Copy files between a container and the host (`-` for a tar on stdin/stdout).
    Cp(commands::cp::CpArgs),
    /// Deploy (or validate with --dry-run) a deployment spec file.
    Deploy(services::DeployArgs),
    /// Stop and remove everything of a deployment.
    Undeploy(services::UndeployArgs),
    /// Show services: desired/running/healthy replicas, restarts, state.
    Services(services::ServicesArgs),
    /// Change a service's replica count.
    Scale(services::ScaleArgs),
    /// Stream events (JSON lines) until interrupted.
    Events,
    /// Manage named volumes.
    #[command(subcommand)]
    Volume(volumes::VolumeCommand),
    /// Manage bridge networks.
    #[command(subcommand)]
    Network(networks::NetworkCommand),
}

fn main() -> ExitCode {
    // The daemon starts every shim as `zlayer-agent shim ARGS`. Straight there, without clap:
    // building the whole command tree allocates and touches memory (heap, relocated tables)
    // that each long-lived shim would otherwise keep as private pages.
    let mut argv = std::env::args_os();
    if argv.nth(1).as_deref() == Some(std::ffi::OsStr::new("shim")) {
        return ExitCode::from(clamp_status(zlayer_runtime::shim::main(argv.collect())));
    }
    let cli = Cli::parse();
    match cli.command {
        // The shim must stay single-threaded: it runs before any runtime is built.
        Command::Shim { args } => {
            daemon::restore_inherited_nofile();
            ExitCode::from(clamp_status(zlayer_runtime::shim::main(args)))
        }
        Command::Daemon(args) => report(daemon::run(args, cli.socket)),
        // Runs its own runtime where it needs one (registry pulls), so not inside ours.
        Command::Wclayer(cmd) => match commands::wclayer::wclayer(cmd) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("Error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Client(command) => {
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

async fn run_client(client: Client, command: ClientCommand) -> ExitCode {
    let result = match command {
        ClientCommand::Version => version(&client).await,
        ClientCommand::Pull(a) => images::pull(&client, a).await,
        ClientCommand::Images(a) => images::list(&client, a).await,
        ClientCommand::Rmi(a) => images::rmi(&client, a).await,
        ClientCommand::Load(a) => images::load(&client, a).await,
        ClientCommand::Image(c) => images::image(&client, c).await,
        ClientCommand::Run(a) => containers::run(&client, *a).await,
        ClientCommand::Ps(a) => containers::ps(&client, a).await,
        ClientCommand::Logs(a) => containers::logs(&client, a).await,
        ClientCommand::Exec(a) => containers::exec(&client, a).await,
        ClientCommand::Stop(a) => containers::stop(&client, a).await,
        ClientCommand::Kill(a) => containers::kill(&client, a).await,
        ClientCommand::Pause(a) => commands::pause::pause(&client, a).await,
        ClientCommand::Unpause(a) => commands::pause::unpause(&client, a).await,
        ClientCommand::Rename(a) => commands::rename::rename(&client, a).await,
        ClientCommand::Port(a) => commands::port::port(&client, a).await,
        ClientCommand::Top(a) => commands::top::top(&client, a).await,
        ClientCommand::Rm(a) => containers::rm(&client, a).await,
        ClientCommand::Wait(a) => containers::wait(&client, a).await,
        ClientCommand::Inspect(a) => containers::inspect(&client, a).await,
        ClientCommand::Stats(a) => containers::stats(&client, a).await,
        ClientCommand::Cp(a) => commands::cp::cp(&client, a).await,
        ClientCommand::Volume(c) => volumes::volume(&client, c).await,
        ClientCommand::Network(c) => networks::network(&client, c).await,
        ClientCommand::Deploy(a) => services::deploy(&client, a).await,
        ClientCommand::Undeploy(a) => services::undeploy(&client, a).await,
        ClientCommand::Services(a) => services::services(&client, a).await,
        ClientCommand::Scale(a) => services::scale(&client, a).await,
        ClientCommand::Events => services::events(&client).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::from(exit_code_for(&e))
        }
    }
}

/// The status for a failed command: a container start failure's own (126/127), 125 for the
/// agent's other failures (as docker), 1 for everything else.
fn exit_code_for(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<ClientError>() {
        Some(c) => clamp_status(c.exit_status()),
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
    outln!("Client: zlayer-agent {}", env!("CARGO_PKG_VERSION"));
    let info: zlayer_api::types::VersionInfo = client.get("/v1/version").await?;
    outln!(
        "Daemon: zlayer-agent {} (API {})",
        info.version,
        info.api_version
    );
    outln!("  root:  {}", info.root);
    outln!("  state: {}", info.state);
    Ok(ExitCode::SUCCESS)
}
