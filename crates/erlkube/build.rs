//! Link settings for the lean `erlkube-epmd` binary only.
//!
//! By default it is linked as a position-dependent executable
//! (`-no-pie`): the linker resolves the ~13,000 relative relocations of a
//! PIE at link time, so the loader neither reads `.rela.dyn` (~310 KB) nor
//! writes every page of `.data.rel.ro` (~250 KB) at start, and those pages
//! stay out of the daemon's resident set (it runs in every pod; issue 20).
//! The objects are the same (position-independent) ones the other
//! binaries use, so nothing is compiled twice. The cost: the executable's
//! own addresses are not randomised (libraries, heap and stack still are).
//!
//! `ERLKUBE_EPMD_LINK` at build time chooses otherwise:
//!
//! - `relr`: a PIE with packed relative relocations
//!   (`-z pack-relative-relocs`): fully randomised, idle RSS ~5 % above
//!   `no-pie`, but the binary then needs glibc >= 2.36 where it runs (the
//!   default needs 2.34: Ubuntu 22.04 and UBI 9 images run it).
//! - `pie`: the toolchain's default (~17 % more idle RSS than `no-pie`).
//! - `no-pie`: the default.
//!
//! BENCHMARKS.md has the three measured against OTP's epmd.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=ERLKUBE_EPMD_LINK");
    let target = std::env::var("TARGET").unwrap_or_default();
    if !target.contains("linux") {
        return;
    }
    let arg = match std::env::var("ERLKUBE_EPMD_LINK").as_deref() {
        Ok("") | Ok("no-pie") | Err(_) => Some("-no-pie"),
        Ok("relr") => Some("-Wl,-z,pack-relative-relocs"),
        Ok("pie") => None,
        Ok(other) => panic!(
            "ERLKUBE_EPMD_LINK={other:?} is not a link mode of erlkube-epmd: use no-pie (the default), relr (PIE, needs glibc >= 2.36 at run time) or pie"
        ),
    };
    if let Some(arg) = arg {
        println!("cargo:rustc-link-arg-bin=erlkube-epmd={arg}");
    }
}
