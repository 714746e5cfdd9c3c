//! Kube-proxy-shaped NAT rulesets, as loader text, for the netfilter traversal benchmark.
//!
//! N dummy UDP services come first and the probe service last, so every probe packet
//! (the first of its flow: NAT rules only see a flow's first packet) walks past all N
//! dummies. iptables mode matches them one rule at a time (O(N)); kube-proxy's nftables
//! mode finds the service in one verdict-map lookup (O(1)); `NftablesLinear` is the same
//! nftables layout with a rule per service, to separate "nftables" from "map".
//!
//! The text is what `Backend::loader` reads on stdin. Names and comments follow
//! kube-proxy's so the kernel holds the same shape of objects, with two departures that
//! leave the probe's path as kube-proxy's: hashes in chain names come from the service
//! index, not SHA-256; and in nftables mode a dummy service's chain picks its one
//! endpoint with a goto instead of a one-entry `numgen` vmap, which loads O(N²) (see
//! `nft::pick_endpoint`).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};

/// Most dummy services a layout may hold: their VIPs must stay inside 172.30.0.0/16.
pub const MAX_SERVICES: u32 = 60_000;
/// Most endpoints the probe service may have.
pub const MAX_ENDPOINTS: usize = 8;

/// Port of every dummy service, and of its one endpoint.
const DUMMY_PORT: u16 = 80;
const DUMMY_TARGET_PORT: u16 = 8080;
/// kube-proxy's masquerade mark.
const MASQ_MARK: &str = "0x4000";
/// iptables chain names are at most 28 characters (XT_EXTENSION_MAXNAMELEN - 1 - 3).
pub const IPTABLES_CHAIN_MAX: usize = 28;
/// nftables names are at most 255 bytes (NFT_CHAIN_MAXNAMELEN is 256 with the NUL).
pub const NFT_CHAIN_MAX: usize = 255;
/// Map elements per `add element` statement: few statements, none huge.
const ELEMENTS_PER_STATEMENT: usize = 1000;
/// The table kube-proxy's nftables mode owns.
const NFT_TABLE: &str = "ip kube-proxy";

/// Which netfilter front end (and layout) the ruleset is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// kube-proxy iptables mode, loaded through the legacy xtables kernel tables.
    IptablesLegacy,
    /// The same iptables text, loaded through iptables-nft (nf_tables underneath).
    IptablesNft,
    /// kube-proxy nftables mode: one verdict-map lookup finds the service.
    NftablesMap,
    /// nftables mode with a linear chain of one rule per service instead of the map.
    NftablesLinear,
}

impl Backend {
    pub const ALL: [Backend; 4] = [
        Backend::IptablesLegacy,
        Backend::IptablesNft,
        Backend::NftablesMap,
        Backend::NftablesLinear,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Backend::IptablesLegacy => "iptables-legacy",
            Backend::IptablesNft => "iptables-nft",
            Backend::NftablesMap => "nftables-map",
            Backend::NftablesLinear => "nftables-linear",
        }
    }

    pub fn parse(s: &str) -> Result<Backend, String> {
        Self::ALL.into_iter().find(|b| b.name() == s).ok_or_else(|| {
            format!(
                "unknown backend '{s}': use iptables-legacy, iptables-nft, nftables-map or nftables-linear"
            )
        })
    }

    /// The program (and its arguments) that loads `ruleset` text from stdin.
    pub fn loader(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Backend::IptablesLegacy => ("iptables-legacy-restore", &[]),
            Backend::IptablesNft => ("iptables-nft-restore", &[]),
            Backend::NftablesMap | Backend::NftablesLinear => ("nft", &["-f", "-"]),
        }
    }

    fn is_iptables(self) -> bool {
        matches!(self, Backend::IptablesLegacy | Backend::IptablesNft)
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the ruleset holds: `services` dummies, then the probe service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Dummy services placed before the probe service (0..=MAX_SERVICES).
    pub services: u32,
    /// The probe service's cluster IP (traffic goes here); outside 172.30.0.0/16.
    pub probe_vip: Ipv4Addr,
    /// UDP port of the probe service.
    pub probe_port: u16,
    /// 1..=MAX_ENDPOINTS endpoints of the probe service.
    pub probe_endpoints: Vec<SocketAddrV4>,
}

impl Layout {
    /// Why this layout cannot be generated, if it cannot. `ruleset` panics on these.
    pub fn check(&self) -> Result<(), String> {
        if self.services > MAX_SERVICES {
            return Err(format!(
                "{} services is too many: at most {MAX_SERVICES}",
                self.services
            ));
        }
        let k = self.probe_endpoints.len();
        if !(1..=MAX_ENDPOINTS).contains(&k) {
            return Err(format!(
                "the probe service has {k} endpoints: give 1 to {MAX_ENDPOINTS}"
            ));
        }
        // A probe VIP among the dummies' would match a dummy rule before the probe's.
        if self.probe_vip.octets()[..2] == [172, 30] {
            return Err(format!(
                "probe VIP {} is in 172.30.0.0/16, which the dummy services use",
                self.probe_vip
            ));
        }
        Ok(())
    }

    fn assert_valid(&self) {
        if let Err(e) = self.check() {
            panic!("invalid nfrules::Layout: {e}");
        }
    }

    /// Every service in rule order: the dummies, then the probe.
    fn all_services(&self) -> impl Iterator<Item = Service> + '_ {
        (0..self.services)
            .map(Service::dummy)
            .chain(std::iter::once(Service::probe(self)))
    }

    fn endpoint_total(&self) -> usize {
        self.services as usize + self.probe_endpoints.len()
    }
}

/// Cluster IP of dummy service `i`: 172.30.0.0 + i + 1, so 172.30.0.1 upwards.
pub fn dummy_vip(i: u32) -> Ipv4Addr {
    offset(Ipv4Addr::new(172, 30, 0, 0), i)
}

/// The one endpoint (pod IP 10.232.0.0 + i + 1, port 8080) of dummy service `i`.
pub fn dummy_endpoint(i: u32) -> SocketAddrV4 {
    SocketAddrV4::new(offset(Ipv4Addr::new(10, 232, 0, 0), i), DUMMY_TARGET_PORT)
}

/// base + i + 1, kept inside base's /16 (i < 65535, which MAX_SERVICES ensures).
fn offset(base: Ipv4Addr, i: u32) -> Ipv4Addr {
    assert!(i < 0xffff, "dummy index {i} does not fit in a /16");
    Ipv4Addr::from(u32::from(base) + i + 1)
}

/// The loader input (see `Backend::loader`) for `layout`. Panics if `layout.check()` fails.
pub fn ruleset(backend: Backend, layout: &Layout) -> String {
    layout.assert_valid();
    match backend {
        Backend::IptablesLegacy | Backend::IptablesNft => iptables::ruleset(layout),
        Backend::NftablesMap => nft::ruleset(layout, true),
        Backend::NftablesLinear => nft::ruleset(layout, false),
    }
}

/// How many rules `ruleset` generates (iptables `-A` lines, nftables `add rule` lines;
/// map elements are not rules), which is also how many rules iptables-save or
/// `nft list table ip kube-proxy` shows after loading. Panics if `layout.check()` fails.
pub fn rule_count(backend: Backend, layout: &Layout) -> usize {
    layout.assert_valid();
    let services = layout.services as usize + 1;
    let endpoints = layout.endpoint_total();
    if backend.is_iptables() {
        // 3 hook jumps, mark-masq 1, postrouting 3, nodeports 1; per service its
        // KUBE-SERVICES rule; per endpoint one KUBE-SVC rule and two KUBE-SEP rules.
        8 + services + 3 * endpoints
    } else {
        // 3 hook jumps, masquerading 3, mark-for-masquerade 1; per service its endpoint
        // pick; per endpoint masq + dnat; plus the service dispatch (1 map rule or N+1).
        let dispatch = if backend == Backend::NftablesMap {
            1
        } else {
            services
        };
        7 + services + 2 * endpoints + dispatch
    }
}

/// The probe service's key: above every u32, so never a dummy's.
const PROBE_KEY: u64 = 1 << 32;

/// One service as both layouts see it.
struct Service {
    /// Unique per service; chain-name hashes are derived from it.
    key: u64,
    /// Service name in namespace "default".
    name: String,
    vip: Ipv4Addr,
    port: u16,
    endpoints: Vec<SocketAddrV4>,
}

impl Service {
    fn dummy(i: u32) -> Service {
        Service {
            key: u64::from(i),
            name: format!("svc-{i}"),
            vip: dummy_vip(i),
            port: DUMMY_PORT,
            endpoints: vec![dummy_endpoint(i)],
        }
    }

    fn probe(layout: &Layout) -> Service {
        Service {
            key: PROBE_KEY,
            name: "svc-probe".to_string(),
            vip: layout.probe_vip,
            port: layout.probe_port,
            endpoints: layout.probe_endpoints.clone(),
        }
    }

    fn is_probe(&self) -> bool {
        self.key == PROBE_KEY
    }

    /// kube-proxy's ServicePortName text, e.g. "default/svc-3:p80".
    fn port_name(&self) -> String {
        format!("default/{}:p{}", self.name, self.port)
    }

    /// Unique key of endpoint `j` (< 256) of this service.
    fn endpoint_key(&self, j: usize) -> u64 {
        // The top bit keeps endpoint hashes unrelated to service hashes.
        (1 << 63) | (self.key << 8) | j as u64
    }
}

/// A bijective 64-bit mix (splitmix64's finaliser): distinct keys, distinct outputs.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `len` (<= 16) base32 characters (RFC 4648: A-Z, 2-7) naming `key`, like kube-proxy's
/// hashes. The first 64 of the 80 bits are mix64(key), so 16-character ids never collide.
fn hash_id(key: u64, len: usize) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let bits = (u128::from(mix64(key)) << 16) | u128::from(mix64(!key) >> 48);
    (0..len.min(16))
        .map(|c| char::from(ALPHABET[((bits >> (75 - 5 * c)) & 31) as usize]))
        .collect()
}

/// Line-per-call appends to a String (writing to a String cannot fail).
macro_rules! emit {
    ($out:expr, $($arg:tt)*) => {
        let _ = writeln!($out, $($arg)*);
    };
}

/// kube-proxy iptables mode: iptables-restore text for the nat table.
mod iptables {
    use super::*;

    pub(super) fn svc_chain(svc: &Service) -> String {
        format!("KUBE-SVC-{}", hash_id(svc.key, 16))
    }

    pub(super) fn sep_chain(svc: &Service, j: usize) -> String {
        format!("KUBE-SEP-{}", hash_id(svc.endpoint_key(j), 16))
    }

    /// kube-proxy's probability text: the rule picks 1 of the `remaining` endpoints.
    pub(super) fn probability(remaining: usize) -> String {
        format!("{:.10}", 1.0 / remaining as f64)
    }

    pub(super) fn ruleset(layout: &Layout) -> String {
        let mut out = String::with_capacity(400 * (layout.endpoint_total() + 8));
        emit!(out, "*nat");
        declare_chains(&mut out, layout);
        fixed_rules(&mut out);
        for svc in layout.all_services() {
            service_portal(&mut out, &svc);
        }
        emit!(
            out,
            "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"
        );
        for svc in layout.all_services() {
            service_chains(&mut out, &svc);
        }
        emit!(out, "COMMIT");
        out
    }

    fn declare_chains(out: &mut String, layout: &Layout) {
        for builtin in ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"] {
            emit!(out, ":{builtin} ACCEPT [0:0]");
        }
        for own in [
            "KUBE-SERVICES",
            "KUBE-MARK-MASQ",
            "KUBE-POSTROUTING",
            "KUBE-NODEPORTS",
        ] {
            emit!(out, ":{own} - [0:0]");
        }
        for svc in layout.all_services() {
            emit!(out, ":{} - [0:0]", svc_chain(&svc));
            for j in 0..svc.endpoints.len() {
                emit!(out, ":{} - [0:0]", sep_chain(&svc, j));
            }
        }
    }

    /// Hook jumps and the masquerade machinery, as kube-proxy writes them.
    fn fixed_rules(out: &mut String) {
        for hook in ["PREROUTING", "OUTPUT"] {
            emit!(
                out,
                "-A {hook} -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
            );
        }
        emit!(
            out,
            "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING"
        );
        emit!(
            out,
            "-A KUBE-MARK-MASQ -j MARK --set-xmark {MASQ_MARK}/{MASQ_MARK}"
        );
        emit!(
            out,
            "-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN"
        );
        emit!(
            out,
            "-A KUBE-POSTROUTING -j MARK --set-xmark {MASQ_MARK}/0x0"
        );
        emit!(
            out,
            "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully"
        );
    }

    /// The service's rule in KUBE-SERVICES: the linear walk the benchmark measures.
    fn service_portal(out: &mut String, svc: &Service) {
        emit!(
            out,
            "-A KUBE-SERVICES -d {}/32 -p udp -m comment --comment \"{} cluster IP\" -m udp --dport {} -j {}",
            svc.vip,
            svc.port_name(),
            svc.port,
            svc_chain(svc)
        );
    }

    /// KUBE-SVC: pick an endpoint (1/k, then 1/(k-1), ..., then the last for sure);
    /// KUBE-SEP: masquerade hairpin traffic, DNAT to the endpoint.
    fn service_chains(out: &mut String, svc: &Service) {
        let (svc_name, port_name) = (svc_chain(svc), svc.port_name());
        let k = svc.endpoints.len();
        for (j, ep) in svc.endpoints.iter().enumerate() {
            let pick = if j + 1 < k {
                format!(
                    " -m statistic --mode random --probability {}",
                    probability(k - j)
                )
            } else {
                String::new()
            };
            emit!(
                out,
                "-A {svc_name} -m comment --comment \"{port_name} -> {ep}\"{pick} -j {}",
                sep_chain(svc, j)
            );
        }
        for (j, ep) in svc.endpoints.iter().enumerate() {
            let sep = sep_chain(svc, j);
            emit!(
                out,
                "-A {sep} -s {}/32 -m comment --comment \"{port_name}\" -j KUBE-MARK-MASQ",
                ep.ip()
            );
            emit!(
                out,
                "-A {sep} -p udp -m comment --comment \"{port_name}\" -m udp -j DNAT --to-destination {ep}"
            );
        }
    }
}

/// kube-proxy nftables mode: `nft -f` commands for `table ip kube-proxy`.
mod nft {
    use super::*;

    /// "default/svc-3/udp/p80", the part of kube-proxy's chain names after the hash.
    fn base(svc: &Service) -> String {
        format!("default/{}/udp/p{}", svc.name, svc.port)
    }

    pub(super) fn service_chain(svc: &Service) -> String {
        format!("service-{}-{}", hash_id(svc.key, 8), base(svc))
    }

    pub(super) fn endpoint_chain(svc: &Service, j: usize) -> String {
        let ep = svc.endpoints[j];
        format!(
            "endpoint-{}-{}__{}/{}",
            hash_id(svc.endpoint_key(j), 8),
            base(svc),
            ep.ip(),
            ep.port()
        )
    }

    /// `map` selects the verdict-map dispatch; otherwise one `services` rule per service.
    pub(super) fn ruleset(layout: &Layout, map: bool) -> String {
        let mut out = String::with_capacity(300 * (layout.endpoint_total() + 8));
        // Chains (and the map) first: a jump, goto or map element must name an existing chain.
        declare(&mut out, layout, map);
        fixed_rules(&mut out, map);
        for svc in layout.all_services() {
            if !map {
                emit!(
                    out,
                    "add rule {NFT_TABLE} services ip daddr {} udp dport {} goto {}",
                    svc.vip,
                    svc.port,
                    service_chain(&svc)
                );
            }
            service_rules(&mut out, &svc);
        }
        if map {
            map_elements(&mut out, layout);
        }
        out
    }

    fn declare(out: &mut String, layout: &Layout, map: bool) {
        emit!(
            out,
            "add table {NFT_TABLE} {{ comment \"rules for kube-proxy\" ; }}"
        );
        for (chain, hook, priority) in [
            ("nat-prerouting", "prerouting", "dstnat"),
            ("nat-output", "output", "-100"),
            ("nat-postrouting", "postrouting", "srcnat"),
        ] {
            emit!(
                out,
                "add chain {NFT_TABLE} {chain} {{ type nat hook {hook} priority {priority} ; }}"
            );
        }
        for chain in ["masquerading", "mark-for-masquerade", "services"] {
            emit!(out, "add chain {NFT_TABLE} {chain}");
        }
        for svc in layout.all_services() {
            emit!(out, "add chain {NFT_TABLE} {}", service_chain(&svc));
            for j in 0..svc.endpoints.len() {
                emit!(out, "add chain {NFT_TABLE} {}", endpoint_chain(&svc, j));
            }
        }
        if map {
            emit!(
                out,
                "add map {NFT_TABLE} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }}"
            );
        }
    }

    fn fixed_rules(out: &mut String, map: bool) {
        emit!(out, "add rule {NFT_TABLE} nat-prerouting jump services");
        emit!(out, "add rule {NFT_TABLE} nat-output jump services");
        emit!(
            out,
            "add rule {NFT_TABLE} nat-postrouting jump masquerading"
        );
        emit!(
            out,
            "add rule {NFT_TABLE} masquerading mark and {MASQ_MARK} == 0 return"
        );
        emit!(
            out,
            "add rule {NFT_TABLE} masquerading mark set mark xor {MASQ_MARK}"
        );
        emit!(
            out,
            "add rule {NFT_TABLE} masquerading masquerade fully-random"
        );
        emit!(
            out,
            "add rule {NFT_TABLE} mark-for-masquerade mark set mark or {MASQ_MARK}"
        );
        if map {
            emit!(
                out,
                "add rule {NFT_TABLE} services ip daddr . meta l4proto . th dport vmap @service-ips"
            );
        }
    }

    /// The service chain picks an endpoint chain at random; each endpoint chain marks
    /// hairpin traffic for masquerade and DNATs.
    fn service_rules(out: &mut String, svc: &Service) {
        emit!(
            out,
            "add rule {NFT_TABLE} {} {}",
            service_chain(svc),
            pick_endpoint(svc)
        );
        for (j, ep) in svc.endpoints.iter().enumerate() {
            let chain = endpoint_chain(svc, j);
            emit!(
                out,
                "add rule {NFT_TABLE} {chain} ip saddr {} jump mark-for-masquerade",
                ep.ip()
            );
            emit!(
                out,
                "add rule {NFT_TABLE} {chain} meta l4proto udp dnat to {ep}"
            );
        }
    }

    /// kube-proxy's `numgen random mod K vmap { ... }` (even for one endpoint) on the
    /// probe's path. Dummy service chains are never on that path, and each anonymous
    /// vmap makes the kernel scan the whole batch and the table's sets when it is added
    /// (perf on 6.18: `__nft_set_trans_bind`, `nf_tables_newset`; 10000 of them took
    /// 14 s of system time in `nft -f`, growing as N²), so a dummy uses a plain goto.
    fn pick_endpoint(svc: &Service) -> String {
        if !svc.is_probe() {
            return format!("goto {}", endpoint_chain(svc, 0));
        }
        let k = svc.endpoints.len();
        let choices: Vec<String> = (0..k)
            .map(|j| format!("{j} : goto {}", endpoint_chain(svc, j)))
            .collect();
        format!("numgen random mod {k} vmap {{ {} }}", choices.join(", "))
    }

    /// All services' map elements, a bounded number per statement: few statements (one
    /// per element costs `nft -f` about 15% more at 10000), and no multi-megabyte line.
    fn map_elements(out: &mut String, layout: &Layout) {
        let services: Vec<Service> = layout.all_services().collect();
        for chunk in services.chunks(ELEMENTS_PER_STATEMENT) {
            let elements: Vec<String> = chunk
                .iter()
                .map(|svc| {
                    format!(
                        "{} . udp . {} : goto {}",
                        svc.vip,
                        svc.port,
                        service_chain(svc)
                    )
                })
                .collect();
            emit!(
                out,
                "add element {NFT_TABLE} service-ips {{ {} }}",
                elements.join(", ")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const PROBE_VIP: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 10);
    const PROBE_PORT: u16 = 9000;

    fn probe_endpoint(j: usize) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 233, 0, 1 + j as u8), 9001)
    }

    fn layout(services: u32, endpoints: usize) -> Layout {
        Layout {
            services,
            probe_vip: PROBE_VIP,
            probe_port: PROBE_PORT,
            probe_endpoints: (0..endpoints).map(probe_endpoint).collect(),
        }
    }

    fn lines_starting<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    /// Rules as each loader counts them: iptables `-A` lines, nft `add rule` lines.
    fn generated_rules(backend: Backend, text: &str) -> usize {
        let prefix = if backend.is_iptables() {
            "-A "
        } else {
            "add rule "
        };
        lines_starting(text, prefix).len()
    }

    /// Declared chain names, in order.
    fn chains(backend: Backend, text: &str) -> Vec<String> {
        text.lines()
            .filter_map(|l| {
                if backend.is_iptables() {
                    l.strip_prefix(':')?.split(' ').next()
                } else {
                    l.strip_prefix("add chain ip kube-proxy ")?
                        .split(' ')
                        .next()
                }
            })
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn names_parse_and_loaders() {
        for b in Backend::ALL {
            assert_eq!(Backend::parse(b.name()), Ok(b));
            assert_eq!(b.to_string(), b.name());
        }
        assert_eq!(
            Backend::parse("x"),
            Err("unknown backend 'x': use iptables-legacy, iptables-nft, nftables-map or nftables-linear".to_string())
        );
        assert!(Backend::parse("IPTABLES-LEGACY").is_err());
        let empty: &[&str] = &[];
        assert_eq!(
            Backend::IptablesLegacy.loader(),
            ("iptables-legacy-restore", empty)
        );
        assert_eq!(
            Backend::IptablesNft.loader(),
            ("iptables-nft-restore", empty)
        );
        for b in [Backend::NftablesMap, Backend::NftablesLinear] {
            assert_eq!(b.loader(), ("nft", &["-f", "-"][..]));
        }
    }

    #[test]
    fn counts_for_0_1_100_services() {
        for n in [0u32, 1, 100] {
            for k in [1usize, 3] {
                let l = layout(n, k);
                let (s, e) = (n as usize + 1, n as usize + k);
                for b in Backend::ALL {
                    let text = ruleset(b, &l);
                    let rules = generated_rules(b, &text);
                    assert_eq!(rules, rule_count(b, &l), "{b} n={n} k={k}");
                    let (want_rules, want_chains) = match b {
                        Backend::IptablesLegacy | Backend::IptablesNft => {
                            (8 + s + 3 * e, 8 + s + e)
                        }
                        Backend::NftablesMap => (8 + s + 2 * e, 6 + s + e),
                        Backend::NftablesLinear => (7 + 2 * s + 2 * e, 6 + s + e),
                    };
                    assert_eq!(rules, want_rules, "{b} n={n} k={k}");
                    assert_eq!(chains(b, &text).len(), want_chains, "{b} n={n} k={k}");
                    if b.is_iptables() {
                        assert_eq!(text.lines().next(), Some("*nat"));
                        assert_eq!(text.lines().last(), Some("COMMIT"));
                        assert_eq!(text.lines().count(), 2 + want_chains + want_rules);
                    } else {
                        let elements = text.matches(" . udp . ").count();
                        let want = if b == Backend::NftablesMap { s } else { 0 };
                        assert_eq!(elements, want, "{b} n={n}");
                    }
                }
            }
        }
        assert_eq!(
            ruleset(Backend::IptablesLegacy, &layout(5, 2)),
            ruleset(Backend::IptablesNft, &layout(5, 2))
        );
    }

    #[test]
    fn map_elements_come_in_few_statements() {
        let text = ruleset(Backend::NftablesMap, &layout(2500, 1));
        let statements = lines_starting(&text, "add element ");
        assert_eq!(statements.len(), 3);
        assert_eq!(text.matches(" . udp . ").count(), 2501);
        let probe = format!("{PROBE_VIP} . udp . {PROBE_PORT} : goto service-");
        assert!(statements[2].contains(&probe));
    }

    #[test]
    fn probe_is_the_last_service_rule() {
        for n in [0u32, 1, 100] {
            let l = layout(n, 2);
            let text = ruleset(Backend::IptablesLegacy, &l);
            let portals = lines_starting(&text, "-A KUBE-SERVICES ");
            assert_eq!(portals.len(), n as usize + 2);
            assert!(portals[n as usize + 1].contains("-j KUBE-NODEPORTS"));
            let probe = portals[n as usize];
            assert!(probe.starts_with(&format!("-A KUBE-SERVICES -d {PROBE_VIP}/32 -p udp")));
            assert!(probe.contains(&format!("--dport {PROBE_PORT} -j KUBE-SVC-")));
            for (i, rule) in portals[..n as usize].iter().enumerate() {
                let dummy = format!("-d {}/32 ", dummy_vip(i as u32));
                assert!(rule.contains(&dummy) && rule.contains("--dport 80 "));
            }

            let text = ruleset(Backend::NftablesLinear, &l);
            let linear = lines_starting(&text, "add rule ip kube-proxy services ");
            assert_eq!(linear.len(), n as usize + 1);
            let want = format!(
                "add rule ip kube-proxy services ip daddr {PROBE_VIP} udp dport {PROBE_PORT} goto service-"
            );
            assert!(linear[n as usize].starts_with(&want));
        }
    }

    #[test]
    fn endpoint_probabilities() {
        let want: [&[&str]; 4] = [
            &[],
            &["0.5000000000"],
            &["0.3333333333", "0.5000000000"],
            &["0.2500000000", "0.3333333333", "0.5000000000"],
        ];
        for k in 1..=4 {
            let text = ruleset(Backend::IptablesLegacy, &layout(0, k));
            let probe_svc = iptables::svc_chain(&Service::probe(&layout(0, k)));
            let picks = lines_starting(&text, &format!("-A {probe_svc} "));
            assert_eq!(picks.len(), k);
            let got: Vec<&str> = picks
                .iter()
                .filter_map(|r| r.split("--probability ").nth(1))
                .map(|p| p.split(' ').next().unwrap())
                .collect();
            assert_eq!(got, want[k - 1], "k={k}");
            assert!(!picks[k - 1].contains("statistic"));
            for (j, rule) in picks.iter().enumerate() {
                assert!(rule.contains(&format!("-> {}\"", probe_endpoint(j))));
            }

            let text = ruleset(Backend::NftablesMap, &layout(0, k));
            let numgen = format!("numgen random mod {k} vmap {{ 0 : goto endpoint-");
            let rule = text.lines().find(|l| l.contains(&numgen)).unwrap();
            assert_eq!(rule.matches(" : goto endpoint-").count(), k);
        }
    }

    #[test]
    fn only_the_probe_service_uses_numgen() {
        for b in [Backend::NftablesMap, Backend::NftablesLinear] {
            let text = ruleset(b, &layout(100, 1));
            assert_eq!(text.matches("numgen").count(), 1, "{b}");
            let dummy = Service::dummy(7);
            let want = format!(
                "add rule ip kube-proxy {} goto {}",
                nft::service_chain(&dummy),
                nft::endpoint_chain(&dummy, 0)
            );
            assert!(text.lines().any(|l| l == want), "{b}: missing {want}");
            let probe = nft::service_chain(&Service::probe(&layout(100, 1)));
            let want = format!(
                "add rule ip kube-proxy {probe} numgen random mod 1 vmap {{ 0 : goto endpoint-"
            );
            assert!(text.lines().any(|l| l.starts_with(&want)), "{b}");
        }
    }

    #[test]
    fn chain_names_valid_unique_and_declared() {
        let l = layout(100, MAX_ENDPOINTS);
        for b in Backend::ALL {
            let text = ruleset(b, &l);
            let declared = chains(b, &text);
            let unique: HashSet<&String> = declared.iter().collect();
            assert_eq!(unique.len(), declared.len(), "{b}: duplicate chain");
            for name in &declared {
                let (max, ok_char): (usize, fn(char) -> bool) = if b.is_iptables() {
                    (IPTABLES_CHAIN_MAX, |c| {
                        c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-'
                    })
                } else {
                    // nft's scanner: an identifier is a letter, then letters,
                    // digits and / - _ .
                    (NFT_CHAIN_MAX, |c| {
                        c.is_ascii_alphanumeric() || "/-_.".contains(c)
                    })
                };
                assert!(name.len() <= max, "{b}: {name} too long");
                assert!(name.starts_with(|c: char| c.is_ascii_alphabetic()));
                assert!(name.chars().all(ok_char), "{b}: {name}");
            }
            // Every jump or goto target is a declared chain.
            let jump = if b.is_iptables() { "-j " } else { "goto " };
            for target in text.split(jump).skip(1) {
                let target = target.split([' ', ',', '\n']).next().unwrap();
                if b.is_iptables() && !target.starts_with("KUBE-") {
                    continue; // a target extension: MARK, DNAT, ...
                }
                assert!(unique.contains(&target.to_string()), "{b}: {target}");
            }
        }
        assert_eq!(iptables::svc_chain(&Service::dummy(0)).len(), 25);
        assert_eq!(iptables::sep_chain(&Service::dummy(0), 0).len(), 25);
    }

    #[test]
    fn iptables_names_unique_for_all_services() {
        let probe = Service::probe(&layout(0, MAX_ENDPOINTS));
        let mut svcs = HashSet::new();
        let mut seps = HashSet::new();
        for svc in (0..=MAX_SERVICES).map(Service::dummy).chain([probe]) {
            assert!(svcs.insert(iptables::svc_chain(&svc)));
            for j in 0..svc.endpoints.len() {
                assert!(seps.insert(iptables::sep_chain(&svc, j)));
            }
        }
    }

    #[test]
    fn dummy_addresses_distinct_and_apart_from_probe() {
        let probe_ips: Vec<Ipv4Addr> = (0..MAX_ENDPOINTS)
            .map(|j| *probe_endpoint(j).ip())
            .collect();
        let mut vips = HashSet::new();
        let mut eps = HashSet::new();
        for i in 0..=MAX_SERVICES {
            let (vip, ep) = (dummy_vip(i), dummy_endpoint(i));
            assert_eq!(vip.octets()[..2], [172, 30]);
            assert_eq!(ep.ip().octets()[..2], [10, 232]);
            assert_eq!(ep.port(), 8080);
            assert!(vips.insert(vip) && eps.insert(ep));
            assert_ne!(vip, PROBE_VIP);
            assert!(!probe_ips.contains(ep.ip()) && !probe_ips.contains(&vip));
        }
        assert_eq!(dummy_vip(0), Ipv4Addr::new(172, 30, 0, 1));
        assert_eq!(dummy_vip(255), Ipv4Addr::new(172, 30, 1, 0));
        assert_eq!(dummy_endpoint(0).to_string(), "10.232.0.1:8080");
    }

    #[test]
    fn layout_check() {
        assert_eq!(layout(MAX_SERVICES, MAX_ENDPOINTS).check(), Ok(()));
        assert!(layout(MAX_SERVICES + 1, 1)
            .check()
            .unwrap_err()
            .contains("too many"));
        assert!(layout(0, 0).check().unwrap_err().contains("0 endpoints"));
        assert!(layout(0, MAX_ENDPOINTS + 1).check().is_err());
        let mut l = layout(0, 1);
        l.probe_vip = Ipv4Addr::new(172, 30, 0, 1);
        assert!(l.check().unwrap_err().contains("172.30.0.0/16"));
    }

    #[test]
    #[should_panic(expected = "invalid nfrules::Layout")]
    fn ruleset_rejects_bad_layout() {
        ruleset(Backend::NftablesMap, &layout(0, 0));
    }

    #[test]
    fn kube_proxy_shaped_lines() {
        let l = layout(1, 2);
        let ipt = ruleset(Backend::IptablesNft, &l);
        for want in [
            "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
            "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
            "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
            "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
            "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
            ":KUBE-NODEPORTS - [0:0]",
            ":INPUT ACCEPT [0:0]",
        ] {
            assert!(ipt.lines().any(|line| line == want), "missing {want}");
        }
        let dummy = Service::dummy(0);
        let svc = iptables::svc_chain(&dummy);
        let sep = iptables::sep_chain(&dummy, 0);
        for want in [
            format!("-A KUBE-SERVICES -d 172.30.0.1/32 -p udp -m comment --comment \"default/svc-0:p80 cluster IP\" -m udp --dport 80 -j {svc}"),
            format!("-A {svc} -m comment --comment \"default/svc-0:p80 -> 10.232.0.1:8080\" -j {sep}"),
            format!("-A {sep} -s 10.232.0.1/32 -m comment --comment \"default/svc-0:p80\" -j KUBE-MARK-MASQ"),
            format!("-A {sep} -p udp -m comment --comment \"default/svc-0:p80\" -m udp -j DNAT --to-destination 10.232.0.1:8080"),
        ] {
            assert!(ipt.lines().any(|line| line == want), "missing {want}");
        }

        let map = ruleset(Backend::NftablesMap, &l);
        let ep = nft::endpoint_chain(&dummy, 0);
        assert!(
            ep.starts_with("endpoint-") && ep.ends_with("-default/svc-0/udp/p80__10.232.0.1/8080")
        );
        assert!(nft::service_chain(&dummy).ends_with("-default/svc-0/udp/p80"));
        for want in [
            "add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips"
                .to_string(),
            format!("add rule ip kube-proxy {ep} ip saddr 10.232.0.1 jump mark-for-masquerade"),
            format!("add rule ip kube-proxy {ep} meta l4proto udp dnat to 10.232.0.1:8080"),
        ] {
            assert!(map.lines().any(|line| line == want), "missing {want}");
        }
        assert!(map.starts_with("add table ip kube-proxy"));
    }

    /// Loads each backend's ruleset into a scratch netns with the real tools and counts
    /// the rules they list back. Needs root and the loaders:
    /// `cargo test --release --lib nfrules -- --ignored`.
    #[test]
    #[ignore]
    fn real_loaders_accept_the_rulesets() {
        use std::io::Write as _;
        use std::process::{Command, Stdio};

        let run = |args: &[&str], stdin: Option<&str>| -> String {
            let mut child = Command::new(args[0])
                .args(&args[1..])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap_or_else(|e| panic!("{}: {e}", args[0]));
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
            drop(pipe);
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{args:?} failed");
            String::from_utf8(out.stdout).unwrap()
        };
        /// Deletes the scratch netns even when an assertion fails.
        struct Scratch(String);
        impl Drop for Scratch {
            fn drop(&mut self) {
                let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
            }
        }
        let ns = format!("nfbtest-{}", std::process::id());
        for b in Backend::ALL {
            let l = layout(100, 3);
            run(&["ip", "netns", "add", &ns], None);
            let scratch = Scratch(ns.clone());
            let (prog, args) = b.loader();
            let mut load = vec!["ip", "netns", "exec", &ns, prog];
            load.extend_from_slice(args);
            run(&load, Some(&ruleset(b, &l)));
            let list: &[&str] = match b {
                Backend::IptablesLegacy => &["iptables-legacy-save", "-t", "nat"],
                Backend::IptablesNft => &["iptables-nft-save", "-t", "nat"],
                _ => &["nft", "-a", "list", "table", "ip", "kube-proxy"],
            };
            let listed = run(&[&["ip", "netns", "exec", &ns][..], list].concat(), None);
            drop(scratch);
            let rules = listed
                .lines()
                .map(str::trim_start)
                .filter(|l| {
                    l.starts_with("-A ")
                        || (l.contains("# handle ")
                            && !["table ", "chain ", "map "]
                                .iter()
                                .any(|p| l.starts_with(p)))
                })
                .count();
            assert_eq!(rules, rule_count(b, &l), "{b}");
        }
    }
}
