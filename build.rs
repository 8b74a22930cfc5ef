//! Embeds libtorch's library folder as an rpath so `txcat` runs without LD_LIBRARY_PATH.
//! torch-sys links libtorch but leaves finding it at run time to the user; the wheel's own
//! libraries already carry rpaths to their CUDA dependencies, so one entry is enough.
//! It leaves libtorch_cuda.so out of the binary's dependencies (src/cuda_backend.rs loads it
//! where a GPU can use it), and compiles two small C++ shims against the wheel's headers: c10d
//! (csrc/c10d_shim.cpp, see src/train/distributed) and the int8 linear layer
//! (csrc/quantized_linear.cpp, see src/model/quantized.rs).
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo:rerun-if-env-changed=TXCAT_EXTRA_RPATH");
    println!("cargo:rerun-if-changed=csrc/c10d_shim.cpp");
    println!("cargo:rerun-if-changed=csrc/quantized_linear.cpp");
    println!("cargo:rerun-if-changed=csrc/guarded.h");
    let libtorch = std::env::var("LIBTORCH").unwrap_or_else(|_| {
        panic!(
            "LIBTORCH is not set: point it at the torch wheel's `torch` folder \
             (scripts/lib.sh export_libtorch_env does); the c10d shim compiles against its headers"
        )
    });
    println!("cargo:rustc-link-arg=-Wl,-rpath,{libtorch}/lib");
    // libtorch_cuda.so is left out on purpose: rustc links with --as-needed and nothing here
    // calls it, so the CUDA libraries (~120 MiB resident) stay out of CPU-only processes;
    // src/cuda_backend.rs loads it at start-up where NVIDIA's driver is present.
    // Extra runtime locations (e.g. the container's /opt/libtorch/lib), colon separated.
    if let Ok(extra) = std::env::var("TXCAT_EXTRA_RPATH") {
        for dir in extra.split(':').filter(|d| !d.is_empty()) {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
    }
    compile_c10d_shim(Path::new(&libtorch));
    torch_cpp(Path::new(&libtorch))
        .file("csrc/quantized_linear.cpp")
        .compile("txcat_qlinear");
    // After the archives, so --as-needed keeps what the shims use.
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}

/// A C++ build against the wheel's libtorch headers, with its ABI.
fn torch_cpp(libtorch: &Path) -> cc::Build {
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .include(libtorch.join("include"))
        .include(libtorch.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        // libtorch's headers are noisy under -Wall; the shims' own code is small.
        .warnings(false)
        .extra_warnings(false);
    build
}

/// The shim needs Gloo's headers (Debian's libgloo-dev: the wheel ships none) for the transport
/// device type only; the code itself is libtorch_cpu's. ProcessGroupNCCL is not compiled in: it
/// needs libtorch_cuda.so, so it lives in a plugin the shim loads on GPU jobs
/// (csrc/nccl_plugin.cpp, built by scripts/lib.sh `build_nccl_plugin`).
fn compile_c10d_shim(libtorch: &Path) {
    if !Path::new("/usr/include/gloo/config.h").exists() {
        println!(
            "cargo:warning=Gloo headers not found in /usr/include/gloo: install libgloo-dev \
             (scripts/lib.sh setup does) or the c10d shim will not compile"
        );
    }
    torch_cpp(libtorch)
        .file("csrc/c10d_shim.cpp")
        .define("USE_C10D_GLOO", None)
        .compile("txcat_c10d");
}
