//! `zlayer-agent`: one binary that is the CLI, the daemon and the per-container shim.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "zlayer-agent", version, about = "A small, fast container runtime agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Internal: the per-container shim (started by the daemon, not by users).
    #[command(hide = true)]
    Shim {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Shim { args } => std::process::exit(zlayer_runtime::shim::main(args)),
    }
}
