//! Link settings for the lean `erlkube-epmd` binary only.
//!
//! It is linked as a position-dependent executable (`-no-pie`): the
//! linker resolves the ~13,000 relative relocations of a PIE at link time,
//! so the loader neither reads `.rela.dyn` (~310 KB) nor writes every page
//! of `.data.rel.ro` (~250 KB) at start, and those pages stay out of the
//! daemon's resident set (it runs in every pod; issue 20). The objects are
//! the same (position-independent) ones the other binaries use, so nothing
//! is compiled twice. The cost: the executable's own addresses are no
//! longer randomised (libraries, heap and stack still are); the daemon
//! parses only fixed-size epmd requests in safe Rust.
fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.contains("linux") {
        println!("cargo:rustc-link-arg-bin=erlkube-epmd=-no-pie");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
