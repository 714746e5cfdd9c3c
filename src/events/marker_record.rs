//! One marker sighting as `marker` writes it and `correlate` reads it: the CSV columns
//! (the seed tool's timestamp, capture point, addresses and interval_id, plus direction and
//! position) and the JSON line.

use std::net::IpAddr;

use serde_json::{json, Value};

/// The CSV header `marker` writes; `correlate` finds its columns by these names.
pub const CSV_HEADER: &str =
    "timestamp_ns,point,iface,direction,src,sport,dst,dport,interval_id,position";

/// The first sighting of one interval at one capture point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerRow {
    /// Wall-clock (CLOCK_REALTIME) nanoseconds since the epoch when the segment holding the
    /// marker's last byte passed the hook.
    pub timestamp_ns: u64,
    /// The capture point's label, `IFACE:DIRECTION[@NETNS]`.
    pub point: String,
    pub iface: String,
    /// `ingress` or `egress`.
    pub direction: String,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    pub interval_id: u64,
    /// The object's position field, when it has one.
    pub position: Option<u64>,
}

impl MarkerRow {
    /// The row in CSV_HEADER's order (labels never hold commas: see cli::parse_point).
    pub fn csv(&self) -> String {
        format!(
            "{},{},{},{},{},{},{},{},{},{}",
            self.timestamp_ns,
            self.point,
            self.iface,
            self.direction,
            self.src,
            self.sport,
            self.dst,
            self.dport,
            self.interval_id,
            self.position.map(|p| p.to_string()).unwrap_or_default()
        )
    }

    pub fn json(&self) -> Value {
        json!({
            "type": "marker",
            "timestamp_ns": self.timestamp_ns,
            "point": self.point,
            "iface": self.iface,
            "direction": self.direction,
            "src": self.src.to_string(),
            "sport": self.sport,
            "dst": self.dst.to_string(),
            "dport": self.dport,
            "interval_id": self.interval_id,
            "position": self.position,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_follows_the_header() {
        let r = MarkerRow {
            timestamp_ns: 1_700_000_000_000_000_123,
            point: "veth0:egress@a".into(),
            iface: "veth0".into(),
            direction: "egress".into(),
            src: "10.0.0.1".parse().unwrap(),
            sport: 8000,
            dst: "fd00::2".parse().unwrap(),
            dport: 41000,
            interval_id: 42,
            position: None,
        };
        assert_eq!(
            r.csv(),
            "1700000000000000123,veth0:egress@a,veth0,egress,10.0.0.1,8000,fd00::2,41000,42,"
        );
        assert_eq!(CSV_HEADER.split(',').count(), r.csv().split(',').count());
        assert_eq!(r.json()["position"], Value::Null);
    }
}
