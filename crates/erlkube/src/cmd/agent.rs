//! `erlkube agent`: runs beside one BEAM node and clusters it (see
//! docs/agent.md). `--check` prints the resolved plan; bad configuration
//! exits 2 with one line naming the key.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

/// Arguments of `erlkube agent`.
#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The TOML configuration file (formation keys plus the `[agent]` and `[nodename]` tables).
    #[arg(long, env = "ERLKUBE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Resolve and validate the configuration, print the plan, and exit.
    #[arg(long)]
    pub check: bool,
}

/// Reads the file (if any) and the environment and resolves the settings.
pub fn load(config: Option<&PathBuf>) -> Result<erlkube_agent::AgentConfig, String> {
    let text = match config {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| format!("configuration file {}: {e}", p.display()))?,
        ),
        None => None,
    };
    erlkube_agent::resolve_agent(
        text.as_deref(),
        std::env::vars(),
        &super::formation::hostname(),
        erlkube_node::read_cookie_file,
        std::process::id(),
    )
    .map_err(|e| e.to_string())
}

/// Runs the subcommand.
pub fn main(args: AgentArgs) -> ExitCode {
    let config = match load(args.config.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("erlkube agent: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let form_warning = config.formation.check_node_form(&config.node);
    if args.check {
        if let Some(p) = &args.config {
            println!("configuration file: {}", p.display());
        }
        print!("{}", config.describe());
        if let Some(w) = &form_warning {
            eprintln!("erlkube agent: warning: {w}");
        }
        return ExitCode::SUCCESS;
    }
    super::node::init_tracing("info");
    if let Some(w) = &form_warning {
        tracing::warn!("{w}");
    }
    // One thread: the agent's work is a few RPCs a second.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("erlkube agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("erlkube agent: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: erlkube_agent::AgentConfig) -> anyhow::Result<()> {
    let agent = erlkube_agent::Agent::start(config).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    agent
        .run(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("signal received; shutting down");
        })
        .await?;
    Ok(())
}
