//! One marker sighting as `marker` writes it and `correlate` reads it: the CSV columns
//! (the seed tool's timestamp, capture point, addresses and interval_id, plus direction and
//! position) and the JSON line.

use std::net::IpAddr;

use anyhow::Result;
use serde::Serialize;
use serde_json::{json, Value};

/// The CSV header `marker` writes; `correlate` finds its columns by these names.
pub const CSV_HEADER: &str =
    "timestamp_ns,point,iface,direction,src,sport,dst,dport,interval_id,position";

/// The first sighting of one interval at one capture point. Its fields, in order, are the CSV
/// columns of CSV_HEADER (serde names them; a test holds the two together).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    /// The row in CSV_HEADER's order, without its line end. The csv crate quotes a field
    /// that holds a comma, a quote or a line break, so a label never shifts the columns.
    pub fn csv(&self) -> Result<String> {
        let mut w = csv::WriterBuilder::new()
            .has_headers(false)
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(Vec::new());
        w.serialize(self)?;
        let mut line = String::from_utf8(w.into_inner()?)?;
        line.pop();
        Ok(line)
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
            r.csv().unwrap(),
            "1700000000000000123,veth0:egress@a,veth0,egress,10.0.0.1,8000,fd00::2,41000,42,"
        );
        assert_eq!(r.json()["position"], Value::Null);
    }

    #[test]
    fn serde_names_are_the_header() {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.serialize(row("p", "eth0")).unwrap();
        let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
        assert_eq!(text.lines().next(), Some(CSV_HEADER));
    }

    #[test]
    fn labels_with_commas_and_quotes_are_quoted() {
        let r = row("a,b \"c\"", "eth\"0");
        let line = r.csv().unwrap();
        assert!(
            line.contains(r#","a,b ""c""","eth""0","#),
            "quoted as RFC 4180 says: {line}"
        );
    }

    fn row(point: &str, iface: &str) -> MarkerRow {
        MarkerRow {
            timestamp_ns: 5,
            point: point.into(),
            iface: iface.into(),
            direction: "ingress".into(),
            src: "10.0.0.1".parse().unwrap(),
            sport: 1,
            dst: "10.0.0.2".parse().unwrap(),
            dport: 2,
            interval_id: 3,
            position: Some(4),
        }
    }
}
