//! Compiles every bpf/*.bpf.c into a libbpf-rs skeleton in OUT_DIR.

use std::{env, fs, path::PathBuf};

use libbpf_cargo::SkeletonBuilder;

/// libbpf-cargo logs clang's stderr; turn each line into a cargo warning so it is seen.
struct ClangWarnings;

impl log::Log for ClangWarnings {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.target() == "compiler-stderr"
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            println!("cargo:warning={}", r.args());
        }
    }
    fn flush(&self) {}
}

fn main() {
    let _ = log::set_logger(&ClangWarnings).map(|()| log::set_max_level(log::LevelFilter::Info));
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
