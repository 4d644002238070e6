//! Bring up a test bed by hand:
//!
//! ```text
//! testbed up [N] [--naming ipv4|ipv6|hostname] [--form dns_a|dns_srv|none]
//! testbed cleanup
//! ```
//!
//! `up` starts N pods (default 3) with real erl nodes and the DNS server,
//! optionally with a formation engine per pod, prints how to reach them,
//! and tears everything down on Enter, end of input or Ctrl-C. `cleanup`
//! removes what dead beds left behind. Needs root.

use std::process::ExitCode;
use std::time::Duration;

use erlkube_testbed::harness::{fast_engine, wait_full_mesh, Engines, Strategy};
use erlkube_testbed::{cleanup_leftovers, Bed, BedConfig, Naming};
use tokio::io::AsyncBufReadExt;

const USAGE: &str = "usage: testbed up [N] [--naming ipv4|ipv6|hostname] [--form dns_a|dns_srv|none]\n       testbed cleanup";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("cleanup") => {
            erlkube_testbed::require_root();
            cleanup_leftovers();
            ExitCode::SUCCESS
        }
        Some("up") => match parse_up(&args[1..]) {
            Ok((n, naming, form)) => {
                let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
                match rt.block_on(up(n, naming, form)) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("testbed: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            Err(e) => {
                eprintln!("testbed: {e}\n{USAGE}");
                ExitCode::from(2)
            }
        },
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn parse_up(args: &[String]) -> Result<(usize, Naming, Option<Strategy>), String> {
    let mut n = 3;
    let mut naming = Naming::Ipv4;
    let mut form = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--naming" => {
                naming = match it.next().map(String::as_str) {
                    Some("ipv4") => Naming::Ipv4,
                    Some("ipv6") => Naming::Ipv6,
                    Some("hostname") => Naming::Hostname,
                    other => {
                        return Err(format!(
                            "--naming: expected ipv4, ipv6 or hostname, got {other:?}"
                        ))
                    }
                }
            }
            "--form" => {
                form = match it.next().map(String::as_str) {
                    Some("dns_a") => Some(Strategy::DnsA),
                    Some("dns_srv") => Some(Strategy::DnsSrv),
                    Some("none") => None,
                    other => {
                        return Err(format!(
                            "--form: expected dns_a, dns_srv or none, got {other:?}"
                        ))
                    }
                }
            }
            num => {
                n = num
                    .parse()
                    .ok()
                    .filter(|n| (1..=200).contains(n))
                    .ok_or_else(|| format!("pod count must be 1-200, got {num:?}"))?
            }
        }
    }
    Ok((n, naming, form))
}

async fn up(n: usize, naming: Naming, form: Option<Strategy>) -> Result<(), String> {
    let mut bed = Bed::new(BedConfig {
        naming,
        ..BedConfig::default()
    })
    .map_err(|e| e.to_string())?;
    let pods = bed.add_pods(n).map_err(|e| e.to_string())?;
    println!(
        "bed {}: DNS {} serving {} (A, AAAA, SRV)",
        bed.id(),
        bed.dns_addr(),
        bed.service_fqdn()
    );
    println!(
        "cookie {}; epmd port {} in every pod",
        bed.config().cookie,
        bed.config().epmd_port
    );
    for p in bed.pods() {
        println!(
            "  pod {:>3}  netns {:<16} {:<15} {:<24} {}",
            p.index, p.netns, p.ipv4, p.ipv6, p.node_name
        );
    }
    println!("enter a pod: ip netns exec <netns> bash");
    let mut engines = Engines::default();
    if let Some(s) = &form {
        engines.start_all(&bed, s, &fast_engine(), Duration::from_millis(500));
        match wait_full_mesh(&bed, &pods, Duration::from_secs(120)).await {
            Ok(t) => println!("full mesh of {n} nodes after {t:?}"),
            Err(e) => println!("{e}"),
        }
    }
    println!("press Enter (or Ctrl-C) to tear down");
    let mut line = String::new();
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    tokio::select! {
        _ = stdin.read_line(&mut line) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    drop(engines);
    drop(bed);
    println!("torn down");
    Ok(())
}
