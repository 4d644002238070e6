//! `erlkube term`: External Term Format on the command line.
//!
//! `decode` reads ETF bytes (or hex with `--hex`) on stdin and prints the
//! term in Erlang syntax; `encode 'TERM'` parses Erlang syntax and writes
//! ETF bytes (or hex with `--hex`). Bad input prints one line naming the
//! byte offset or the line:column and exits with code 2.

use std::io::{Read, Write};
use std::process::ExitCode;

use erlkube_etf::EncodeOptions;

#[derive(clap::Subcommand)]
pub enum TermCommand {
    /// Read ETF bytes on stdin, print the term in Erlang syntax.
    Decode {
        /// Stdin is hex text (whitespace ignored) instead of raw bytes.
        #[arg(long)]
        hex: bool,
    },
    /// Parse an Erlang term and write its ETF bytes to stdout.
    Encode {
        /// The term, e.g. '{ok, [1, 2.5, <<"bin">>, #{a => b}]}' or '-3'
        /// (a leading `-` is part of the term, as the printer writes it).
        #[arg(allow_hyphen_values = true)]
        term: String,
        /// Print lower-case hex and a newline instead of raw bytes.
        #[arg(long)]
        hex: bool,
        /// Compress (zlib level 6) when that makes the result smaller.
        #[arg(long)]
        compressed: bool,
        /// 1: latin-1 atoms as ATOM_EXT (OTP 25's term_to_binary/1);
        /// 2: UTF-8 atoms (OTP 26+ and the distribution).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
        minor_version: u8,
    },
}

/// Bad input from the user: reported on one line, exit code 2.
struct BadInput(String);

pub fn main(cmd: TermCommand) -> ExitCode {
    let r = match cmd {
        TermCommand::Decode { hex } => decode(hex),
        TermCommand::Encode {
            term,
            hex,
            compressed,
            minor_version,
        } => encode(&term, hex, compressed, minor_version),
    };
    match r {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(BadInput(msg))) => {
            eprintln!("erlkube term: {msg}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("erlkube term: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parses hex text, ignoring whitespace; errors name the character offset.
fn unhex(text: &[u8]) -> Result<Vec<u8>, BadInput> {
    let mut out = Vec::with_capacity(text.len() / 2);
    let mut high: Option<(usize, u8)> = None;
    for (i, &c) in text.iter().enumerate() {
        if c.is_ascii_whitespace() {
            continue;
        }
        let v = match (c as char).to_digit(16) {
            Some(v) => v as u8,
            None => {
                return Err(BadInput(format!(
                    "invalid hex character {:?} at input offset {i}",
                    c as char
                )))
            }
        };
        match high.take() {
            None => high = Some((i, v)),
            Some((_, h)) => out.push(h << 4 | v),
        }
    }
    if let Some((i, _)) = high {
        return Err(BadInput(format!(
            "odd number of hex digits (unpaired digit at input offset {i})"
        )));
    }
    Ok(out)
}

fn decode(hex: bool) -> anyhow::Result<Result<(), BadInput>> {
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input)?;
    let bytes = if hex {
        match unhex(&input) {
            Ok(b) => b,
            Err(e) => return Ok(Err(e)),
        }
    } else {
        input
    };
    match erlkube_etf::decode(&bytes) {
        Ok(t) => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{t}")?;
            out.flush()?;
            Ok(Ok(()))
        }
        Err(e) => Ok(Err(BadInput(e.to_string()))),
    }
}

fn encode(
    text: &str,
    hex: bool,
    compressed: bool,
    minor_version: u8,
) -> anyhow::Result<Result<(), BadInput>> {
    let term = match erlkube_etf::parse(text) {
        Ok(t) => t,
        Err(e) => return Ok(Err(BadInput(e.to_string()))),
    };
    let opts = EncodeOptions {
        minor_version,
        compression: compressed.then_some(6),
    };
    let mut bytes = Vec::new();
    erlkube_etf::encode_with(&term, &opts, &mut bytes);
    let mut out = std::io::stdout().lock();
    if hex {
        let mut s = String::with_capacity(bytes.len() * 2 + 1);
        for b in &bytes {
            s.push_str(&format!("{b:02x}"));
        }
        writeln!(out, "{s}")?;
    } else {
        out.write_all(&bytes)?;
    }
    out.flush()?;
    Ok(Ok(()))
}
