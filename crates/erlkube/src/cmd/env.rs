//! `erlkube env`: shell lines for a release's `env.sh`
//! (`eval "$(erlkube env)"`): `RELEASE_DISTRIBUTION`, `RELEASE_NODE`, and
//! the `erl` flags for IPv6 and a fixed distribution port.

use std::process::ExitCode;

use clap::Args;
use erlkube_agent::nodename::{env_lines, FlagsVar};

/// Arguments of `erlkube env`.
#[derive(Args, Debug)]
pub struct EnvArgs {
    #[command(flatten)]
    pub name: super::nodename::NameArgs,
    /// Fixed distribution port (default ERLKUBE_NODENAME_DIST_PORT or
    /// `[nodename]` dist_port; none: epmd picks a port).
    #[arg(long)]
    pub dist_port: Option<u16>,
    /// Put erl flags in ERL_AFLAGS (rebar3 releases, plain erl) instead of
    /// ELIXIR_ERL_OPTIONS (mix releases).
    #[arg(long)]
    pub erl_aflags: bool,
}

/// Runs `erlkube env`.
pub fn main(args: EnvArgs) -> ExitCode {
    let (naming, file) = match super::nodename::resolve(&args.name) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let port_text = args
        .dist_port
        .map(|p| p.to_string())
        .or_else(|| std::env::var("ERLKUBE_NODENAME_DIST_PORT").ok())
        .or_else(|| file.get("dist_port").cloned())
        .filter(|s| !s.trim().is_empty());
    let dist_port = match port_text {
        None => None,
        Some(t) => match t.trim().parse::<u16>() {
            Ok(p) if p > 0 => Some(p),
            _ => {
                eprintln!("erlkube: nodename.dist_port: must be a port number 1-65535, got {t:?}");
                return ExitCode::from(2);
            }
        },
    };
    let var = if args.erl_aflags {
        FlagsVar::ErlAflags
    } else {
        FlagsVar::ElixirErlOptions
    };
    print!("{}", env_lines(&naming, dist_port, var));
    ExitCode::SUCCESS
}
