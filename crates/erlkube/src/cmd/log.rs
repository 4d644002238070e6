//! Logging set-up shared by the commands (and by the lean `erlkube-epmd`
//! binary, which includes this file): `RUST_LOG` or a default level, to
//! standard error with control characters escaped.

/// Logs to stderr, filtered by RUST_LOG (else `default`); colours only on
/// a terminal, so container logs stay plain text; control characters in a
/// line escaped (untrusted names and reasons cannot forge lines).
pub(crate) fn init_tracing(default: &str) {
    use std::io::IsTerminal;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    let ansi = std::io::stderr().is_terminal();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(EscapingStderr { ansi })
        .with_ansi(ansi)
        .try_init();
}

/// Standard error for log lines, with every control character of a line
/// escaped (`\n` as `\\n`, others as `\\u{..}`) except its final newline
/// (and ESC when colours are on): a node name or reason from the network
/// cannot start a forged log line or drive the terminal.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EscapingStderr {
    /// Colours on: keep ESC (the formatter's own colour codes).
    pub(crate) ansi: bool,
}

impl std::io::Write for EscapingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let body = buf.strip_suffix(b"\n").unwrap_or(buf);
        let mut out = Vec::with_capacity(buf.len() + 8);
        for &b in body {
            match b {
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.push(b'\t'),
                0x1b if self.ansi => out.push(b),
                b if b < 0x20 || b == 0x7f => {
                    out.extend_from_slice(format!("\\u{{{b:x}}}").as_bytes())
                }
                b => out.push(b),
            }
        }
        if body.len() < buf.len() {
            out.push(b'\n');
        }
        std::io::Write::write_all(&mut std::io::stderr().lock(), &out)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::Write::flush(&mut std::io::stderr())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for EscapingStderr {
    type Writer = EscapingStderr;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}
