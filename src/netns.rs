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
        let target = open_netns(path)?;
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
