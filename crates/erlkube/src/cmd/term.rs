//! `erlkube term`: External Term Format on the command line.

use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum TermCommand {}

pub fn main(cmd: TermCommand) -> ExitCode {
    match cmd {}
}
