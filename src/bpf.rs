//! Generated skeletons (OUT_DIR) and the `Plain` impls that let Rust read their event types.

#[allow(
    clippy::all,
    non_camel_case_types,
    non_snake_case,
    dead_code,
    unused_imports
)]
pub mod rx {
    include!(concat!(env!("OUT_DIR"), "/rx.skel.rs"));
}

// SAFETY: plain C structs of integers and byte arrays generated from bpf/netstack.h;
// every bit pattern is a valid value.
unsafe impl plain::Plain for rx::types::rx_chain_event {}
unsafe impl plain::Plain for rx::types::rx_read_event {}

#[allow(
    clippy::all,
    non_camel_case_types,
    non_snake_case,
    dead_code,
    unused_imports
)]
pub mod probe {
    include!(concat!(env!("OUT_DIR"), "/probe.skel.rs"));
}

unsafe impl plain::Plain for rx::types::rx_slot {}

#[allow(
    clippy::all,
    non_camel_case_types,
    non_snake_case,
    dead_code,
    unused_imports
)]
pub mod empty {
    include!(concat!(env!("OUT_DIR"), "/empty.skel.rs"));
}
