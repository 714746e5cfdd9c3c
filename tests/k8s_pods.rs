//! Pod labels from the node's own files: receivers run in real cgroups named as the kubelet
//! names them (systemd driver on the cgroup v2 hierarchy, cgroupfs driver on a v1 controller
//! of this hybrid host), each in its own network namespace, with a pods directory of the
//! kubelet's shape; a third runs in a cgroup that is no pod's. trace's connection rows and
//! serve's /metrics must name each pod, and nothing for the third.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

const UID_A: &str = "3f1c2b9a-7d4e-4c1a-9b2f-0e5d6c7b8a91";
const UID_B: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
const ID_A: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904b825dc642cb6eb9a060e54bf";
const ID_B: &str = "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391e69de29bb2d1d6434b8b29ae";

/// cgroup directories made for the test, removed (deepest first) when it ends.
struct Cgroups(Vec<PathBuf>);

impl Cgroups {
    /// Make `leaf` under `root` (and the directories above it); its cgroup.procs file.
    fn make(&mut self, root: &str, leaf: &str) -> PathBuf {
        let mut p = PathBuf::from(root);
        for part in leaf.split('/') {
            p.push(part);
            if !p.exists() {
                std::fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
                self.0.push(p.clone());
            }
        }
        p.join("cgroup.procs")
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for p in self.0.iter().rev() {
            // Its processes have exited; a cgroup with none can go.
            for _ in 0..50 {
                if std::fs::remove_dir(p).is_ok() || !p.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The generator in namespace `ns`, started inside the cgroup of `procs`.
fn load_in_cgroup(ns: &str, procs: &Path, args: &[&str]) -> Proc {
    let script = format!(
        "echo $$ > {} && exec ip netns exec {ns} {LOAD} \"$@\"",
        procs.display()
    );
    let child = Command::new("sh")
        .args(["-c", &script, "sh"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nsl-load in a cgroup");
    Proc {
        child,
        what: format!("nsl-load {args:?} in {}", procs.display()),
        out: None,
        err: None,
    }
}

fn rx_row(v: &Value, port: u16) -> Value {
    v["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["direction"] == "rx" && c["dport"] == port)
        .unwrap_or_else(|| panic!("no RX row for port {port}: {v}"))
        .clone()
}

fn netns_inode(ns: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/run/netns/{ns}")).unwrap().ino()
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn flows_carry_their_pods_labels() {
    common::require_root();
    const N: u64 = 20;
    let (t, t2) = (Topo::new(), Topo::new());
    let tag = std::process::id();
    let pods = std::env::temp_dir().join(format!("nsl-pods-{tag}"));
    let _ = std::fs::remove_dir_all(&pods);
    for d in [
        format!("shop_cart-0_{UID_A}"),
        format!("kube-system_dns-1_{UID_B}"),
    ] {
        std::fs::create_dir_all(pods.join(d).join("app")).unwrap();
    }
    let mut cg = Cgroups(Vec::new());
    let procs_a = cg.make(
        "/sys/fs/cgroup/unified",
        &format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID_A}.scope",
            UID_A.replace('-', "_")
        ),
    );
    let procs_b = cg.make(
        "/sys/fs/cgroup/memory",
        &format!("kubepods/besteffort/pod{UID_B}/{ID_B}"),
    );
    let procs_none = cg.make("/sys/fs/cgroup/unified", &format!("nslt-nopod-{tag}"));

    // Receivers first: the tools find each namespace's pod by a process in it.
    let (sa, sc) = (t.server(false, 9351), t2.server(false, 9353));
    // Pod B's receiver is on the a side.
    let sb = format!("{}:9352", t.a4);
    let n = N.to_string();
    let mut ra = load_in_cgroup(&t.b, &procs_a, &["udp-recv", "--bind", &sa, "--count", &n]);
    let mut rb = load_in_cgroup(&t.a, &procs_b, &["udp-recv", "--bind", &sb, "--count", &n]);
    let mut rc = load_in_cgroup(
        &t2.b,
        &procs_none,
        &["udp-recv", "--bind", &sc, "--count", &n],
    );
    for r in [&mut ra, &mut rb, &mut rc] {
        wait_ready(r);
    }
    let pods_dir = pods.display().to_string();
    let listen = format!("127.0.0.1:{}", free_port());
    let nss: Vec<String> = [&t.a, &t.b, &t2.a, &t2.b]
        .iter()
        .map(|n| t.netns_path(n))
        .collect();
    let mut common_args: Vec<&str> = Vec::new();
    for ns in &nss {
        common_args.extend(["--netns", ns.as_str()]);
    }
    common_args.extend(["--pods-dir", &pods_dir]);
    let mut sargs = vec!["serve", "--listen", &listen];
    sargs.extend(&common_args);
    let serve = tool(&sargs);
    let mut targs = vec!["trace", "--json", "--rx"];
    targs.extend(&common_args);
    let trace = tool(&targs);

    udp_send(&t.a, &sa, N, 2);
    udp_send(&t.b, &sb, N, 2);
    udp_send(&t2.a, &sc, N, 2);
    for r in [ra, rb, rc] {
        assert_eq!(r.finish(Duration::from_secs(20)).0, Some(0));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let (_, text) = get(&listen, "/metrics");
    let v = stop_summary(trace);
    serve.signal(libc::SIGTERM);
    assert_eq!(serve.finish(Duration::from_secs(20)).0, Some(0));

    // trace: each row names its reader's pod; the third none.
    let a = rx_row(&v, 9351);
    assert_eq!(
        (
            &a["k8s_namespace"],
            &a["k8s_pod"],
            &a["container_id"],
            &a["k8s_pod_uid"]
        ),
        (
            &"shop".into(),
            &"cart-0".into(),
            &ID_A.into(),
            &UID_A.into()
        ),
        "{a}"
    );
    let b = rx_row(&v, 9352);
    assert_eq!(
        (&b["k8s_namespace"], &b["k8s_pod"], &b["container_id"]),
        (&"kube-system".into(), &"dns-1".into(), &ID_B.into()),
        "{b}"
    );
    let c = rx_row(&v, 9353);
    for k in ["k8s_namespace", "k8s_pod", "container_id", "k8s_pod_uid"] {
        assert!(c.get(k).is_none(), "no pod, no {k}: {c}");
    }

    // serve: the span series of each pod's namespace carry its labels; the third's none.
    let series = |ns: &str| -> Vec<&str> {
        let needle = format!("netns=\"{}\"", netns_inode(ns));
        text.lines()
            .filter(|l| {
                l.starts_with("netstack_lat_span_latency_seconds_count{") && l.contains(&needle)
            })
            .collect()
    };
    let (in_a, in_b, in_c) = (series(&t.b), series(&t.a), series(&t2.b));
    assert!(
        !in_a.is_empty() && !in_b.is_empty() && !in_c.is_empty(),
        "{text}"
    );
    let want_a = format!("k8s_namespace=\"shop\",k8s_pod=\"cart-0\",container_id=\"{ID_A}\"");
    let want_b = format!("k8s_namespace=\"kube-system\",k8s_pod=\"dns-1\",container_id=\"{ID_B}\"");
    assert!(in_a.iter().all(|l| l.contains(&want_a)), "{in_a:?}");
    assert!(in_b.iter().all(|l| l.contains(&want_b)), "{in_b:?}");
    assert!(in_c.iter().all(|l| !l.contains("k8s_")), "{in_c:?}");
    let _ = std::fs::remove_dir_all(&pods);
}

#[test]
#[ignore = "needs root (BPF, namespaces): make test runs it with --include-ignored"]
fn without_a_pods_dir_or_with_no_k8s_nothing_breaks() {
    common::require_root();
    let p = tool(&["trace", "--json", "--no-k8s", "--duration", "1s"]);
    let (code, out, _) = p.finish(Duration::from_secs(20));
    assert_eq!(code, Some(0));
    assert!(!out.contains("k8s_"), "{out}");
}
