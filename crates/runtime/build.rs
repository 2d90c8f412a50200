//! Links the benchmark binary (which is also a shim) as a non-PIE executable.
//!
//! Why: a PIE's relocated read-only data (`.data.rel.ro`, vtables and the like; ~470 KiB
//! here) is written by the dynamic loader at start-up, so every process gets a private
//! dirty copy. Non-PIE, those pages stay clean and shared between all shims, which cuts
//! each idle shim's PSS by about that much. The trade-off is no ASLR for the binary's own
//! image (Go's containerd-shim is non-PIE by default too). The agent binary can do the
//! same in its own build script: `cargo:rustc-link-arg-bin=zlayer-agent=-no-pie`.
fn main() {
    println!("cargo:rustc-link-arg-bin=zlayer-runtime-bench=-no-pie");
}
