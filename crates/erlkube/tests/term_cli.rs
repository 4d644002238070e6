//! `erlkube term` run as a process: encode/decode round trips, hex input,
//! and one-line errors with exit code 2.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_erlkube"))
        .arg("term")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn erlkube");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn encode_hex_matches_term_to_binary_bytes() {
    // term_to_binary({ok, [1, 2]}) on OTP 25
    let o = run(&["encode", "--hex", "{ok, [1, 2]}"], b"");
    assert!(o.status.success());
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        "8368026400026f6b6b00020102\n"
    );
    let o = run(&["encode", "--hex", "--minor-version", "2", "ok"], b"");
    assert_eq!(String::from_utf8(o.stdout).unwrap(), "8377026f6b\n");
}

#[test]
fn raw_bytes_round_trip_through_decode() {
    let text = r#"{ok,[1,2.5,<<"bin">>,#{a => 'B'}],"str",#Pid<'a@h.x'.85.0.3>}"#;
    let o = run(&["encode", text], b"");
    assert!(o.status.success());
    let d = run(&["decode"], &o.stdout);
    assert!(d.status.success(), "{}", String::from_utf8_lossy(&d.stderr));
    assert_eq!(String::from_utf8(d.stdout).unwrap(), format!("{text}\n"));
}

#[test]
fn compressed_output_decodes() {
    let o = run(
        &[
            "encode",
            "--compressed",
            "[\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"]",
        ],
        b"",
    );
    assert_eq!(o.stdout[1], 80, "compressed tag");
    let d = run(&["decode"], &o.stdout);
    assert_eq!(
        String::from_utf8(d.stdout).unwrap(),
        "[\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"]\n"
    );
}

#[test]
fn hex_input_tolerates_whitespace() {
    let d = run(&["decode", "--hex"], b"83 68 02\n64 00 02 6f 6b\t61 01\n");
    assert!(d.status.success());
    assert_eq!(String::from_utf8(d.stdout).unwrap(), "{ok,1}\n");
}

fn assert_bad(o: &Output, needle: &str) {
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8(o.stderr.clone()).unwrap();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    assert!(o.stdout.is_empty());
}

#[test]
fn bad_input_is_one_line_exit_2() {
    assert_bad(&run(&["decode", "--hex"], b"83 68 02 64 00"), "byte 4");
    assert_bad(&run(&["decode", "--hex"], b"83 zz"), "offset 3");
    assert_bad(&run(&["decode", "--hex"], b"836"), "odd number");
    assert_bad(&run(&["decode"], &[131, 121, 0]), "LOCAL_EXT");
    assert_bad(&run(&["encode", "{ok, [1, 2}"], b""), "line 1, column 11");
}

fn run_encode_only(args: &[&str]) -> Output {
    run(args, b"")
}

#[test]
fn bad_syntax_names_line_and_column() {
    assert_bad(
        &run_encode_only(&["encode", "{a,\n  #{b => }}"]),
        "line 2, column 10",
    );
}

#[test]
fn terms_with_a_leading_minus_encode_back() {
    // What `decode` prints for term_to_binary(-3) and term_to_binary(-1.5)
    // (OTP 25 bytes) must encode back, with flags before or after the term.
    for (args, hex) in [
        (&["encode", "--hex", "-3"][..], "8362fffffffd\n"),
        (&["encode", "-3", "--hex"][..], "8362fffffffd\n"),
        (&["encode", "--hex", "-1.5"][..], "8346bff8000000000000\n"),
    ] {
        let o = run(args, b"");
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(String::from_utf8(o.stdout).unwrap(), hex, "{args:?}");
    }
    let d = run(&["decode", "--hex"], b"8362fffffffd");
    assert_eq!(String::from_utf8(d.stdout).unwrap(), "-3\n");
}
