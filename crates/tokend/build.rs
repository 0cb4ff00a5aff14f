//! Links the daemon with packed relative relocations (`DT_RELR`) on
//! Linux with glibc: the position-independent binary's table of pointers
//! to fix up at start-up is then a few KiB instead of about 185 KiB, and
//! the loader reads (keeps resident) all of it in every daemon. glibc
//! takes such binaries since 2.36 (2022); to build for an older one, set
//! `TOKEND_NO_RELR=1`.

fn main() {
    println!("cargo:rerun-if-env-changed=TOKEND_NO_RELR");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let wanted = std::env::var_os("TOKEND_NO_RELR").is_none_or(|v| v.is_empty());
    if wanted && var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
