//! One module per subcommand.

pub mod agent;
pub mod env;
pub mod epmd;
pub mod formation;
pub mod manifests;
pub mod node;
pub mod node_discovery;
pub mod nodename;
pub mod ping;
pub mod remsh;
pub mod rpc;
pub mod term;

/// A `--timeout`-style value: a duration with its unit (`500ms`, `5s`,
/// `1m`), read by the same parser as the configuration file's durations.
/// A bare number is refused: it meant seconds to `ping` and milliseconds to
/// `rpc`, so guessing would be wrong for one of them.
pub fn parse_duration_arg(text: &str) -> Result<std::time::Duration, String> {
    match erlkube_discovery::config::parse_duration(text) {
        Some(d) if !d.is_zero() => Ok(d),
        Some(_) => Err("must be more than zero, e.g. \"5s\"".to_owned()),
        None if !text.is_empty() && text.trim().chars().all(|c| c.is_ascii_digit()) => {
            Err(format!(
                "needs a unit: \"{}s\" or \"{}ms\"",
                text.trim(),
                text.trim()
            ))
        }
        None => Err("must be a duration like \"500ms\", \"5s\" or \"1m\"".to_owned()),
    }
}

/// `--net-ticktime`: OTP's bare seconds (`-kernel net_ticktime 60`) or a
/// duration with its unit (`1m`).
pub fn parse_seconds_or_duration(text: &str) -> Result<std::time::Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(0) => Err("must be more than zero".to_owned()),
        Ok(s) => Ok(std::time::Duration::from_secs(s)),
        Err(_) => parse_duration_arg(text),
    }
}
