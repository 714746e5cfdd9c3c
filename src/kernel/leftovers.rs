//! What a SIGKILLed run leaves behind, and its removal by the next start.
//!
//! Programs and links held only by fds (tracepoints, tp_btf, raw_tp, netfilter and tcx links)
//! go with the process. Two kinds of object do not: a TC filter (and the clsact qdisc under
//! it) attached through netlink, and a named network namespace (a bind mount under
//! /run/netns). A run writes each such object to its record, /run/netstack-lat/PID.json,
//! before it makes it (or, for a filter, as soon as the kernel has named it), and takes it
//! off once it has removed it; the file goes when nothing is left in it. Every start as root
//! reads the records of dead runs (the pid gone, or now another process: its start time or
//! the boot id differs) and removes only what it can prove is that run's: a filter with the
//! recorded handle, priority and program id in the recorded namespace (by inode) and device,
//! a clsact qdisc that run created once no filter is left on it, a namespace by its name.

use std::fs::File;
use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use libbpf_rs::libbpf_sys as sys;
use serde::{Deserialize, Serialize};

use crate::kernel::netns;

/// Where the records live (tmpfs: a reboot empties it, as it empties the kernel's state).
pub const STATE_DIR: &str = "/run/netstack-lat";

/// A process, told apart from a later one with the same pid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub pid: u32,
    /// Start time in clock ticks since boot (/proc/PID/stat, field 22).
    pub start: u64,
    pub boot_id: String,
}

/// Where an object sits: a namespace (by path, and the inode it had) and a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    /// The netns file given; none: the namespace the run itself was in.
    pub netns: Option<PathBuf>,
    pub netns_inode: u32,
    pub ifindex: i32,
    pub ifname: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Object {
    /// A clsact qdisc the run is creating (or created).
    Clsact { at: Place },
    /// A direct-action filter the run attached.
    TcFilter {
        at: Place,
        ingress: bool,
        handle: u32,
        priority: u32,
        prog_id: u32,
    },
    /// A namespace mounted at /run/netns/NAME.
    Netns { name: String },
}

impl Object {
    fn describe(&self) -> String {
        match self {
            Object::Clsact { at } => format!("clsact qdisc on {}", at.describe()),
            Object::TcFilter {
                at,
                ingress,
                handle,
                priority,
                ..
            } => format!(
                "TC filter {} pref {priority} handle {handle:#x} on {}",
                if *ingress { "ingress" } else { "egress" },
                at.describe()
            ),
            Object::Netns { name } => format!("netns {name}"),
        }
    }
}

impl Place {
    /// Here (`ns` entered already, or none): its inode and the device's name.
    pub fn here(ns: Option<&Path>, ifindex: i32) -> Place {
        Place {
            netns: ns.map(Path::to_path_buf),
            netns_inode: netns::inode(Path::new("/proc/thread-self/ns/net")).unwrap_or(0),
            ifindex,
            ifname: ifname(ifindex).unwrap_or_default(),
        }
    }

    fn describe(&self) -> String {
        match &self.netns {
            Some(p) => format!("{} in {}", self.ifname, p.display()),
            None => self.ifname.clone(),
        }
    }
}

/// The record a run writes about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub owner: Owner,
    pub command: String,
    pub objects: Vec<Object>,
}

static MINE: Mutex<Option<Record>> = Mutex::new(None);

/// Note an object before making it (a filter: right after), so a kill leaves a trace of it.
/// A record that cannot be written costs only the cleanup after a kill: say so once, go on.
pub fn note(command: &str, obj: Object) {
    let mut g = MINE.lock().unwrap_or_else(|e| e.into_inner());
    let rec = g.get_or_insert_with(|| Record {
        owner: owner_of_self(),
        command: command.to_string(),
        objects: Vec::new(),
    });
    if !rec.objects.contains(&obj) {
        rec.objects.push(obj);
    }
    if let Err(e) = write(Path::new(STATE_DIR), rec) {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            eprintln!(
                "netstack-lat: warning: cannot write the run record under {STATE_DIR} ({e}): if this run is killed, remove its {} by hand",
                rec.objects[0].describe()
            )
        });
    }
}

/// Take an object off the record once it is gone; the file goes with the last one.
pub fn forget(obj: &Object) {
    let mut g = MINE.lock().unwrap_or_else(|e| e.into_inner());
    let Some(rec) = g.as_mut() else {
        return;
    };
    rec.objects.retain(|o| o != obj);
    let _ = write(Path::new(STATE_DIR), rec);
}

fn file_of(dir: &Path, pid: u32) -> PathBuf {
    dir.join(format!("{pid}.json"))
}

/// Write (atomically: a reader sees the old record or the new one) or, if empty, remove.
fn write(dir: &Path, rec: &Record) -> std::io::Result<()> {
    let path = file_of(dir, rec.owner.pid);
    if rec.objects.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{}.tmp", rec.owner.pid));
    let mut f = File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(rec).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Field 22 of /proc/PID/stat; the comm before it may hold spaces and parentheses.
pub fn start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn owner_of_self() -> Owner {
    let pid = std::process::id();
    Owner {
        pid,
        start: std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| start_time(&s))
            .unwrap_or(0),
        boot_id: boot_id(),
    }
}

/// Whether the record's owner still runs: same boot, the pid there with the same start time.
pub fn alive(o: &Owner, boot: &str, stat_of: impl Fn(u32) -> Option<String>) -> bool {
    o.boot_id == boot && stat_of(o.pid).and_then(|s| start_time(&s)) == Some(o.start)
}

/// Remove what dead runs left (their records say what); at every start as root. Returns
/// one line per run cleaned up, for stderr.
pub fn sweep() -> Vec<String> {
    let dir = Path::new(STATE_DIR);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    // Two starts at once: one sweeps, the other waits for it.
    let Ok(lock) = File::create(dir.join(".lock")) else {
        return Vec::new();
    };
    // SAFETY: flock on an fd we own; released when `lock` closes.
    unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    let boot = boot_id();
    let mut said = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let Some(pid) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // Only root's own records are trusted.
        let root_owned = {
            use std::os::unix::fs::MetadataExt;
            e.metadata().map(|m| m.uid() == 0).unwrap_or(false)
        };
        let Some(rec) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
            .filter(|r| r.owner.pid == pid && root_owned)
        else {
            continue;
        };
        if alive(&rec.owner, &boot, |p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).ok()
        }) {
            continue;
        }
        let (mut done, mut waits, mut left) = (Vec::new(), Vec::new(), Vec::new());
        if rec.owner.boot_id == boot {
            // Filters first: a qdisc goes only once it holds none.
            let mut order: Vec<&Object> = rec.objects.iter().collect();
            order.sort_by_key(|o| !matches!(o, Object::TcFilter { .. }));
            for o in order {
                match remove(o) {
                    Ok(Outcome::Removed) => done.push(o.describe()),
                    Ok(Outcome::Gone) => {}
                    Ok(Outcome::Waits(why)) => waits.push((o.clone(), why)),
                    Err(why) => left.push(format!("{} ({why})", o.describe())),
                }
            }
        }
        if left.is_empty() && waits.is_empty() {
            let _ = std::fs::remove_file(&path);
        } else if left.is_empty() {
            // Only what waits for others stays on the record, for a later start.
            let rest = Record {
                objects: waits.iter().map(|(o, _)| o.clone()).collect(),
                ..rec.clone()
            };
            let _ = write(dir, &rest);
        }
        let mut s = format!(
            "netstack-lat: a killed run (pid {}, {}) left",
            rec.owner.pid, rec.command
        );
        if !done.is_empty() {
            s += &format!(" {}: removed", done.join(", "));
        }
        for (o, why) in &waits {
            s += &format!("; {} stays ({why}): a later start removes it", o.describe());
        }
        if !left.is_empty() {
            s += &format!(
                "; kept {}, not provably its own: check and remove by hand, then {}",
                left.join(", "),
                path.display()
            );
        }
        if !done.is_empty() || !waits.is_empty() || !left.is_empty() {
            said.push(s);
        }
    }
    said
}

enum Outcome {
    Removed,
    /// Gone already (with its namespace or device, or by someone's hand).
    Gone,
    /// The dead run's, but still in use by others (a qdisc holding their filters).
    Waits(String),
}

/// What became of a dead run's object; Err: it is there, but not provably that run's.
fn remove(o: &Object) -> Result<Outcome, String> {
    match o {
        Object::Netns { name } => {
            if name.is_empty() || name.contains('/') || name.starts_with('.') {
                return Err("not a plain namespace name".into());
            }
            let p = Path::new("/run/netns").join(name);
            if !p.exists() {
                return Ok(Outcome::Gone);
            }
            let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
                .map_err(|e| e.to_string())?;
            // SAFETY: a valid C string; as `ip netns del`: detach the bind mount, then unlink.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            std::fs::remove_file(&p).map_err(|e| e.to_string())?;
            Ok(Outcome::Removed)
        }
        Object::TcFilter {
            at,
            ingress,
            handle,
            priority,
            prog_id,
        } => {
            let Some(_inside) = enter(at)? else {
                return Ok(Outcome::Gone);
            };
            let hook = tc_hook(at.ifindex, *ingress);
            let mut opts = sys::bpf_tc_opts {
                sz: std::mem::size_of::<sys::bpf_tc_opts>() as _,
                handle: *handle,
                priority: *priority,
                ..Default::default()
            };
            // SAFETY: valid, sized hook and opts; query fills opts.prog_id.
            if unsafe { sys::bpf_tc_query(&hook, &mut opts) } != 0 {
                return Ok(Outcome::Gone);
            }
            if opts.prog_id != *prog_id {
                return Err(format!("it now runs program {}", opts.prog_id));
            }
            let opts = sys::bpf_tc_opts {
                sz: std::mem::size_of::<sys::bpf_tc_opts>() as _,
                handle: *handle,
                priority: *priority,
                ..Default::default()
            };
            // SAFETY: as above; detach wants handle and priority only.
            let rc = unsafe { sys::bpf_tc_detach(&hook, &opts) };
            if rc != 0 {
                return Err(std::io::Error::from_raw_os_error(-rc).to_string());
            }
            Ok(Outcome::Removed)
        }
        Object::Clsact { at } => {
            let Some(_inside) = enter(at)? else {
                return Ok(Outcome::Gone);
            };
            if !has_clsact(at.ifindex).map_err(|e| e.to_string())? {
                return Ok(Outcome::Gone);
            }
            let n = filters(at.ifindex, true).map_err(|e| e.to_string())?
                + filters(at.ifindex, false).map_err(|e| e.to_string())?;
            if n > 0 {
                return Ok(Outcome::Waits(format!(
                    "it holds {n} filter entries of others"
                )));
            }
            let mut hook = tc_hook(at.ifindex, true);
            hook.attach_point = sys::BPF_TC_INGRESS | sys::BPF_TC_EGRESS;
            // SAFETY: a valid, sized hook description; this removes the clsact qdisc.
            let rc = unsafe { sys::bpf_tc_hook_destroy(&mut hook) };
            if rc != 0 {
                return Err(std::io::Error::from_raw_os_error(-rc).to_string());
            }
            Ok(Outcome::Removed)
        }
    }
}

/// Into the recorded namespace if it is still the same one and the device still there.
/// None: the namespace or the device is gone, and the objects on it with them.
fn enter(at: &Place) -> Result<Option<Option<netns::Entered>>, String> {
    let path = at
        .netns
        .clone()
        .unwrap_or_else(|| PathBuf::from("/proc/thread-self/ns/net"));
    match netns::inode(&path) {
        Ok(i) if i == at.netns_inode => {}
        Ok(_) if at.netns.is_none() => return Err("it was in another namespace".into()),
        _ => return Ok(None),
    }
    let inside = at
        .netns
        .as_deref()
        .map(netns::Entered::enter)
        .transpose()
        .map_err(|e| e.to_string())?;
    match ifname(at.ifindex) {
        Some(n) if n == at.ifname => Ok(Some(inside)),
        Some(n) => Err(format!("ifindex {} is {n} now", at.ifindex)),
        None => Ok(None),
    }
}

fn tc_hook(ifindex: i32, ingress: bool) -> sys::bpf_tc_hook {
    sys::bpf_tc_hook {
        sz: std::mem::size_of::<sys::bpf_tc_hook>() as _,
        ifindex,
        attach_point: if ingress {
            sys::BPF_TC_INGRESS
        } else {
            sys::BPF_TC_EGRESS
        },
        ..Default::default()
    }
}

/// The device's name in this thread's namespace.
pub fn ifname(ifindex: i32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: a buffer of IF_NAMESIZE, as if_indextoname wants.
    let p = unsafe { libc::if_indextoname(ifindex as u32, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
    Some(
        unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned(),
    )
}

const TC_H_CLSACT: u32 = 0xFFFF_FFF1;
const TC_H_MIN_INGRESS: u32 = 0xFFF2;
const TC_H_MIN_EGRESS: u32 = 0xFFF3;

/// Filters (chain and filter entries) under the clsact qdisc's ingress or egress.
fn filters(ifindex: i32, ingress: bool) -> std::io::Result<usize> {
    let min = if ingress {
        TC_H_MIN_INGRESS
    } else {
        TC_H_MIN_EGRESS
    };
    let parent = (TC_H_CLSACT & 0xFFFF_0000) | min;
    Ok(dump(libc::RTM_GETTFILTER, ifindex, parent)?
        .iter()
        .filter(|(t, _)| *t == libc::RTM_NEWTFILTER)
        .count())
}

/// Whether the device has a clsact qdisc.
fn has_clsact(ifindex: i32) -> std::io::Result<bool> {
    Ok(dump(libc::RTM_GETQDISC, ifindex, 0)?
        .iter()
        .any(|(t, tcm)| *t == libc::RTM_NEWQDISC && tcm_parent(tcm) == TC_H_CLSACT))
}

fn tcm_parent(tcm: &[u8]) -> u32 {
    // struct tcmsg: family, pad, pad(2), ifindex(4), handle(4), parent(4), info(4).
    tcm.get(12..16)
        .map(|b| u32::from_ne_bytes(b.try_into().unwrap_or_default()))
        .unwrap_or(0)
}

/// An rtnetlink dump of TC objects on one device: (message type, tcmsg bytes) per reply.
fn dump(kind: u16, ifindex: i32, parent: u32) -> std::io::Result<Vec<NlMsg>> {
    // SAFETY: a plain netlink socket, closed by OwnedFd.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a socket we just opened.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut req = Vec::with_capacity(36);
    req.extend_from_slice(&36u32.to_ne_bytes());
    req.extend_from_slice(&kind.to_ne_bytes());
    req.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    req.extend_from_slice(&[0u8; 4]); // tcm_family AF_UNSPEC, pads
    req.extend_from_slice(&ifindex.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes()); // handle
    req.extend_from_slice(&parent.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes()); // info
                                                // SAFETY: sending our buffer on our socket (to the kernel: the default address).
    if unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32768];
    loop {
        // SAFETY: receiving into our buffer.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let (msgs, done) = parse_nl(&buf[..n as usize])?;
        out.extend(msgs);
        if done {
            return Ok(out);
        }
    }
}

/// A netlink message: its type and payload.
type NlMsg = (u16, Vec<u8>);

/// Netlink messages in one datagram, and whether the dump ended.
fn parse_nl(mut b: &[u8]) -> std::io::Result<(Vec<NlMsg>, bool)> {
    let mut out = Vec::new();
    while b.len() >= 16 {
        let len = u32::from_ne_bytes(b[0..4].try_into().unwrap_or_default()) as usize;
        let kind = u16::from_ne_bytes(b[4..6].try_into().unwrap_or_default());
        if len < 16 || len > b.len() {
            break;
        }
        let payload = &b[16..len];
        match kind as i32 {
            libc::NLMSG_DONE => return Ok((out, true)),
            libc::NLMSG_ERROR => {
                let err = payload
                    .get(0..4)
                    .map(|e| i32::from_ne_bytes(e.try_into().unwrap_or_default()))
                    .unwrap_or(0);
                if err != 0 {
                    return Err(std::io::Error::from_raw_os_error(-err));
                }
                return Ok((out, true));
            }
            _ => out.push((kind, payload.to_vec())),
        }
        b = &b[(len + 3) & !3..];
    }
    Ok((out, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_survives_odd_process_names() {
        let tail = "S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 424242 19 20";
        assert_eq!(start_time(&format!("77 (a) b) {tail}")), Some(424242));
        assert_eq!(start_time(&format!("77 (plain) {tail}")), Some(424242));
        assert_eq!(start_time("77 (cut"), None);
    }

    #[test]
    fn liveness_needs_pid_start_time_and_boot() {
        let o = Owner {
            pid: 9,
            start: 500,
            boot_id: "b1".into(),
        };
        let stat =
            |start: u64| move |_: u32| Some(format!("9 (x) S {} {start} 1", "0 ".repeat(18)));
        assert!(alive(&o, "b1", stat(500)));
        assert!(!alive(&o, "b1", stat(501)), "pid reused by another process");
        assert!(!alive(&o, "b2", stat(500)), "an earlier boot");
        assert!(!alive(&o, "b1", |_| None), "pid gone");
    }

    #[test]
    fn records_are_written_whole_and_removed_when_empty() {
        let dir = std::env::temp_dir().join(format!("nsl-leftovers-{}", std::process::id()));
        let mut r = Record {
            owner: Owner {
                pid: 12,
                start: 3,
                boot_id: "b".into(),
            },
            command: "marker".into(),
            objects: vec![Object::Netns { name: "x".into() }],
        };
        write(&dir, &r).unwrap();
        let back: Record =
            serde_json::from_slice(&std::fs::read(file_of(&dir, 12)).unwrap()).unwrap();
        assert_eq!(back, r);
        r.objects.clear();
        write(&dir, &r).unwrap();
        assert!(!file_of(&dir, 12).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn netlink_replies_split_and_end() {
        let msg = |kind: u16, payload: &[u8]| {
            let mut m = ((16 + payload.len()) as u32).to_ne_bytes().to_vec();
            m.extend_from_slice(&kind.to_ne_bytes());
            m.extend_from_slice(&[0u8; 10]);
            m.extend_from_slice(payload);
            while m.len() % 4 != 0 {
                m.push(0);
            }
            m
        };
        let mut b = msg(44, &[1, 2, 3, 4, 5]);
        b.extend(msg(44, &[0; 20]));
        let (m, done) = parse_nl(&b).unwrap();
        assert_eq!((m.len(), done, m[0].1.len()), (2, false, 5));
        b.extend(msg(3, &[0; 4]));
        assert!(parse_nl(&b).unwrap().1);
        let e = msg(2, &(-libc::EPERM).to_ne_bytes());
        assert_eq!(parse_nl(&e).unwrap_err().raw_os_error(), Some(libc::EPERM));
    }
}
