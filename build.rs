//! Embeds libtorch's library folder as an rpath so `txcat` runs without LD_LIBRARY_PATH.
//! torch-sys links libtorch but leaves finding it at run time to the user; the wheel's own
//! libraries already carry rpaths to their CUDA dependencies, so one entry is enough.
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=TXCAT_EXTRA_RPATH");
    if let Ok(libtorch) = std::env::var("LIBTORCH") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{libtorch}/lib");
    }
    // Extra runtime locations (e.g. the container's /opt/libtorch/lib), colon separated.
    if let Ok(extra) = std::env::var("TXCAT_EXTRA_RPATH") {
        for dir in extra.split(':').filter(|d| !d.is_empty()) {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
    }
}
