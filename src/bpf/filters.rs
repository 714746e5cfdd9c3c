//! Macros shared by the commands that load BPF objects with the common filters
//! (bpf/filter.bpf.h): each skeleton has its own rodata type with the same field names.

/// Write the filters into an object's rodata; the objects share the field names.
macro_rules! set_filters {
    ($open:expr, $f:expr) => {{
        let ro = $open
            .maps
            .rodata_data
            .as_deref_mut()
            .context("BPF object has no rodata")?;
        write_filters!(&mut *ro, $f);
        ro
    }};
}

macro_rules! write_filters {
    ($ro:expr, $f:expr) => {{
        let (ro, f) = ($ro, $f);
        ro.f_port = f.port;
        ro.f_proto = f.proto;
        ro.f_family = f.family;
        ro.f_ifindex = f.ifindex;
        ro.f_netns_on = u8::from(!f.netns.is_empty());
        if let Some(c) = &f.cidr {
            // libc's, not events', numbers: the BPF layer sits below event decoding.
            ro.f_cidr_family = if c.addr.is_ipv4() {
                libc::AF_INET as u8
            } else {
                libc::AF_INET6 as u8
            };
            ro.f_cidr_len = c.len;
            ro.f_cidr_addr = c.bytes();
        }
        ro.f_tgid = f.tgid;
        if let Some(comm) = &f.comm {
            ro.f_comm_set = 1;
            for (d, s) in ro.f_comm.iter_mut().zip(comm.bytes()) {
                *d = s as i8;
            }
        }
        ro.f_cgroup = f.cgroup;
    }};
}

/// After load: the namespaces of `--netns` into an object's netns_want map.
macro_rules! fill_netns {
    ($skel:expr, $f:expr) => {{
        use libbpf_rs::MapCore as _;
        for ns in &$f.netns {
            $skel
                .maps
                .netns_want
                .update(&ns.to_ne_bytes(), &[1u8], libbpf_rs::MapFlags::ANY)
                .context("filling the --netns filter")?;
        }
    }};
}
