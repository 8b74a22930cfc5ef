//! Embeds libtorch's library folder as an rpath so `txcat` runs without LD_LIBRARY_PATH.
//! torch-sys links libtorch but leaves finding it at run time to the user; the wheel's own
//! libraries already carry rpaths to their CUDA dependencies, so one entry is enough.
//! It leaves libtorch_cuda.so out of the binary's dependencies (src/cuda_backend.rs loads it
//! where a GPU can use it), and compiles two small C++ shims against the wheel's headers: c10d
//! (csrc/c10d_shim.cpp, see src/train/distributed) and the int8 linear layer
//! (csrc/quantized_linear.cpp, see src/model/quantized.rs).
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo:rerun-if-env-changed=TXCAT_EXTRA_RPATH");
    println!("cargo:rerun-if-env-changed=TXCAT_NCCL");
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
    let cuda_wheel = Path::new(&libtorch).join("lib/libtorch_cuda.so").exists();
    // Extra runtime locations (e.g. the container's /opt/libtorch/lib), colon separated.
    if let Ok(extra) = std::env::var("TXCAT_EXTRA_RPATH") {
        for dir in extra.split(':').filter(|d| !d.is_empty()) {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
    }
    compile_c10d_shim(Path::new(&libtorch), cuda_wheel);
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
/// device type only; the code itself is libtorch_cpu's. ProcessGroupNCCL is compiled in only on
/// request (`TXCAT_NCCL=1`), for a CUDA wheel with NCCL and full CUDA runtime headers: that path
/// has not been compiled or run on a GPU machine yet, so it stays out of default builds.
fn compile_c10d_shim(libtorch: &Path, cuda_wheel: bool) {
    if !Path::new("/usr/include/gloo/config.h").exists() {
        println!(
            "cargo:warning=Gloo headers not found in /usr/include/gloo: install libgloo-dev \
             (scripts/lib.sh setup does) or the c10d shim will not compile"
        );
    }
    let mut build = torch_cpp(libtorch);
    build
        .file("csrc/c10d_shim.cpp")
        .define("USE_C10D_GLOO", None);
    if let Some(includes) = nccl_includes(libtorch, cuda_wheel) {
        build
            .define("USE_C10D_NCCL", None)
            .define("TXCAT_NCCL", None);
        for dir in includes {
            build.include(dir);
        }
    }
    build.compile("txcat_c10d");
}

/// NCCL and CUDA runtime include folders of a CUDA wheel (`site-packages/nvidia/...`), when
/// `TXCAT_NCCL=1` asks for them; a cargo warning says why when they are missing.
fn nccl_includes(libtorch: &Path, cuda_wheel: bool) -> Option<Vec<PathBuf>> {
    if std::env::var("TXCAT_NCCL").map_or(true, |v| v != "1") {
        return None;
    }
    let skip = |why: String| {
        println!("cargo:warning=TXCAT_NCCL=1 but {why}: building without ProcessGroupNCCL");
        None
    };
    if !cuda_wheel {
        return skip("the wheel has no libtorch_cuda.so".into());
    }
    let nvidia = libtorch.parent()?.join("nvidia");
    let nccl = nvidia.join("nccl/include");
    if !nccl.join("nccl.h").exists() {
        return skip(format!("{} has no nccl.h", nccl.display()));
    }
    // ProcessGroupNCCL.hpp pulls in ATen's CUDA headers, which need the full CUDA runtime
    // headers (crt/ included): the wheels' nvidia/cu13 or nvidia/cuda_runtime lack crt/, so this
    // takes a toolkit (CUDA_HOME) unless a wheel ships them whole.
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    let mut candidates: Vec<PathBuf> = ["cu13/include", "cuda_runtime/include"]
        .iter()
        .map(|d| nvidia.join(d))
        .collect();
    if let Ok(home) = std::env::var("CUDA_HOME") {
        candidates.insert(0, Path::new(&home).join("include"));
    }
    match candidates
        .into_iter()
        .find(|d| d.join("cuda_runtime_api.h").exists() && d.join("crt/host_config.h").exists())
    {
        Some(runtime) => Some(vec![nccl, runtime]),
        None => skip("no full CUDA runtime headers were found (set CUDA_HOME)".into()),
    }
}
