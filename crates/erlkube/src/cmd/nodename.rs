//! `erlkube nodename`: prints the node name for this pod (see
//! docs/agent.md, "Node naming"), after checking that its host part
//! resolves to this pod.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use erlkube_agent::nodename::{self, Mode, Naming, NamingInput, Resolution};

/// Arguments shared by `erlkube nodename` and `erlkube env`.
#[derive(Args, Debug)]
pub struct NameArgs {
    /// ip | pod_dns | statefulset | fqdn (default: pod_dns with a service, else ip).
    #[arg(long)]
    pub mode: Option<String>,
    /// Name part (default ERLKUBE_NODENAME_BASENAME, RELEASE_NAME).
    #[arg(long)]
    pub basename: Option<String>,
    /// Headless Service name.
    #[arg(long)]
    pub service: Option<String>,
    /// Kubernetes namespace (default POD_NAMESPACE, the service-account file).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Cluster domain (default CLUSTER_DOMAIN, cluster.local).
    #[arg(long)]
    pub cluster_domain: Option<String>,
    /// The TOML configuration file ([nodename] section).
    #[arg(long, env = "ERLKUBE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Exit 3 when the name does not resolve to this pod.
    #[arg(long)]
    pub strict: bool,
    /// Skip the resolution check.
    #[arg(long, conflicts_with = "strict")]
    pub no_check: bool,
}

/// Resolves the name from flags, file and environment; on error prints it
/// and returns the exit code.
pub fn resolve(args: &NameArgs) -> Result<(Naming, BTreeMap<String, String>), ExitCode> {
    let fail = |e: String| {
        eprintln!("erlkube: {e}");
        ExitCode::from(2)
    };
    let text = match &args.config {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| fail(format!("configuration file {}: {e}", p.display())))?,
        ),
        None => None,
    };
    let split =
        erlkube_agent::config::split_file(text.as_deref()).map_err(|e| fail(e.to_string()))?;
    let mut input = NamingInput::from_process(std::env::vars(), &split.nodename)
        .map_err(|e| fail(e.to_string()))?;
    if let Some(m) = &args.mode {
        input.mode = Some(Mode::parse(m).ok_or_else(|| {
            fail(format!(
                "--mode: must be one of ip, pod_dns, statefulset, fqdn; got {m:?}"
            ))
        })?);
        if input.mode == Some(Mode::Fqdn) && input.fqdn.is_none() {
            input.fqdn = std::process::Command::new("hostname")
                .arg("-f")
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .filter(|s| !s.is_empty());
        }
    }
    for (flag, slot) in [
        (&args.basename, &mut input.basename),
        (&args.service, &mut input.service),
        (&args.namespace, &mut input.namespace),
        (&args.cluster_domain, &mut input.cluster_domain),
    ] {
        if let Some(v) = flag {
            *slot = Some(v.clone());
        }
    }
    let naming = nodename::node_name(&input).map_err(|e| fail(e.to_string()))?;
    if !args.no_check {
        let local = nodename::local_addresses();
        let pod_ip: Option<IpAddr> = input.pod_ip.as_deref().and_then(|p| p.parse().ok());
        let ours: Vec<IpAddr> = match pod_ip {
            Some(ip) => vec![ip],
            None => local.clone(),
        };
        let mut problem = match nodename::check_resolves(&naming.host, &ours) {
            Resolution::Ok(_) => None,
            Resolution::Elsewhere { resolved, ours } => Some(format!(
                "{} resolves to {} but this pod is {}",
                naming.host,
                join(&resolved),
                join(&ours)
            )),
            Resolution::Unresolved(e) => Some(format!("{} does not resolve: {e}", naming.host)),
        };
        if let Some(ip) = pod_ip {
            if !local.is_empty() && !local.contains(&ip) && problem.is_none() {
                problem = Some(format!(
                    "POD_IP {ip} is not an address of this pod ({})",
                    join(&local)
                ));
            }
        }
        if let Some(p) = problem {
            eprintln!(
                "erlkube: warning: the node name {} does not reach this pod: {p}; other nodes will not be able to connect to it",
                naming.node
            );
            if args.strict {
                return Err(ExitCode::from(3));
            }
        }
    }
    Ok((naming, split.nodename))
}

fn join(ips: &[IpAddr]) -> String {
    if ips.is_empty() {
        return "(no address)".into();
    }
    ips.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs `erlkube nodename`.
pub fn main(args: NameArgs) -> ExitCode {
    match resolve(&args) {
        Ok((n, _)) => {
            println!("{}", n.node);
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}
