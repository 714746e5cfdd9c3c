//! Every network namespace of the host, followed while a command runs. Netfilter links
//! belong to one namespace, so a container host's traffic is seen whole only when each
//! namespace gets its own: at start, and within a second of a namespace appearing (a pod
//! started after the DaemonSet). Links of a namespace that went away are released, which
//! is also what lets the kernel free it (a netfilter link keeps its namespace alive).
//!
//! Namespaces are found by a BPF task iterator (every thread's namespace, walked in the
//! kernel: no /proc walk per pass) and by the mounts under /run/netns; /proc is read
//! instead only where the iterator cannot load.

use std::collections::{BTreeMap, HashMap};
use std::mem::MaybeUninit;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, OpenObject};
use serde::Serialize;

use crate::bpf::nswatch::{types, NswatchSkel, NswatchSkelBuilder};
use crate::error::UserError;
use crate::kernel::k8s::{Pod, Pods};
use crate::kernel::netns::{self, Found};
use crate::kernel::probes;

/// How often namespaces are looked for: a new one is covered within about this long.
pub const PASS: Duration = Duration::from_millis(500);
/// Passes in a row a namespace may be missing before its links go (one pass can race
/// with its only process's exec or a remount).
const MISSING_PASSES: u8 = 2;

/// Namespace inode -> name, for labelling output.
pub type Names = HashMap<u32, String>;
/// Namespace inode -> its Kubernetes pod, for labelling output (empty off Kubernetes).
pub type PodMap = HashMap<u32, Pod>;

/// Attach what one namespace needs; called with this thread inside that namespace.
/// All or nothing: on an error the links made so far are dropped with the Vec.
pub type Attach<'a> = dyn FnMut() -> Result<Vec<Link>> + 'a;

/// A namespace being covered (or refused).
struct Space {
    name: String,
    /// The Kubernetes pod whose namespace this is, if it is one, and the process it was
    /// looked up by (a namespace made before its first process gets it later).
    pod: Option<Pod>,
    pod_pid: u32,
    path: PathBuf,
    links: Vec<Link>,
    refused: Option<String>,
    missing: u8,
}

/// A namespace that refused the attach, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Refusal {
    pub netns: u32,
    pub name: String,
    pub reason: String,
}

/// What the run covers, for the summary, the JSON and /healthz.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
pub struct Coverage {
    /// "all" (every namespace of the host) or "given" (--netns).
    pub mode: &'static str,
    /// Namespaces with their links in place now.
    pub covered: usize,
    /// Netfilter (and other per-namespace) links held now.
    pub links: usize,
    /// Namespaces covered at some point of the run.
    pub seen: u64,
    /// Namespaces that went away during the run (their links released).
    pub gone: u64,
    /// How namespaces are found: "task iterator" or "/proc (why)"; "--netns" when given.
    pub discovery: String,
    pub refused: Vec<Refusal>,
}

pub struct Watch<'o> {
    given: Vec<PathBuf>,
    nsfs_dev: u64,
    host: u32,
    spaces: BTreeMap<u32, Space>,
    tasks: Option<(NswatchSkel<'o>, Link)>,
    discovery: String,
    pass: u64,
    next: Instant,
    seen: u64,
    gone: u64,
    /// Namespaces released since take_departed last ran.
    departed: Vec<u32>,
    pods: Pods,
}

impl<'o> Watch<'o> {
    /// Cover every namespace (`given` empty) or exactly the given ones, attaching each.
    /// A given namespace that refuses is an error; a found one is reported.
    /// `pods`: how namespaces are told apart as Kubernetes pods (or not: Pods::off()).
    pub fn start(
        obj: &'o mut MaybeUninit<OpenObject>,
        btf: &Path,
        given: &[PathBuf],
        pods: Pods,
        attach: &mut Attach<'_>,
    ) -> Result<Watch<'o>> {
        netns::raise_nofile();
        let nsfs_dev = std::fs::metadata("/proc/self/ns/net")
            .context("reading this process's network namespace")?
            .dev();
        let host = host_inode();
        let (tasks, discovery) = if given.is_empty() {
            match load_tasks(obj, btf) {
                Ok(t) => (Some(t), "task iterator".to_string()),
                Err(e) => (
                    None,
                    format!("/proc (the task iterator did not load: {e:#})"),
                ),
            }
        } else {
            (None, "--netns".to_string())
        };
        let mut w = Watch {
            given: given.to_vec(),
            nsfs_dev,
            host,
            spaces: BTreeMap::new(),
            tasks,
            discovery,
            pass: 0,
            next: Instant::now(),
            seen: 0,
            gone: 0,
            departed: Vec::new(),
            pods,
        };
        if !given.is_empty() {
            for p in given {
                let inode = netns::check_netns(p)?;
                if w.spaces.contains_key(&inode) {
                    continue;
                }
                let _inside = netns::Entered::enter(p)?;
                let links = attach()?;
                w.seen += 1;
                let pid = netns::pid_in(inode);
                let pod = (pid != 0).then(|| w.pods.of_pid(pid)).flatten();
                w.spaces.insert(
                    inode,
                    Space {
                        pod,
                        pod_pid: pid,
                        name: given_name(p),
                        path: p.clone(),
                        links,
                        refused: None,
                        missing: 0,
                    },
                );
            }
            w.next = Instant::now() + PASS;
            return Ok(w);
        }
        w.tick(attach)?;
        Ok(w)
    }

    /// Look again when a pass is due: attach new namespaces, release gone ones. True when
    /// the set of namespaces or a name changed (callers refresh what they label with).
    pub fn tick(&mut self, attach: &mut Attach<'_>) -> Result<bool> {
        let now = Instant::now();
        if now < self.next {
            return Ok(false);
        }
        let before = (self.seen, self.gone);
        let mut renamed = false;
        self.next = now + PASS;
        let found = self.scan()?;
        for (inode, f) in &found {
            if let Some(s) = self.spaces.get_mut(inode) {
                s.missing = 0;
                if s.pod.is_none() && f.pid != 0 && f.pid != s.pod_pid {
                    s.pod_pid = f.pid;
                    s.pod = self.pods.of_pid(f.pid);
                    renamed |= s.pod.is_some();
                }
                if f.mounted && s.name != f.name {
                    s.name = f.name.clone();
                    renamed = true;
                }
                continue;
            }
            let (links, refused) = match netns::Entered::enter(&f.path) {
                // Its last process left between the scan and now: nothing to cover.
                Err(_) => continue,
                Ok(_inside) => match attach() {
                    Ok(l) => (l, None),
                    Err(e) => (Vec::new(), Some(crate::error::message(&e))),
                },
            };
            if let Some(r) = &refused {
                eprintln!(
                    "netstack-lat: network namespace {inode} ({}) not covered: {r}",
                    f.name
                );
            }
            self.seen += 1;
            let pod = (f.pid != 0).then(|| self.pods.of_pid(f.pid)).flatten();
            self.spaces.insert(
                *inode,
                Space {
                    pod,
                    pod_pid: f.pid,
                    name: f.name.clone(),
                    path: f.path.clone(),
                    links,
                    refused,
                    missing: 0,
                },
            );
        }
        let mut gone = Vec::new();
        for (inode, s) in self.spaces.iter_mut() {
            if !found.contains_key(inode) {
                s.missing += 1;
                if s.missing >= MISSING_PASSES {
                    gone.push(*inode);
                }
            }
        }
        for inode in gone {
            // Dropping the links detaches them; the kernel can then free the namespace.
            self.spaces.remove(&inode);
            self.gone += 1;
            self.departed.push(inode);
        }
        Ok(renamed || before != (self.seen, self.gone))
    }

    /// The namespaces alive now, by inode.
    fn scan(&mut self) -> Result<BTreeMap<u32, Found>> {
        let mut found = BTreeMap::new();
        if !self.given.is_empty() {
            // Only the given ones, while their files still name the same namespace.
            for (inode, s) in &self.spaces {
                if std::fs::metadata(&s.path).is_ok_and(|m| m.ino() as u32 == *inode) {
                    found.insert(
                        *inode,
                        Found {
                            path: s.path.clone(),
                            name: s.name.clone(),
                            mounted: false,
                            pid: 0,
                        },
                    );
                }
            }
            return Ok(found);
        }
        netns::mounted(&mut found, self.nsfs_dev);
        match self.tasks.as_mut() {
            Some((skel, link)) => {
                self.pass += 1;
                for t in read_tasks(skel, link, self.pass)? {
                    // A mounted one keeps its name, and learns a process in it.
                    if let Some(f) = found.get_mut(&t.inum) {
                        if f.pid == 0 {
                            f.pid = t.tgid;
                        }
                        continue;
                    }
                    // A namespace covered already keeps its name: no /proc read per pass.
                    let name = match self.spaces.get(&t.inum) {
                        Some(s) => s.name.clone(),
                        None => netns::process_name(t.tgid),
                    };
                    let path = format!("/proc/{}/task/{}/ns/net", t.tgid, t.pid);
                    netns::note(
                        &mut found,
                        t.inum,
                        Found {
                            path: PathBuf::from(path),
                            name,
                            mounted: false,
                            pid: t.tgid,
                        },
                    );
                }
            }
            None => netns::from_proc(&mut found),
        }
        // Our own namespace, if nothing else named it: the tasks come in pid order, so a
        // process found there (the lowest pid) names it more stably than we would.
        let me = std::process::id();
        if let Ok(m) = std::fs::metadata("/proc/thread-self/ns/net") {
            netns::note(
                &mut found,
                m.ino() as u32,
                Found {
                    path: PathBuf::from(format!("/proc/{me}/ns/net")),
                    name: String::new(),
                    mounted: false,
                    pid: me,
                },
            );
        }
        for (inode, f) in found.iter_mut() {
            if f.name.is_empty() || (!f.mounted && *inode == self.host) {
                f.name = if *inode == self.host {
                    "host".into()
                } else {
                    netns::process_name(me)
                };
            }
        }
        Ok(found)
    }

    /// The namespaces released since the last call (their series can go).
    pub fn take_departed(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.departed)
    }

    /// Inode -> pod of every namespace covered that is a pod's.
    pub fn pods(&self) -> PodMap {
        self.spaces
            .iter()
            .filter_map(|(i, s)| Some((*i, s.pod.clone()?)))
            .collect()
    }

    /// The pod of process `pid` (a connection's owner), looked up now.
    pub fn pod_of(&mut self, pid: u32) -> Option<Pod> {
        self.pods.of_pid(pid)
    }

    /// Inode -> name of every namespace covered, for labelling output.
    pub fn names(&self) -> Names {
        self.spaces
            .iter()
            .map(|(i, s)| (*i, s.name.clone()))
            .collect()
    }

    pub fn coverage(&self) -> Coverage {
        Coverage {
            mode: if self.given.is_empty() {
                "all"
            } else {
                "given"
            },
            covered: self.spaces.values().filter(|s| s.refused.is_none()).count(),
            links: self.spaces.values().map(|s| s.links.len()).sum(),
            seen: self.seen,
            gone: self.gone,
            discovery: self.discovery.clone(),
            refused: self
                .spaces
                .iter()
                .filter_map(|(i, s)| {
                    s.refused.as_ref().map(|r| Refusal {
                        netns: *i,
                        name: s.name.clone(),
                        reason: r.clone(),
                    })
                })
                .collect(),
        }
    }

    /// Release every namespace's links now (before the summary is printed).
    pub fn release(&mut self) {
        self.spaces.clear();
    }
}

impl Coverage {
    /// A run that covers 3 namespaces and was refused by one ("blue"), for unit tests.
    #[cfg(test)]
    pub fn one_refused() -> Coverage {
        Coverage {
            mode: "all",
            covered: 3,
            links: 48,
            seen: 4,
            gone: 1,
            discovery: "task iterator".into(),
            refused: vec![Refusal {
                netns: 4026532001,
                name: "blue".into(),
                reason: "cannot attach rx_ip to netfilter".into(),
            }],
        }
    }

    /// One line per namespace not covered, for /healthz.
    pub fn problems(&self) -> Vec<String> {
        self.refused
            .iter()
            .map(|r| format!("netns {} ({}) not covered: {}", r.netns, r.name, r.reason))
            .collect()
    }

    /// One line for the text summary.
    pub fn human(&self) -> String {
        let mut s = match self.mode {
            "all" => format!(
                "network namespaces: all of the host: {} covered now, {} over the run, {} gone (found by {})",
                self.covered, self.seen, self.gone, self.discovery
            ),
            _ => format!(
                "network namespaces: the {} given by --netns ({} gone during the run)",
                self.covered, self.gone
            ),
        };
        for r in &self.refused {
            s.push_str(&format!(
                "\n  NOT covered: netns {} ({}): {}",
                r.netns, r.name, r.reason
            ));
        }
        s
    }
}

/// The initial network namespace: kthreadd's (kernel threads never leave it), else PID 1's
/// (a PID namespace without kernel threads).
fn host_inode() -> u32 {
    let kthreadd = std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd");
    let pid = if kthreadd { 2 } else { 1 };
    std::fs::metadata(format!("/proc/{pid}/ns/net")).map_or(0, |m| m.ino() as u32)
}

/// The name of a namespace given by path: its /run/netns name, else the process's.
pub fn given_name(p: &Path) -> String {
    if let Ok(rest) = p.strip_prefix(netns::RUN_NETNS) {
        return rest.to_string_lossy().into_owned();
    }
    let parts: Vec<_> = p.components().collect();
    if let [_, a, b, c, d] = parts.as_slice() {
        let pid = b.as_os_str().to_str().and_then(|s| s.parse::<u32>().ok());
        if a.as_os_str() == "proc" && c.as_os_str() == "ns" && d.as_os_str() == "net" {
            if let Some(pid) = pid {
                return netns::process_name(pid);
            }
        }
    }
    p.display().to_string()
}

fn load_tasks<'o>(
    obj: &'o mut MaybeUninit<OpenObject>,
    btf: &Path,
) -> Result<(NswatchSkel<'o>, Link)> {
    let mut builder = NswatchSkelBuilder::default();
    if btf != Path::new(probes::DEFAULT_BTF) {
        builder.obj_builder.btf_custom_path(btf)?;
    }
    let open = builder
        .open(obj)
        .context("opening the namespace BPF object")?;
    let skel = open.load().context("loading the namespace task iterator")?;
    let link = skel
        .progs
        .ns_tasks
        .attach()
        .context("attaching the namespace task iterator")?;
    Ok((skel, link))
}

/// One pass of the iterator: each namespace once, with a thread in it.
fn read_tasks(skel: &mut NswatchSkel<'_>, link: &Link, pass: u64) -> Result<Vec<types::ns_task>> {
    use std::io::Read;
    skel.maps
        .bss_data
        .as_deref_mut()
        .context("namespace object has no .bss")?
        .pass = pass;
    let mut it = libbpf_rs::Iter::new(link).context("starting the namespace task iterator")?;
    let mut buf = Vec::new();
    it.read_to_end(&mut buf)
        .context("reading the namespace task iterator")?;
    Ok(parse_tasks(&buf))
}

/// Records of the iterator's output; a torn tail (never written by the kernel) is ignored.
pub fn parse_tasks(buf: &[u8]) -> Vec<types::ns_task> {
    let size = std::mem::size_of::<types::ns_task>();
    buf.chunks_exact(size)
        .map(|c| {
            let mut t = types::ns_task::default();
            let _ = plain::copy_from_bytes(&mut t, c);
            t
        })
        .collect()
}

/// `--netns` values given at once must each be a network namespace.
pub fn check_given(given: &[PathBuf]) -> Result<(), UserError> {
    for p in given {
        netns::check_netns(p)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_given_paths() {
        assert_eq!(given_name(Path::new("/run/netns/blue")), "blue");
        assert_eq!(given_name(Path::new("/tmp/x")), "/tmp/x");
        assert!(given_name(Path::new("/proc/1/ns/net")).starts_with("pid 1 ("));
    }

    #[test]
    fn bare_names_are_under_run_netns() {
        use std::ffi::OsStr;
        assert_eq!(
            netns::given_path(OsStr::new("blue")),
            Path::new("/run/netns/blue")
        );
        assert_eq!(
            netns::given_path(OsStr::new("/proc/7/ns/net")),
            Path::new("/proc/7/ns/net")
        );
        assert_eq!(netns::given_path(OsStr::new("./x")), Path::new("./x"));
    }

    #[test]
    fn task_records_parse_whole_ones_only() {
        let mut raw = Vec::new();
        for (i, p) in [(4026531840u32, 1u32), (4026532001, 77)] {
            raw.extend(i.to_ne_bytes());
            raw.extend(p.to_ne_bytes());
            raw.extend(p.to_ne_bytes());
            raw.extend(0u32.to_ne_bytes());
        }
        raw.extend([1, 2, 3]);
        let t = parse_tasks(&raw);
        assert_eq!(t.len(), 2);
        assert_eq!((t[1].inum, t[1].tgid), (4026532001, 77));
    }

    #[test]
    fn mount_names_beat_process_names() {
        let mut f = BTreeMap::new();
        let p = |n: &str, m, pid| Found {
            path: PathBuf::from(n),
            name: n.into(),
            mounted: m,
            pid,
        };
        note(&mut f, 9, p("pid 3 (x)", false, 3));
        note(&mut f, 9, p("blue", true, 0));
        note(&mut f, 9, p("pid 4 (y)", false, 4));
        assert_eq!(f[&9].name, "blue");
        // The mount names it; the process seen first still says whose pod it is.
        assert_eq!(f[&9].pid, 3);
        note(&mut f, 8, p("red", true, 0));
        note(&mut f, 8, p("pid 5 (z)", false, 5));
        assert_eq!((f[&8].name.as_str(), f[&8].pid), ("red", 5));
    }

    #[test]
    fn coverage_lines_name_every_refusal() {
        let c = Coverage::one_refused();
        let h = c.human();
        assert!(h.starts_with(
            "network namespaces: all of the host: 3 covered now, 4 over the run, 1 gone"
        ));
        assert!(h.contains("NOT covered: netns 4026532001 (blue): cannot attach rx_ip"));
        assert_eq!(
            c.problems(),
            ["netns 4026532001 (blue) not covered: cannot attach rx_ip to netfilter"]
        );
    }

    use crate::kernel::netns::note;
}
