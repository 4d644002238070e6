//! `erlkube-epmd`: the port mapper alone, the same code as `erlkube epmd`
//! (its module is included here) in a binary that links nothing else.
//!
//! It runs in every pod, so its memory counts: the shared `erlkube`
//! binary's text and relocated data (Kubernetes client, TLS, formation)
//! are mapped into the daemon even though it never runs them, which cost
//! about 3.5 MB of resident memory at idle. Flags, output and exit codes
//! are those of `erlkube epmd` (`erlkube-epmd -help`); under the name
//! `epmd` (a symlink) it replaces OTP's port mapper.

use std::ffi::OsString;
use std::process::ExitCode;

#[path = "../cmd/log.rs"]
mod log;

#[path = "../cmd/epmd.rs"]
mod epmd;

fn main() -> ExitCode {
    let mut args: Vec<OsString> = std::env::args_os().skip(1).collect();
    // `-daemon` re-executes the running binary as `erlkube epmd ARGS`:
    // the subcommand word is accepted here too.
    if args.first().is_some_and(|a| a == "epmd") {
        args.remove(0);
    }
    epmd::main(args)
}
