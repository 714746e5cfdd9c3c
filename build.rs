//! Compiles every bpf/*.bpf.c into a libbpf-rs skeleton in OUT_DIR.

use std::{env, fs, path::PathBuf};

use libbpf_cargo::util::CargoWarningFormatter;
use libbpf_cargo::SkeletonBuilder;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

fn main() {
    // libbpf-cargo reports clang's stderr through `tracing`: its formatter turns each line
    // into a `cargo:warning=` on stdout, so a -Wall warning from the BPF C is seen.
    // Only clang's stderr: libbpf-cargo's own info lines are not warnings.
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .event_format(CargoWarningFormatter)
                .with_writer(std::io::stdout),
        )
        .with(Targets::new().with_target("compiler-stderr", tracing::Level::INFO))
        .try_init();
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("target arch is set by cargo");
    let vmlinux = format!("vmlinux/{arch}");
    // bpf_tracing.h's PT_REGS accessors (kprobe arguments) are per architecture.
    let target_arch = format!(
        "-D__TARGET_ARCH_{}",
        match arch.as_str() {
            "x86_64" => "x86",
            "aarch64" => "arm64",
            "powerpc64" => "powerpc",
            "riscv64" => "riscv",
            other => other,
        }
    );
    println!("cargo:rerun-if-changed=bpf");
    println!("cargo:rerun-if-changed=vmlinux");

    let mut sources: Vec<PathBuf> = fs::read_dir("bpf")
        .expect("bpf/ exists")
        .map(|e| e.expect("readable bpf/ entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".bpf.c"))
        .collect();
    sources.sort();
    for src in sources {
        let name = src
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".bpf.c"))
            .expect("bpf source named NAME.bpf.c")
            .to_string();
        SkeletonBuilder::new()
            .source(&src)
            .clang_args(["-Wall", &target_arch, "-I", &vmlinux, "-I", "bpf"])
            .build_and_generate(out.join(format!("{name}.skel.rs")))
            .unwrap_or_else(|e| panic!("building the skeleton of {}: {e:#}", src.display()));
    }
}
