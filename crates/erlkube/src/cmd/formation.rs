//! `erlkube formation --check`: resolves the formation configuration (file
//! plus environment) and prints the plan, or the error with exit code 2.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

/// Arguments of `erlkube formation`.
#[derive(Args, Debug)]
pub struct FormationArgs {
    /// The TOML configuration file (see docs/configuration.md).
    #[arg(long, env = "ERLKUBE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Resolve and validate the configuration, print the plan, and exit.
    #[arg(long)]
    pub check: bool,
    /// The node's name, checked against the names discovery produces
    /// (default: $RELEASE_NODE; without either, the check is skipped).
    #[arg(long, env = "RELEASE_NODE")]
    pub node: Option<String>,
}

/// This host's name, the default host part for the `epmd` strategy.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Reads the file (if any) and the environment and resolves the settings.
pub fn load(
    config: Option<&PathBuf>,
) -> Result<erlkube_discovery::config::FormationConfig, String> {
    let text = match config {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| format!("configuration file {}: {e}", p.display()))?,
        ),
        None => None,
    };
    erlkube_discovery::config::resolve(text.as_deref(), std::env::vars(), &hostname())
        .map_err(|e| e.to_string())
}

/// Runs the subcommand.
pub fn main(args: FormationArgs) -> ExitCode {
    if !args.check {
        eprintln!("erlkube formation: nothing to do; use --check (formation runs inside `erlkube node` and the agent)");
        return ExitCode::from(2);
    }
    match load(args.config.as_ref()) {
        Ok(c) => {
            if let Some(p) = &args.config {
                println!("configuration file: {}", p.display());
            }
            print!("{}", c.describe());
            let forms = c.discovered_forms();
            if !forms.is_empty() {
                let forms: Vec<String> = forms.iter().map(|f| f.to_string()).collect();
                println!("discovered names have as host: {}", forms.join(" or "));
            }
            if let Some(n) = &args.node {
                match erlkube_discovery::NodeName::parse(n) {
                    Ok(node) => {
                        if let Some(w) = c.check_node_form(&node) {
                            eprintln!("erlkube formation: warning: {w}");
                        }
                    }
                    Err(e) => {
                        eprintln!("erlkube formation: --node: {e}");
                        return ExitCode::from(2);
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("erlkube formation: {e}");
            ExitCode::from(2)
        }
    }
}
