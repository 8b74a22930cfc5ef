//! Embeds libtorch's library folder as an rpath so `txcat` runs without LD_LIBRARY_PATH.
//! torch-sys links libtorch but leaves finding it at run time to the user; the wheel's own
//! libraries already carry rpaths to their CUDA dependencies, so one entry is enough.
//! It also keeps libtorch_cuda.so in the binary's dependencies (see below).
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=TXCAT_EXTRA_RPATH");
    if let Ok(libtorch) = std::env::var("LIBTORCH") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{libtorch}/lib");
        // rustc links with --as-needed, which drops libtorch_cuda.so because no symbol of it is
        // used directly; without it loaded, libtorch has no CUDA backend and sees no GPU
        // (tch-rs issue #980). Force it in when the wheel is a CUDA build.
        if Path::new(&libtorch).join("lib/libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
    // Extra runtime locations (e.g. the container's /opt/libtorch/lib), colon separated.
    if let Ok(extra) = std::env::var("TXCAT_EXTRA_RPATH") {
        for dir in extra.split(':').filter(|d| !d.is_empty()) {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
    }
}
