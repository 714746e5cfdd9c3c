//! Attaching TC programs: a tcx link where the kernel has tcx (6.6+), which the kernel
//! detaches by itself when the link's fd closes, even if this process is killed; otherwise a
//! clsact qdisc and a direct-action filter, removed again on drop (the qdisc only if we
//! made it). Those two outlive a killed process: the run record (leftovers.rs) names them
//! so that the next start removes them.

use std::path::{Path, PathBuf};

use libbpf_rs::libbpf_sys as sys;
use std::os::fd::AsFd;

use libbpf_rs::{AsRawLibbpf, Link, Program, TcHook, TcHookBuilder, TC_EGRESS, TC_INGRESS};

use crate::cli::Direction;
use crate::error::UserError;
use crate::kernel::leftovers::{self, Object, Place};
use crate::kernel::netns;

/// How programs are attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Tcx,
    Clsact,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Tcx => "tcx",
            Mode::Clsact => "clsact",
        }
    }
}

/// Whether this kernel has tcx links, from its BTF.
pub fn has_tcx(btf: &libbpf_rs::btf::Btf) -> bool {
    btf.type_by_name::<libbpf_rs::btf::types::Struct>("tcx_entry")
        .is_some()
}

/// The attach type a program needs for a tcx link in this direction (set before load).
pub fn tcx_attach_type(d: Direction) -> libbpf_rs::ProgramAttachType {
    match d {
        Direction::Ingress => libbpf_rs::ProgramAttachType::TcxIngress,
        Direction::Egress => libbpf_rs::ProgramAttachType::TcxEgress,
    }
}

enum One {
    Link(#[allow(dead_code)] Link),
    Filter {
        hook: TcHook,
        netns: Option<PathBuf>,
        record: Object,
    },
}

/// Everything attached; dropping it detaches all of it.
#[derive(Default)]
pub struct Attached {
    parts: Vec<One>,
    /// clsact qdiscs this run created, their namespaces and records.
    qdiscs: Vec<(Option<PathBuf>, sys::bpf_tc_hook, Object)>,
}

impl Attached {
    /// Attach `prog` at `ifindex` (in `ns`, or here) in direction `d`.
    pub fn attach(
        &mut self,
        mode: Mode,
        prog: &Program,
        ifindex: i32,
        d: Direction,
        ns: Option<&Path>,
        label: &str,
    ) -> anyhow::Result<()> {
        let _inside = ns.map(netns::Entered::enter).transpose()?;
        match mode {
            Mode::Tcx => {
                let opts = sys::bpf_tcx_opts {
                    sz: std::mem::size_of::<sys::bpf_tcx_opts>() as _,
                    ..Default::default()
                };
                // SAFETY: a loaded program, valid opts; the result is checked before use.
                let ptr = unsafe {
                    sys::bpf_program__attach_tcx(prog.as_libbpf_object().as_ptr(), ifindex, &opts)
                };
                let err = unsafe { sys::libbpf_get_error(ptr as *const _) };
                match std::ptr::NonNull::new(ptr) {
                    // SAFETY: a valid link that libbpf gave us; Link owns it from here.
                    Some(p) if err == 0 => self.parts.push(One::Link(unsafe { Link::from_ptr(p) })),
                    _ => {
                        return Err(UserError::new(format!(
                            "cannot attach the tcx program at {label}: {} (try --attach clsact)",
                            std::io::Error::from_raw_os_error((-err) as i32)
                        ))
                        .into())
                    }
                }
            }
            Mode::Clsact => {
                let point = match d {
                    Direction::Ingress => TC_INGRESS,
                    Direction::Egress => TC_EGRESS,
                };
                let mut b = TcHookBuilder::new(prog.as_fd());
                b.ifindex(ifindex).replace(false).handle(0).priority(0);
                let netns = ns.map(Path::to_path_buf);
                // libbpf-rs's create() hides EEXIST; we must know whether the qdisc is
                // ours to remove. A second point on the same device finds ours there.
                let mut q = sys::bpf_tc_hook {
                    sz: std::mem::size_of::<sys::bpf_tc_hook>() as _,
                    ifindex,
                    attach_point: sys::BPF_TC_INGRESS | sys::BPF_TC_EGRESS,
                    ..Default::default()
                };
                // SAFETY: a valid, sized hook description.
                match unsafe { sys::bpf_tc_hook_create(&mut q) } {
                    // Noted once made (never before): a qdisc that was there is not ours.
                    0 => {
                        let record = Object::Clsact {
                            at: Place::here(ns, ifindex),
                        };
                        leftovers::note("marker", record.clone());
                        self.qdiscs.push((netns.clone(), q, record));
                    }
                    // A clsact qdisc is there already: it is not ours, it stays.
                    e if e == -libc::EEXIST => {}
                    e => {
                        return Err(UserError::new(format!(
                            "cannot add a clsact qdisc at {label}: {} (on 6.6+ try --attach tcx; else check `tc qdisc show dev` for a root qdisc that refuses it)",
                            std::io::Error::from_raw_os_error(-e)
                        ))
                        .into())
                    }
                }
                let mut hook = b.hook(point);
                let hook = hook.attach().map_err(|e| {
                    UserError::new(format!(
                        "cannot attach the TC filter at {label}: {e} (on 6.6+ try --attach tcx)"
                    ))
                })?;
                // The kernel chose handle and priority; with the program id they prove
                // the filter ours to a later start.
                let record = Object::TcFilter {
                    at: Place::here(ns, ifindex),
                    ingress: d == Direction::Ingress,
                    handle: hook.get_handle(),
                    priority: hook.get_priority(),
                    prog_id: prog_id(prog),
                };
                leftovers::note("marker", record.clone());
                self.parts.push(One::Filter {
                    hook,
                    netns,
                    record,
                });
            }
        }
        Ok(())
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        for p in self.parts.drain(..) {
            if let One::Filter {
                mut hook,
                netns,
                record,
            } = p
            {
                let _inside = netns.as_deref().map(netns::Entered::enter);
                let _ = hook.detach();
                leftovers::forget(&record);
            }
        }
        for (netns, mut q, record) in self.qdiscs.drain(..) {
            let _inside = netns.as_deref().map(netns::Entered::enter);
            // SAFETY: the hook description that created this qdisc.
            unsafe { sys::bpf_tc_hook_destroy(&mut q) };
            leftovers::forget(&record);
        }
    }
}

/// The kernel's id of a loaded program.
fn prog_id(prog: &Program) -> u32 {
    let mut info = sys::bpf_prog_info::default();
    let mut len = std::mem::size_of::<sys::bpf_prog_info>() as u32;
    // SAFETY: a loaded program's fd and an info struct of the size we pass.
    let rc = unsafe {
        sys::bpf_prog_get_info_by_fd(
            std::os::fd::AsRawFd::as_raw_fd(&prog.as_fd()),
            &mut info,
            &mut len,
        )
    };
    if rc == 0 {
        info.id
    } else {
        0
    }
}

/// Bytes before the IP header on this device, from its link type (in the current netns).
pub fn l2_len(iface: &str) -> Result<u8, UserError> {
    // SAFETY: a plain datagram socket and an ifreq we own, for SIOCGIFHWADDR.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(UserError::new(format!(
            "cannot open a socket to ask {iface}'s link type: {}",
            std::io::Error::last_os_error()
        )));
    }
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(iface.bytes()) {
        *d = s as libc::c_char;
    }
    let rc = unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut req) };
    let err = std::io::Error::last_os_error();
    unsafe { libc::close(fd) };
    if rc < 0 {
        return Err(UserError::new(format!(
            "cannot read {iface}'s link type: {err}"
        )));
    }
    let family = unsafe { req.ifr_ifru.ifru_hwaddr.sa_family };
    link_l2_len(family).ok_or_else(|| {
        UserError::new(format!(
            "{iface} has link type {family}: marker reads Ethernet, loopback and raw-IP devices (tun, wireguard)"
        ))
    })
}

/// ARPHRD_* -> length of the link-layer header TC sees.
pub fn link_l2_len(arphrd: u16) -> Option<u8> {
    match arphrd {
        libc::ARPHRD_ETHER | libc::ARPHRD_LOOPBACK => Some(14),
        libc::ARPHRD_NONE | libc::ARPHRD_TUNNEL | libc::ARPHRD_TUNNEL6 | libc::ARPHRD_SIT => {
            Some(0)
        }
        519 /* ARPHRD_RAWIP */ => Some(0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn link_types() {
        assert_eq!(super::link_l2_len(1), Some(14));
        assert_eq!(super::link_l2_len(772), Some(14));
        assert_eq!(super::link_l2_len(65534), Some(0));
        assert_eq!(super::link_l2_len(24), None); // firewire
    }
}
