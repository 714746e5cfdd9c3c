//! Deployment files: the Kubernetes manifests pass schema validation (scripts/k8s-validate.sh,
//! kubernetes-validate in strict mode), the validator does reject broken ones, and the
//! Dockerfile, the DaemonSet and the Service agree on the command, port and probe paths.
//! No root needed; the first run needs PyPI to make the validator's venv.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const SERVE_ARGS: &str = r#"["serve", "--listen", "0.0.0.0:2112"]"#;

fn read(rel: &str) -> String {
    let p = Path::new(ROOT).join(rel);
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// Runs scripts/k8s-validate.sh on `files` (none: its default set), as CI does: no stdin.
fn validate(files: &[&Path]) -> (Output, String) {
    let out = Command::new("bash")
        .arg(Path::new(ROOT).join("scripts/k8s-validate.sh"))
        .args(files)
        .current_dir(ROOT)
        .stdin(Stdio::null())
        .output()
        .expect("spawn bash scripts/k8s-validate.sh");
    let text = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

/// The line the validator printed for `name`.
fn line_for<'a>(stdout: &'a str, name: &str) -> &'a str {
    let prefix = format!("{name}: ");
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with(&prefix)).collect();
    assert_eq!(lines.len(), 1, "one line for {name} expected in:\n{stdout}");
    lines[0]
}

#[test]
fn manifests_pass_strict_schema_validation() {
    let (out, text) = validate(&[]);
    assert!(out.status.success(), "k8s-validate.sh failed\n{text}");
    let stdout = String::from_utf8_lossy(&out.stdout);

    let mut names: Vec<String> = fs::read_dir(Path::new(ROOT).join("deploy/k8s"))
        .expect("deploy/k8s exists")
        .map(|e| e.expect("readable deploy/k8s entry").file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    names.sort();
    for want in [
        "daemonset.yaml",
        "service.yaml",
        "servicemonitor.yaml",
        "marker-daemonset.yaml",
    ] {
        assert!(names.iter().any(|n| n == want), "deploy/k8s/{want} missing");
    }
    assert_eq!(
        stdout.lines().count(),
        names.len(),
        "one line per manifest expected\n{text}"
    );
    for n in &names {
        let line = line_for(&stdout, &format!("deploy/k8s/{n}"));
        if n == "servicemonitor.yaml" {
            // A Prometheus Operator CRD: no schema to validate it against.
            assert!(line.contains(": skipped ("), "{line}");
        } else {
            assert!(line.contains(": valid ("), "{line}");
            assert!(line.contains("strict"), "{line}");
        }
    }
    let m = line_for(&stdout, "deploy/k8s/marker-daemonset.yaml");
    for r in [
        "configmap/netstack-lat-marker",
        "daemonset/netstack-lat-marker",
    ] {
        assert!(m.contains(r), "{r} not validated: {m}");
    }
    let ds = line_for(&stdout, "deploy/k8s/daemonset.yaml");
    for r in [
        "namespace/netstack-lat",
        "serviceaccount/netstack-lat",
        "daemonset/netstack-lat",
    ] {
        assert!(ds.contains(r), "{r} not validated: {ds}");
    }
}

/// A temporary directory removed on drop, even when the test fails.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("netstack-lat-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn validator_rejects_broken_manifests() {
    let original = read("deploy/k8s/daemonset.yaml");
    let dir = TempDir::new("deploy-test");

    // A faithful copy passes, so the failures below come from the edits alone.
    let copy = dir.0.join("copy.yaml");
    fs::write(&copy, &original).expect("write copy");
    let (out, text) = validate(&[&copy]);
    assert!(out.status.success(), "unchanged copy rejected\n{text}");

    // (file name, edit, what the validator's message must name)
    let cases: [(&str, (&str, &str), &str); 3] = [
        // Wrong type.
        (
            "wrong-type.yaml",
            ("hostNetwork: true", "hostNetwork: \"yes\""),
            "hostNetwork",
        ),
        // Unknown field in the pod spec: only strict mode catches it.
        (
            "unknown-field.yaml",
            ("hostPID: true", "hostPID: true\n      hostNetworking: true"),
            "hostNetworking",
        ),
        // An apiVersion with no schema: kubernetes-validate only warns and exits 0 here,
        // the script must not let it pass.
        ("unknown-api.yaml", ("apps/v1", "apps/v2"), "apps/v2"),
    ];
    for (name, (from, to), needle) in cases {
        assert_eq!(
            original.matches(from).count(),
            1,
            "{from:?} should occur once in daemonset.yaml"
        );
        let bad = dir.0.join(name);
        fs::write(&bad, original.replace(from, to)).expect("write broken copy");
        let (out, text) = validate(&[&bad]);
        assert!(!out.status.success(), "{name} was accepted\n{text}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = line_for(&stdout, &bad.to_string_lossy());
        assert!(line.ends_with(": INVALID"), "{line}\n{text}");
        assert!(stdout.contains(needle), "{needle} not named\n{text}");
    }
}

/// The text between the first '[' and the matching last ']' on the first line starting
/// with `prefix` (after indentation), with whitespace removed.
fn list_after(text: &str, prefix: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?}"));
    let (a, b) = (line.find('[').expect("["), line.rfind(']').expect("]"));
    line[a..=b].split_whitespace().collect()
}

#[test]
fn dockerfile_daemonset_and_service_agree() {
    let docker = read("Dockerfile");
    let make = read("Makefile");
    let ds = read("deploy/k8s/daemonset.yaml");
    let svc = read("deploy/k8s/service.yaml");
    let sm = read("deploy/k8s/servicemonitor.yaml");

    // The image is built by the recipe of `make static`, and checks the result is static.
    for piece in [
        "LIBBPF_SYS_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu",
        "RUSTFLAGS=\"-C target-feature=+crt-static\"",
        "cargo build --release --features static --target x86_64-unknown-linux-gnu",
    ] {
        let in_make = piece.replace("cargo build", "$(CARGO) build").replace(
            "--target x86_64-unknown-linux-gnu",
            "--target $(STATIC_TARGET)",
        );
        assert!(
            make.contains(&in_make),
            "Makefile no longer has {in_make:?}"
        );
        assert!(docker.contains(piece), "Dockerfile lacks {piece:?}");
    }
    assert!(make.contains("STATIC_TARGET := x86_64-unknown-linux-gnu"));
    assert!(docker.contains("statically linked"), "no static check");
    assert!(docker.contains("COPY --from=build /netstack-lat /netstack-lat"));
    let froms: Vec<&str> = docker.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "two stages: {froms:?}");
    assert_eq!(froms[0], "FROM rust:1-bookworm AS build");
    assert!(
        froms[1] == "FROM scratch" || froms[1].starts_with("FROM gcr.io/distroless/static"),
        "{}",
        froms[1]
    );

    // It ends by running the exporter on 2112.
    let tail: Vec<&str> = docker
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .rev()
        .take(2)
        .collect();
    assert_eq!(
        tail,
        [
            &format!("CMD {SERVE_ARGS}") as &str,
            r#"ENTRYPOINT ["/netstack-lat"]"#
        ]
    );
    assert!(docker.lines().any(|l| l.trim() == "EXPOSE 2112"));

    // The DaemonSet runs the image of this version with the same arguments, on the same port,
    // and probes the exporter's health endpoint there.
    let image = format!(
        "image: ghcr.io/netstack-lat/netstack-lat:{}",
        env!("CARGO_PKG_VERSION")
    );
    assert!(ds.contains(&image), "{image} not in daemonset.yaml");
    let cmd: String = SERVE_ARGS.split_whitespace().collect();
    assert_eq!(list_after(&docker, "CMD "), cmd);
    assert_eq!(list_after(&ds, "args:"), cmd);
    let port = cmd
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches(['"', ']']).parse::<u16>().ok())
        .expect("port in the --listen address");
    assert_eq!(port, 2112);
    assert!(ds.contains(&format!("containerPort: {port}")));
    assert!(ds.contains(&format!("prometheus.io/port: \"{port}\"")));
    assert!(ds.contains("prometheus.io/scrape: \"true\""));
    assert_eq!(
        ds.matches("- name: metrics").count(),
        1,
        "one port named metrics"
    );
    for probe in ["readinessProbe:", "livenessProbe:"] {
        let at = ds.find(probe).unwrap_or_else(|| panic!("no {probe}"));
        let body: Vec<&str> = ds[at..].lines().skip(1).take(3).map(str::trim).collect();
        assert_eq!(
            body,
            ["httpGet:", "path: /healthz", "port: metrics"],
            "{probe}"
        );
    }
    for want in [
        "hostNetwork: true",
        "hostPID: true",
        "dnsPolicy: ClusterFirstWithHostNet",
        "priorityClassName: system-node-critical",
        "privileged: false",
        "readOnlyRootFilesystem: true",
        "runAsUser: 0",
        "drop: [\"ALL\"]",
        "automountServiceAccountToken: false",
        "mountPropagation: HostToContainer",
        "maxUnavailable: 10%",
    ] {
        assert!(ds.contains(want), "{want:?} not in daemonset.yaml");
    }
    for cap in ["BPF", "PERFMON", "NET_ADMIN", "SYS_RESOURCE", "SYS_ADMIN"] {
        assert!(
            ds.lines().any(|l| l.trim() == format!("- {cap}")),
            "capability {cap} not added"
        );
    }

    // The Service and the ServiceMonitor point at that port by its name.
    assert!(svc.contains("clusterIP: None"), "service is not headless");
    assert!(svc.contains(&format!("port: {port}")));
    assert!(svc.contains("targetPort: metrics"));
    assert!(sm.contains("- port: metrics"));
    assert!(sm.contains("interval: 15s"));
}
