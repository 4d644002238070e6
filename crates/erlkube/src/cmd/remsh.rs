//! `erlkube remsh NODE --via HOST:PORT`: a real `erl -remsh` (or `iex
//! --remsh`) shell on a node that is only reachable through a forwarded
//! port, e.g. the local end of `kubectl port-forward pod/x PORT` to the
//! pod's fixed distribution port (`erlkube env --dist-port`).
//!
//! The laptop's BEAM runs with `-epmd_module erlkube_remsh_epmd` (source in
//! `erl/erlkube_remsh_epmd.erl`, compiled here with `erlc` into a private
//! temporary directory): that module answers NODE's address and port with
//! the `--via` address, so the node's host (a pod IP or a cluster DNS name)
//! is never resolved and epmd is never asked, and it registers the laptop
//! node with no epmd. The handshake is the usual one under the pod node's
//! real name. The laptop node is hidden and listens on 127.0.0.1 only.
//!
//! The cookie never goes on a command line: it is written with the via
//! address into a 0600 file in the private directory; the Erlang module
//! reads it, deletes it, and sets it for NODE only. The laptop node's own
//! cookie is a random throwaway. Also `--via` on `erlkube ping` / `rpc`.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use erlkube_etf::Term;

/// The Erlang epmd module, compiled at run time.
const EPMD_MODULE_SRC: &str = include_str!("../../erl/erlkube_remsh_epmd.erl");
const EPMD_MODULE: &str = "erlkube_remsh_epmd";

/// Parses `--via HOST:PORT` (an IP, `[v6]`, or a name the laptop resolves,
/// like `localhost`) into the first address it names.
pub fn parse_via(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("expected HOST:PORT, got {s:?}"));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("expected HOST:PORT, got {s:?}"));
    }
    s.to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host:?} has no address"))
}

#[derive(clap::Args)]
pub struct RemshArgs {
    /// The node to open a shell on, `alive@host` (its real name; the host
    /// need not resolve here).
    node: String,
    /// Where the node's distribution port is reachable from here, e.g.
    /// 127.0.0.1:9100 (the local end of `kubectl port-forward`). Without
    /// it the node's host is resolved and its epmd asked, as `erl -remsh`
    /// does.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_via)]
    via: Option<SocketAddr>,
    /// The epmd port on the node's host (not used with --via).
    #[arg(long, env = "ERL_EPMD_PORT", default_value_t = 4369)]
    epmd_port: u16,
    #[command(flatten)]
    cookie: super::CookieArgs,
    #[command(flatten)]
    dist: super::DistArgs,
    /// Start `iex --remsh` instead of `erl -remsh`.
    #[arg(long)]
    iex: bool,
    /// The laptop node's name (default `remsh_<pid>@127.0.0.1`).
    #[arg(long)]
    name: Option<String>,
}

pub fn main(args: RemshArgs) -> ExitCode {
    match run(args) {
        Ok(code) => code,
        Err((code, msg)) => {
            eprintln!("erlkube remsh: {msg}");
            ExitCode::from(code)
        }
    }
}

type Failure = (u8, String);

fn run(args: RemshArgs) -> Result<ExitCode, Failure> {
    let usage = |m: String| (2u8, m);
    use erlkube_proto::name::{check_node_name, NameMode};
    check_node_name(&args.node, NameMode::Any).map_err(|e| usage(e.to_string()))?;
    let via = match args.via {
        None => None,
        Some(a) => {
            let IpAddr::V4(ip) = a.ip() else {
                return Err(usage(format!(
                    "--via {a}: only IPv4 addresses are supported (kubectl port-forward listens on 127.0.0.1)"
                )));
            };
            Some((ip, a.port()))
        }
    };
    let own = args
        .name
        .clone()
        .unwrap_or_else(|| format!("remsh_{}@127.0.0.1", std::process::id()));
    check_node_name(&own, NameMode::Long).map_err(|e| usage(format!("--name: {e}")))?;
    let cookie = args.cookie.find().map_err(|e| usage(e.to_string()))?;
    // OTP keeps cookies as atoms: at most 255 characters.
    if cookie.expose().chars().count() > 255 {
        return Err(usage("the cookie is longer than 255 characters".into()));
    }

    let tls = args.dist.tls(&["client"]).map_err(usage)?;

    // `erl -remsh` with a wrong cookie prints "Shell process terminated!"
    // and exits 0: reach the node first, so a failure says what failed.
    preflight(&args.node, args.via, args.epmd_port, &cookie, tls.clone())?;

    let dir = PrivateDir::create().map_err(|e| (1, format!("temporary directory: {e}")))?;
    compile_module(dir.path())?;
    let conf = dir.path().join("via");
    // {Node, {Ip, Port} | none, Cookie}
    let via_term = match via {
        Some((ip, port)) => Term::tuple(vec![
            Term::tuple(ip.octets().iter().map(|&o| Term::from(o as i64)).collect()),
            Term::from(port as i64),
        ]),
        None => Term::atom("none"),
    };
    let term = Term::tuple(vec![
        Term::atom(&args.node),
        via_term,
        Term::binary(cookie.expose().as_bytes().to_vec()),
    ]);
    write_private(&conf, &erlkube_etf::encode(&term))
        .map_err(|e| (1, format!("cannot write {}: {e}", conf.display())))?;

    let throwaway = format!("remsh_{:016x}", random_u64());
    let mut vm_args: Vec<String> = vec![
        "-start_epmd".into(),
        "false".into(),
        "-epmd_module".into(),
        EPMD_MODULE.into(),
        "-pa".into(),
        dir.path().display().to_string(),
        "-erlkube_remsh".into(),
        conf.display().to_string(),
        "-kernel".into(),
        "inet_dist_use_interface".into(),
        "{127,0,0,1}".into(),
    ];
    if let (Some(_), Some(file)) = (&tls, args.dist.optfile()) {
        // The shell's node speaks TLS with the same file (its client side).
        vm_args.extend([
            "-proto_dist".into(),
            "inet_tls".into(),
            "-ssl_dist_optfile".into(),
            file.display().to_string(),
        ]);
    }
    let mut cmd;
    if args.iex {
        // `--erl` takes one string that iex splits at spaces.
        if let Some(a) = vm_args.iter().find(|a| a.contains(char::is_whitespace)) {
            return Err(usage(format!(
                "--iex cannot pass {a:?} to the BEAM (iex splits --erl at spaces): \
                 use a path without spaces (--ssl-dist-optfile, TMPDIR)"
            )));
        }
        cmd = Command::new("iex");
        cmd.args(["--name", &own, "--cookie", &throwaway, "--hidden"])
            .args(["--remsh", &args.node])
            .arg("--erl")
            .arg(vm_args.join(" "));
    } else {
        cmd = Command::new("erl");
        vm_args.extend(["-remsh".into(), args.node.clone()]);
        cmd.args(["-name", &own, "-setcookie", &throwaway, "-hidden"])
            .args(&vm_args);
    }
    if args.via.is_none() {
        // erl_epmd asks epmd on the node's host at this port.
        cmd.env("ERL_EPMD_PORT", args.epmd_port.to_string());
    }
    let program = if args.iex { "iex" } else { "erl" };
    // Ctrl-C and Ctrl-\ belong to the shell (its BREAK menu); this process
    // only waits for it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| (1, format!("runtime: {e}")))?;
    let _signals = rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::quit()).ok(),
        )
    });
    let status = cmd
        .status()
        .map_err(|e| (1, format!("cannot run `{program}`: {e}")))?;
    drop(dir);
    Ok(exit_code(status))
}

/// `net_adm:ping` of `node` (at `via`, else through epmd on its host)
/// from a throwaway hidden Rust node with the node's cookie: exit 1 with
/// the reason (wrong cookie, refused, not TLS, …) when the shell could not
/// connect either.
fn preflight(
    node: &str,
    via: Option<SocketAddr>,
    epmd_port: u16,
    cookie: &erlkube_node::Cookie,
    tls: Option<erlkube_node::TlsConfig>,
) -> Result<(), Failure> {
    use erlkube_node::{Node, NodeConfig};
    let host = node.split_once('@').map_or("", |(_, h)| h);
    let mut config = NodeConfig::new(
        format!("erlkube_remsh_check_{}@{host}", std::process::id()),
        cookie.clone(),
    );
    config.hidden = true;
    config.register_with_epmd = false;
    config.listen_ip = std::net::Ipv4Addr::LOCALHOST.into();
    config.epmd_port = epmd_port;
    if let Some(via) = via {
        config.known_addrs.insert(node.to_owned(), via);
    }
    let tls_used = tls.is_some();
    config.tls = tls;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| (1, format!("runtime: {e}")))?;
    rt.block_on(async {
        let n = Node::start(config)
            .await
            .map_err(|e| (1, format!("cannot start the check node: {e}")))?;
        let r = n.ping(node).await;
        n.stop().await;
        r.map_err(|e| {
            let at = via.map(|v| format!(" at {v}")).unwrap_or_default();
            let hint = if !tls_used && plain_refused(&e) {
                // A TLS node closes a plain handshake without a word.
                "; if the node speaks TLS distribution (-proto_dist inet_tls), \
                 pass --proto-dist inet_tls --ssl-dist-optfile FILE"
            } else {
                ""
            };
            (
                1,
                format!(
                    "cannot connect to {node}{at}: {}{hint}",
                    super::ping::error_chain(&e)
                ),
            )
        })
    })
}

/// How a TLS node's refusal of a plain TCP handshake looks from here: the
/// connection closed (or broken) before the handshake's first answer, or
/// an answer that is no handshake message (the bytes of a TLS alert).
fn plain_refused(e: &erlkube_node::PingError) -> bool {
    use erlkube_node::{ConnectError, PingError};
    matches!(
        e,
        PingError::Connect(
            ConnectError::ClosedDuringHandshake { hint: "", .. }
                | ConnectError::Io { .. }
                | ConnectError::Handshake { .. }
        )
    )
}

fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => ExitCode::from(c.clamp(0, 255) as u8),
        (None, Some(s)) => ExitCode::from((128 + s).clamp(0, 255) as u8),
        _ => ExitCode::FAILURE,
    }
}

/// Writes the module's source and compiles it with `erlc` in `dir`.
fn compile_module(dir: &Path) -> Result<(), Failure> {
    let src = dir.join(format!("{EPMD_MODULE}.erl"));
    std::fs::write(&src, EPMD_MODULE_SRC)
        .map_err(|e| (1, format!("cannot write {}: {e}", src.display())))?;
    let out = Command::new("erlc")
        .arg("-o")
        .arg(dir)
        .arg(&src)
        .output()
        .map_err(|e| (1, format!("cannot run `erlc` (install Erlang/OTP): {e}")))?;
    if !out.status.success() {
        return Err((
            1,
            format!(
                "erlc failed on {EPMD_MODULE}.erl: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ));
    }
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

/// 64 bits from the OS's random source (the throwaway cookie guards the
/// laptop node's listener, so it must not be guessable); time and pid
/// hashed with a randomly keyed hasher if that source fails.
fn random_u64() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        h.write_u32(std::process::id());
        h.finish()
    })
}

/// A 0700 directory under the system temporary directory, removed on drop.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn create() -> std::io::Result<PrivateDir> {
        use std::os::unix::fs::DirBuilderExt;
        let path = std::env::temp_dir().join(format!(
            "erlkube-remsh-{}-{:016x}",
            std::process::id(),
            random_u64()
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(PrivateDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::parse_via;

    #[test]
    fn via_takes_ip_port_and_names() {
        assert_eq!(
            parse_via("127.0.0.1:9100").unwrap(),
            "127.0.0.1:9100".parse().unwrap()
        );
        assert_eq!(
            parse_via("[::1]:9100").unwrap(),
            "[::1]:9100".parse().unwrap()
        );
        assert_eq!(parse_via("localhost:9100").unwrap().port(), 9100);
        for bad in [
            "9100",
            "127.0.0.1",
            "127.0.0.1:x",
            ":9100",
            "127.0.0.1:70000",
        ] {
            assert!(parse_via(bad).is_err(), "{bad}");
        }
    }
}
