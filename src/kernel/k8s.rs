//! Which Kubernetes pod a process belongs to, from the node's own files and no credentials:
//! its cgroup path names the pod UID and the container (both kubelet cgroup drivers, with
//! containerd, CRI-O or Docker), and the kubelet's log directory `/var/log/pods/` has a
//! `<namespace>_<pod>_<uid>` directory per pod.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::UserError;

/// The kubelet's pod log directory: where pod names are found by default.
pub const DEFAULT_PODS_DIR: &str = "/var/log/pods";

/// A pod and the container a process runs in; namespace and name are empty when the pods
/// directory does not list the UID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Pod {
    pub k8s_namespace: String,
    pub k8s_pod: String,
    #[serde(rename = "k8s_pod_uid")]
    pub uid: String,
    pub container_id: String,
}

impl Pod {
    /// Prometheus labels: the container always, namespace and pod where known.
    pub fn labels(&self) -> Vec<(&'static str, &str)> {
        let mut l = Vec::new();
        if !self.k8s_pod.is_empty() {
            l.push(("k8s_namespace", self.k8s_namespace.as_str()));
            l.push(("k8s_pod", self.k8s_pod.as_str()));
        }
        l.push(("container_id", self.container_id.as_str()));
        l
    }
}

/// The pod UID (dashed) and container ID in one cgroup path, if it is a kubelet's:
/// systemd driver `.../kubepods-<qos>-pod<UID_with_underscores>.slice/<runtime>-<ID>.scope`,
/// cgroupfs driver `.../kubepods/<qos>/pod<UID>/<ID>` (QoS level absent for Guaranteed
/// pods); runtimes `cri-containerd`, `crio`, `docker`.
pub fn parse_cgroup_path(path: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let i = parts.iter().rposition(|p| pod_uid(p).is_some())?;
    let uid = pod_uid(parts[i])?;
    let container = parts.get(i + 1).and_then(|c| container_id(c))?;
    Some((uid, container))
}

/// `pod<UID>` (cgroupfs) or `kubepods[-<qos>]-pod<UID>.slice` (systemd, `_` for `-`).
fn pod_uid(seg: &str) -> Option<String> {
    let raw = if let Some(s) = seg.strip_suffix(".slice") {
        if !s.starts_with("kubepods") {
            return None;
        }
        s.rsplit_once("-pod")?.1.replace('_', "-")
    } else {
        seg.strip_prefix("pod")?.to_string()
    };
    let ok = raw.len() == 36
        && raw.chars().enumerate().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
    ok.then_some(raw)
}

/// `<runtime>-<ID>.scope` (systemd) or `<ID>` (cgroupfs): 64 hex digits.
fn container_id(seg: &str) -> Option<String> {
    let id = match seg.strip_suffix(".scope") {
        Some(s) => ["cri-containerd-", "crio-", "docker-"]
            .iter()
            .find_map(|p| s.strip_prefix(p))?,
        None => seg,
    };
    (id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit())).then(|| id.to_string())
}

/// The pod of a `/proc/PID/cgroup` text: the unified (v2) line first, then any v1
/// controller's (a hybrid host has both).
pub fn parse_proc_cgroup(text: &str) -> Option<(String, String)> {
    let paths: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (id, _, path) = (f.next()?, f.next()?, f.next()?);
            Some((id, path))
        })
        .collect();
    paths
        .iter()
        .filter(|(id, _)| *id == "0")
        .chain(paths.iter().filter(|(id, _)| *id != "0"))
        .find_map(|(_, p)| parse_cgroup_path(p))
}

/// A pods directory entry `<namespace>_<pod>_<uid>`: namespaces and pod names cannot hold
/// `_`, so the split is exact.
pub fn parse_pod_dir(name: &str) -> Option<(String, String, String)> {
    let mut f = name.splitn(3, '_');
    let (ns, pod, uid) = (f.next()?, f.next()?, f.next()?);
    (!ns.is_empty() && !pod.is_empty() && uid.len() == 36)
        .then(|| (ns.to_string(), pod.to_string(), uid.to_string()))
}

/// The pod lookup of one run: off (`--no-k8s`), or a pods directory read when a UID is new.
pub struct Pods {
    dir: Option<PathBuf>,
    by_uid: HashMap<String, (String, String)>,
    read_at: Option<Instant>,
}

impl Pods {
    /// `dir`: `--pods-dir`, which must be a directory; None: the default, used if present.
    pub fn new(dir: Option<&Path>, off: bool) -> Result<Pods, UserError> {
        if let Some(d) = dir {
            if !d.is_dir() {
                return Err(UserError::new(format!(
                    "--pods-dir {} is not a directory: give the kubelet's pod log directory \
                     (default {DEFAULT_PODS_DIR}), or --no-k8s",
                    d.display()
                )));
            }
        }
        let mut p = Pods::off();
        if !off {
            p.dir = Some(dir.map_or_else(|| PathBuf::from(DEFAULT_PODS_DIR), Path::to_path_buf));
        }
        Ok(p)
    }

    /// No pod lookups (`--no-k8s`, and commands that label no namespaces).
    pub fn off() -> Pods {
        Pods {
            dir: None,
            by_uid: HashMap::new(),
            read_at: None,
        }
    }

    /// The pod of process `pid`, if its cgroup is a pod's.
    pub fn of_pid(&mut self, pid: u32) -> Option<Pod> {
        self.dir.as_ref()?;
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let (uid, container_id) = parse_proc_cgroup(&text)?;
        if !self.by_uid.contains_key(&uid) {
            self.refresh();
        }
        let (k8s_namespace, k8s_pod) = self.by_uid.get(&uid).cloned().unwrap_or_default();
        Some(Pod {
            k8s_namespace,
            k8s_pod,
            uid,
            container_id,
        })
    }

    /// Read the pods directory again, at most once a second.
    fn refresh(&mut self) {
        if self
            .read_at
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.read_at = Some(Instant::now());
        let Some(Ok(rd)) = self.dir.as_ref().map(std::fs::read_dir) else {
            return;
        };
        self.by_uid = rd
            .filter_map(|e| parse_pod_dir(&e.ok()?.file_name().to_string_lossy()))
            .map(|(ns, pod, uid)| (uid, (ns, pod)))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "3f1c2b9a-7d4e-4c1a-9b2f-0e5d6c7b8a91";
    const ID: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904b825dc642cb6eb9a060e54bf";

    #[test]
    fn both_cgroup_drivers_and_three_runtimes() {
        let u = UID.replace('-', "_");
        for path in [
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{ID}.scope"),
            format!("/kubepods.slice/kubepods-pod{u}.slice/crio-{ID}.scope"),
            format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/docker-{ID}.scope"),
            format!("/kubepods/burstable/pod{UID}/{ID}"),
            format!("/kubepods/pod{UID}/{ID}"),
            format!("/some/prefix/kubepods/besteffort/pod{UID}/{ID}"),
        ] {
            assert_eq!(
                parse_cgroup_path(&path),
                Some((UID.to_string(), ID.to_string())),
                "{path}"
            );
        }
    }

    #[test]
    fn paths_that_are_no_pods_containers() {
        for path in [
            "/".to_string(),
            "/system.slice/ssh.service".to_string(),
            format!("/kubepods/burstable/pod{UID}"),
            format!("/kubepods/burstable/pod{UID}/notanid"),
            "/kubepods/burstable/podnot-a-uid/x".to_string(),
            format!(
                "/user.slice/user-pod{}.slice/docker-{ID}.scope",
                UID.replace('-', "_")
            ),
        ] {
            assert_eq!(parse_cgroup_path(&path), None, "{path}");
        }
    }

    #[test]
    fn hybrid_hosts_use_v2_first_then_v1() {
        let v1 = format!("4:memory:/kubepods/burstable/pod{UID}/{ID}\n1:cpu:/\n0::/\n");
        assert_eq!(
            parse_proc_cgroup(&v1),
            Some((UID.to_string(), ID.to_string()))
        );
        let other = "4b825dc642cb6eb9a060e54bf8d69288fbee4904b825dc642cb6eb9a060e54aa";
        let both =
            format!("4:memory:/kubepods/pod{UID}/{other}\n0::/kubepods/burstable/pod{UID}/{ID}\n");
        assert_eq!(
            parse_proc_cgroup(&both),
            Some((UID.to_string(), ID.to_string()))
        );
        assert_eq!(parse_proc_cgroup("0::/\n1:cpu:/\n"), None);
        assert_eq!(parse_proc_cgroup(""), None);
    }

    #[test]
    fn pod_directories_split_exactly() {
        assert_eq!(
            parse_pod_dir(&format!("kube-system_coredns-5d78c9869d-abcde_{UID}")),
            Some((
                "kube-system".into(),
                "coredns-5d78c9869d-abcde".into(),
                UID.into()
            ))
        );
        assert_eq!(parse_pod_dir("nounderscore"), None);
        assert_eq!(parse_pod_dir("a_b_short"), None);
        assert_eq!(parse_pod_dir(&format!("_pod_{UID}")), None);
    }

    #[test]
    fn labels_name_the_pod_only_when_known() {
        let mut p = Pod {
            uid: UID.into(),
            container_id: ID.into(),
            ..Pod::default()
        };
        assert_eq!(p.labels(), vec![("container_id", ID)]);
        p.k8s_namespace = "default".into();
        p.k8s_pod = "web-0".into();
        assert_eq!(
            p.labels(),
            vec![
                ("k8s_namespace", "default"),
                ("k8s_pod", "web-0"),
                ("container_id", ID)
            ]
        );
    }

    #[test]
    fn a_pods_dir_that_is_no_directory_is_refused() {
        let e = Pods::new(Some(Path::new("/etc/hostname")), false)
            .err()
            .unwrap();
        assert!(e
            .to_string()
            .contains("--pods-dir /etc/hostname is not a directory"));
        assert!(Pods::new(None, false).is_ok());
        assert!(Pods::new(Some(Path::new("/nonexistent/pods")), true).is_err());
    }
}
