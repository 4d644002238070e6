//! The README's commands are what CI runs: `.ci/run` ends by calling the
//! README's test command exactly, that command runs the lints with
//! warnings denied before the tests, and the set-up line works on a
//! fresh Debian machine (package lists fetched before installing).

fn repo_file(path: &str) -> String {
    let p = format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// The indented command lines of the README (4-space code lines).
fn readme_commands() -> Vec<String> {
    repo_file("README.md")
        .lines()
        .filter_map(|l| l.strip_prefix("    "))
        .map(|l| l.trim().to_owned())
        .collect()
}

#[test]
fn ci_runs_exactly_the_readme_test_command_and_it_checks_lints() {
    let readme = repo_file("README.md");
    let test_section = readme
        .split("\nTest ")
        .nth(1)
        .expect("README has a Test paragraph");
    let command = test_section
        .lines()
        .find_map(|l| l.strip_prefix("    "))
        .expect("an indented test command")
        .trim()
        .to_owned();
    let ci = repo_file(".ci/run");
    let last = ci
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap();
    assert_eq!(last, command, ".ci/run ends with the README's test command");
    let script = repo_file(command.split_whitespace().next().unwrap());
    for step in [
        "cargo fmt --all --check",
        "cargo clippy --workspace --all-targets --locked -- -D warnings",
        "RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps",
        "cargo test --workspace --locked",
    ] {
        assert!(script.contains(step), "{command} runs `{step}`");
    }
    for pkg in ["erlang-mnesia", "erlang-ssl", "prometheus"] {
        assert!(ci.contains(pkg), ".ci/run installs {pkg}");
    }
}

#[test]
fn the_setup_line_updates_package_lists_before_installing() {
    let setup = readme_commands()
        .into_iter()
        .find(|c| c.contains("apt-get install"))
        .expect("README's set-up line");
    let update = setup.find("apt-get update").expect("runs apt-get update");
    assert!(update < setup.find("apt-get install").unwrap(), "{setup}");
    // No separate epmd step is needed: `erlkube node` starts one.
    assert!(setup.contains("erlkube node"), "{setup}");
}
