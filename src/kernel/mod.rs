//! What the running kernel offers and where to hook: BTF and helper probing, hook planning
//! (`probes`), names of netfilter hooks and softirq vectors (`names`), network namespaces
//! (`netns`, `nswatch`), Kubernetes pod names (`k8s`) and the iptables/nftables rulesets
//! the netfilter benchmark installs (`nfrules`).

pub mod k8s;
pub mod leftovers;
pub mod names;
pub mod netns;
pub mod nfrules;
pub mod nswatch;
pub mod probes;
