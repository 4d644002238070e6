//! Test support for erlkube's interop tests (a dev-dependency only, never
//! published). It owns process and port plumbing around the *real* OTP
//! tools and does blocking IO (std only, no async runtime):
//!
//! - [`free_port`]: a loopback TCP port that is free on 127.0.0.1 and ::1.
//! - [`ChildGuard`]: a child process in its own process group, killed
//!   (the whole group) on drop.
//! - [`OtpEpmd`]: OTP's `epmd -port P` in the foreground on a free port,
//!   killed on drop. Never the default port 4369.
//! - [`ErlNode`]: an `erl` (or `elixir`) node pointed at a given epmd port
//!   through `ERL_EPMD_PORT`, with `-start_epmd false`, that evaluates
//!   Erlang expressions sent to it and returns the `~p` text of the result.
//! - [`wait_until`]: poll a condition until it holds or a timeout passes.
//! - [`otp27`]: OTP 27 from Debian trixie in a chroot, for the flags that
//!   OTP 26+ makes mandatory.
//!
//! Results are plain strings (the Erlang printer's text), so this crate does
//! not depend on erlkube's term crate.
//!
//! Missing tools are errors, not skips: a test that needs `erl` fails when
//! `erl` is not installed.
//!
//! # Example
//!
//! ```no_run
//! use erlkube_testkit::{ErlNode, OtpEpmd};
//!
//! let epmd = OtpEpmd::start().unwrap();
//! let a = ErlNode::builder("a_example").epmd_port(epmd.port()).start().unwrap();
//! let b = ErlNode::builder("b_example").epmd_port(epmd.port()).start().unwrap();
//! assert_eq!(a.eval(&format!("net_adm:ping('{}')", b.node_name())).unwrap(), "pong");
//! ```

mod child;
pub mod cpu;
pub mod docs;
mod epmd;
pub mod erl_output;
mod node;
pub mod otp27;
mod port;
pub mod tls;
mod wait;

pub use child::ChildGuard;
pub use cpu::process_cpu_secs;
pub use epmd::OtpEpmd;
pub use node::{ErlNode, ErlNodeBuilder, EvalError, NameMode, Runtime};
pub use port::{free_port, loopback_port_is_free};
pub use wait::wait_until;

/// A name unique to this test process: `prefix` + `_` + pid + `_` + a
/// per-process counter. Use it for node names so that concurrent test runs
/// never collide.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}_{}_{n}", std::process::id())
}
