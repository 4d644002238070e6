//! The `erlkube` binary: one command with a subcommand per job.
//!
//! Invoked under the name `epmd` it behaves as OTP's `epmd` (OTP-style
//! single-dash flags), so it can replace the port mapper in an image.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

#[derive(Parser)]
#[command(
    name = "erlkube",
    version,
    about = "Erlang-distribution clusters on Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Encode and decode External Term Format.
    #[command(subcommand)]
    Term(cmd::term::TermCommand),
    /// Run a Rust node with an `echo` process until SIGINT/SIGTERM.
    Node(cmd::node::NodeArgs),
    /// `net_adm:ping` a node: prints pong (exit 0) or pang (exit 1).
    Ping(cmd::ping::PingArgs),
    /// `rpc:call` a function on a node: prints the result in Erlang syntax.
    Rpc(cmd::rpc::RpcArgs),
    /// Phoenix.PubSub from the command line: subscribe to or broadcast on a topic.
    #[command(subcommand)]
    Pubsub(cmd::pubsub::PubSubCommand),
    /// A remote shell (erl/iex -remsh) on a node reached at --via HOST:PORT.
    Remsh(cmd::remsh::RemshArgs),
    /// The port mapper (OTP `epmd` compatible flags: `erlkube epmd -help`).
    #[command(disable_help_flag = true)]
    Epmd {
        /// OTP-style arguments, passed through unchanged.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Cluster formation settings (`--check` prints the resolved plan).
    Formation(cmd::formation::FormationArgs),
    /// Cluster the BEAM node beside this agent (`--check` prints the plan).
    Agent(cmd::agent::AgentArgs),
    /// Print this pod's node name (checks that it resolves to the pod).
    Nodename(cmd::nodename::NameArgs),
    /// Print shell lines for a release's env.sh: eval "$(erlkube env)".
    Env(cmd::env::EnvArgs),
    /// Print the Kubernetes manifests (Service, Deployment or StatefulSet with the agent, RBAC).
    Manifests(cmd::manifests::ManifestsArgs),
}

fn main() -> ExitCode {
    let mut argv: Vec<OsString> = std::env::args_os().collect();
    let invoked_as = argv
        .first()
        .and_then(|a| {
            std::path::Path::new(a)
                .file_name()
                .map(|n| n.to_os_string())
        })
        .unwrap_or_default();
    if invoked_as == "epmd" {
        return cmd::epmd::main(argv.split_off(1));
    }
    let cli = Cli::parse_from(argv);
    match cli.command {
        Command::Term(c) => cmd::term::main(c),
        Command::Epmd { args } => cmd::epmd::main(args),
        Command::Node(a) => cmd::node::main(a),
        Command::Ping(a) => cmd::ping::main(a),
        Command::Rpc(a) => cmd::rpc::main(a),
        Command::Remsh(a) => cmd::remsh::main(a),
        Command::Pubsub(c) => cmd::pubsub::main(c),
        Command::Formation(a) => cmd::formation::main(a),
        Command::Agent(a) => cmd::agent::main(a),
        Command::Nodename(a) => cmd::nodename::main(a),
        Command::Env(a) => cmd::env::main(a),
        Command::Manifests(a) => cmd::manifests::main(a),
    }
}
