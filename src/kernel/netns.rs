//! Network-namespace helpers: netfilter links and interface names live per namespace,
//! so attaching for `--netns` means entering it on this thread for a moment.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::UserError;

/// While alive, this thread is in another network namespace; dropping it returns.
pub struct Entered {
    home: File,
}

impl Entered {
    pub fn enter(path: &Path) -> Result<Self, UserError> {
        let home = File::open("/proc/thread-self/ns/net").map_err(|e| {
            UserError::new(format!("cannot open this thread's network namespace: {e}"))
        })?;
        let target = open_checked(path)?;
        // SAFETY: setns on valid fds; only this thread changes namespace.
        if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(UserError::new(format!(
                "cannot enter network namespace {}: {} (is it a netns file such as /run/netns/NAME?)",
                path.display(),
                std::io::Error::last_os_error()
            )));
        }
        Ok(Entered { home })
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        // SAFETY: returning to the namespace we came from, through a valid fd.
        unsafe { libc::setns(self.home.as_raw_fd(), libc::CLONE_NEWNET) };
    }
}

/// Where per-namespace hooks go: into each namespace given, or (none given) this thread's.
pub fn places(paths: &[std::path::PathBuf]) -> Vec<Option<&Path>> {
    if paths.is_empty() {
        vec![None]
    } else {
        paths.iter().map(|p| Some(p.as_path())).collect()
    }
}

pub fn open_netns(path: &Path) -> Result<File, UserError> {
    File::open(path).map_err(|e| {
        UserError::new(format!(
            "cannot open network namespace {}: {e} (give a netns file such as /run/netns/NAME or /proc/PID/ns/net)",
            path.display()
        ))
    })
}

/// The namespace's inode number, which is what the kernel's ns.inum holds.
pub fn inode(path: &Path) -> Result<u32, UserError> {
    let f = open_netns(path)?;
    let ino = f
        .metadata()
        .map_err(|e| UserError::new(format!("cannot stat {}: {e}", path.display())))?
        .ino();
    Ok(ino as u32)
}

pub fn current_inode() -> Result<u32, UserError> {
    inode(Path::new("/proc/thread-self/ns/net"))
}

/// Interface index by name, in the namespace this thread is in.
pub fn ifindex(name: &str) -> Result<u32, UserError> {
    let unknown = || {
        UserError::new(format!(
            "unknown interface '{name}': list them with `ip link` (in the traced namespace)"
        ))
    };
    let c = std::ffi::CString::new(name).map_err(|_| unknown())?;
    // SAFETY: c is a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(unknown()),
        i => Ok(i),
    }
}

/// A `--netns` value as a path: a bare NAME means /run/netns/NAME.
pub fn given_path(s: &std::ffi::OsStr) -> std::path::PathBuf {
    let p = Path::new(s);
    if p.components().count() == 1 && !s.is_empty() && p.is_relative() && s != "." && s != ".." {
        Path::new(RUN_NETNS).join(p)
    } else {
        p.to_path_buf()
    }
}

/// Where `ip netns` (and CNI, podman) keep named namespaces, and where docker does.
pub const RUN_NETNS: &str = "/run/netns";
const MOUNT_DIRS: [&str; 2] = [RUN_NETNS, "/run/docker/netns"];

/// Check that `path` is a network namespace file: one line naming what it is instead.
pub fn check_netns(path: &Path) -> Result<u32, UserError> {
    let f = open_checked(path)?;
    Ok(f.metadata()
        .map_err(|e| UserError::new(format!("cannot stat {}: {e}", path.display())))?
        .ino() as u32)
}

/// Open a network namespace file, or say in one line what is wrong with it.
fn open_checked(path: &Path) -> Result<File, UserError> {
    let f = open_netns(path)?;
    // NS_GET_NSTYPE (_IO(0xb7, 0x3)): the namespace type of an nsfs file, an error for
    // any other file.
    // SAFETY: an ioctl without an argument on a valid fd.
    let t = unsafe { libc::ioctl(f.as_raw_fd(), 0xb703) };
    if t != libc::CLONE_NEWNET {
        return Err(UserError::new(format!(
            "{} is not a network namespace: give /run/netns/NAME, a bare NAME under /run/netns, or /proc/PID/ns/net",
            path.display()
        )));
    }
    Ok(f)
}

/// Lift the soft limit on open files to the hard one: netfilter links are file
/// descriptors, 16 or more per namespace, and a node has hundreds of namespaces.
pub fn raise_nofile() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// A namespace found by a scan: how to enter it and what to call it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub path: std::path::PathBuf,
    pub name: String,
    /// Named by a mount (/run/netns/NAME): the best name there is.
    pub mounted: bool,
    /// A process in it (the lowest pid seen), 0 if none was seen: whose cgroup says which
    /// pod the namespace is.
    pub pid: u32,
}

/// Merge a sighting into a scan's result: a mount's name beats a process's.
pub fn note(found: &mut std::collections::BTreeMap<u32, Found>, inode: u32, f: Found) {
    match found.get_mut(&inode) {
        Some(old) if old.mounted || !f.mounted => {
            if old.pid == 0 {
                old.pid = f.pid;
            }
        }
        _ => {
            let pid = found.get(&inode).map_or(0, |o| o.pid);
            found.insert(
                inode,
                Found {
                    pid: if f.pid == 0 { pid } else { f.pid },
                    ..f
                },
            );
        }
    }
}

/// The namespaces mounted under /run/netns (and docker's directory), by inode.
pub fn mounted(found: &mut std::collections::BTreeMap<u32, Found>, nsfs_dev: u64) {
    for dir in MOUNT_DIRS {
        let Ok(rd) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in rd.flatten() {
            let path = e.path();
            // A name whose mount is gone is a plain empty file on another device.
            let Ok(m) = std::fs::metadata(&path) else {
                continue;
            };
            if m.dev() != nsfs_dev {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            note(
                found,
                m.ino() as u32,
                Found {
                    path,
                    name,
                    mounted: true,
                    pid: 0,
                },
            );
        }
    }
}

/// "pid 412 (nginx)": a namespace known only by a process in it.
pub fn process_name(tgid: u32) -> String {
    let comm = std::fs::read_to_string(format!("/proc/{tgid}/comm")).unwrap_or_default();
    format!("pid {tgid} ({})", comm.trim())
}

/// Every process's namespace by reading /proc: the fallback where the task iterator
/// cannot load (before Linux 5.8, or a kernel that refuses iterators).
/// A process in the namespace of inode `inode` (the first /proc lists), 0 if none.
pub fn pid_in(inode: u32) -> u32 {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return 0;
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() as u32 == inode)
        })
        .unwrap_or(0)
}

pub fn from_proc(found: &mut std::collections::BTreeMap<u32, Found>) {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let path = e.path().join("ns/net");
        if let Ok(m) = std::fs::metadata(&path) {
            let inode = m.ino() as u32;
            match found.get_mut(&inode) {
                Some(f) if f.pid == 0 => f.pid = pid,
                Some(_) => {}
                None => note(
                    found,
                    inode,
                    Found {
                        path,
                        name: process_name(pid),
                        mounted: false,
                        pid,
                    },
                ),
            }
        }
    }
}
