//! Finding the marker in a TCP byte stream: a streaming JSON-ish scanner that holds state,
//! never bytes, so a field split across segments is found without keeping payload, and a
//! stream followed by sequence number so a gap is known for what it is.
//!
//! What counts as a marker: a string key equal to `--key` (default `interval_id`), then
//! optional JSON whitespace, `:`, whitespace and a non-negative integer (bare, or quoted
//! digits). The `--position-key` field of the same object is taken along, before or after
//! the marker. A marker is reported when its object closes, at an SSE event boundary (a
//! blank line), at the next marker of the same object, or at the end of the stream; its
//! time is that of the segment holding the value's last digit.
//! Anything else (a string, a fraction, a negative number or one past u64::MAX) counts as
//! unparseable; a marker cut by a gap in the stream counts as missed. Neither is ever
//! reported as a marker.

use std::collections::HashMap;

use crate::events::Flow;

use crate::bpf::marker::types::marker_flags;

/// Segment flags (bpf/netstack.h's `enum marker_flags`).
pub const SYN: u8 = marker_flags::MKF_SYN.0 as u8;
pub const FIN: u8 = marker_flags::MKF_FIN.0 as u8;
pub const RST: u8 = marker_flags::MKF_RST.0 as u8;

/// The two field names, as the bytes between the quotes.
#[derive(Debug, Clone)]
pub struct Keys {
    pub marker: Vec<u8>,
    pub position: Vec<u8>,
}

impl Keys {
    pub fn new(marker: &str, position: &str) -> Keys {
        Keys {
            marker: marker.as_bytes().to_vec(),
            position: position.as_bytes().to_vec(),
        }
    }

    fn get(&self, which: Field) -> &[u8] {
        match which {
            Field::Marker => &self.marker,
            Field::Position => &self.position,
        }
    }
}

/// One marker found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub id: u64,
    pub position: Option<u64>,
    pub ts: u64,
}

/// What the scanner could not report as a marker.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// The marker key with a value that is not a non-negative integer.
    pub unparseable: u64,
    /// A marker (key or value) cut by a gap in the stream.
    pub missed: u64,
    /// Gaps: bytes of a stream that never passed the capture point (or not in order).
    pub gaps: u64,
    /// Segments (or parts) seen again: retransmissions, skipped.
    pub retransmitted: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.unparseable += o.unparseable;
        self.missed += o.missed;
        self.gaps += o.gaps;
        self.retransmitted += o.retransmitted;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Marker,
    Position,
}

const FIELDS: [Field; 2] = [Field::Marker, Field::Position];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    /// Context unknown (stream joined midway, or after a gap): skip to the next newline,
    /// which JSON never has inside a string.
    Resync,
    Normal,
    /// Inside a string; how much of each key it has matched so far (None: no longer).
    Str {
        matched: [Option<u8>; 2],
        escaped: bool,
    },
    /// A string equal to a key ended: a `:` makes it a key.
    AfterKey(Field),
    BeforeValue(Field),
    Number {
        field: Field,
        value: u64,
        digits: u8,
        quoted: bool,
        ok: bool,
    },
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    id: u64,
    ts: u64,
    depth: u32,
    position: Option<u64>,
}

/// The scanner of one stream.
#[derive(Debug, Clone)]
pub struct Parser {
    lex: Lex,
    depth: u32,
    after_newline: bool,
    pending: Option<Pending>,
    /// A position seen before the marker in its object: (value, depth).
    early_position: Option<(u64, u32)>,
    /// Time of the segment with the current number's last digit.
    digit_ts: u64,
}

impl Parser {
    /// `at_start`: the stream is seen from its first byte; otherwise the scanner waits for
    /// a newline before it trusts what it reads.
    pub fn new(at_start: bool) -> Parser {
        Parser {
            lex: if at_start { Lex::Normal } else { Lex::Resync },
            depth: 0,
            after_newline: false,
            pending: None,
            early_position: None,
            digit_ts: 0,
        }
    }

    /// Scan the next bytes of the stream, which passed the capture point at `ts`.
    pub fn feed(
        &mut self,
        keys: &Keys,
        data: &[u8],
        ts: u64,
        out: &mut Vec<Found>,
        c: &mut Counts,
    ) {
        for &b in data {
            self.byte(keys, b, ts, out, c);
        }
    }

    /// Bytes were lost before the next ones: a marker that is whole is still reported, one
    /// being read is missed, and the scanner resyncs.
    pub fn gap(&mut self, out: &mut Vec<Found>, c: &mut Counts) {
        if self.reading_marker() {
            c.missed += 1;
        }
        self.emit(out);
        self.reset(Lex::Resync);
    }

    /// The stream ended: a number at its very end is complete.
    pub fn finish(&mut self, out: &mut Vec<Found>, c: &mut Counts) {
        if let Lex::Number {
            field,
            value,
            digits,
            quoted: false,
            ok: true,
        } = self.lex
        {
            if digits > 0 {
                self.complete(field, value, out);
                self.lex = Lex::Normal;
            }
        }
        if self.reading_marker() {
            c.missed += 1;
        }
        self.emit(out);
        self.reset(Lex::Normal);
    }

    /// In the middle of the marker's key or value.
    fn reading_marker(&self) -> bool {
        match self.lex {
            Lex::Str { matched, .. } => matched[0].is_some_and(|m| m >= 3),
            Lex::AfterKey(f) | Lex::BeforeValue(f) => f == Field::Marker,
            Lex::Number { field, .. } => field == Field::Marker,
            _ => false,
        }
    }

    fn reset(&mut self, lex: Lex) {
        self.lex = lex;
        self.depth = 0;
        self.early_position = None;
    }

    fn emit(&mut self, out: &mut Vec<Found>) {
        if let Some(p) = self.pending.take() {
            out.push(Found {
                id: p.id,
                position: p.position,
                ts: p.ts,
            });
        }
    }

    fn byte(&mut self, keys: &Keys, b: u8, ts: u64, out: &mut Vec<Found>, c: &mut Counts) {
        if b == b'\n' {
            if self.after_newline {
                // A blank line: the SSE event is over, whatever its JSON said.
                if self.reading_marker() {
                    c.unparseable += 1;
                }
                self.emit(out);
                self.reset(Lex::Normal);
                return;
            }
            self.after_newline = true;
        } else if b != b'\r' {
            self.after_newline = false;
        }
        match self.lex {
            Lex::Resync => {
                if b == b'\n' {
                    self.lex = Lex::Normal;
                }
            }
            Lex::Normal => self.normal(b, out),
            Lex::Str { matched, escaped } => {
                if escaped {
                    self.lex = Lex::Str {
                        matched: [None, None],
                        escaped: false,
                    };
                } else if b == b'\\' {
                    self.lex = Lex::Str {
                        matched: [None, None],
                        escaped: true,
                    };
                } else if b == b'"' {
                    self.lex = FIELDS
                        .iter()
                        .zip(matched)
                        .find(|(f, m)| *m == Some(keys.get(**f).len() as u8))
                        .map_or(Lex::Normal, |(f, _)| Lex::AfterKey(*f));
                } else if b == b'\n' {
                    // No raw newline in a JSON string: it was not one.
                    self.lex = Lex::Normal;
                } else {
                    let mut m = matched;
                    for (slot, f) in m.iter_mut().zip(FIELDS) {
                        let key = keys.get(f);
                        *slot = slot
                            .and_then(|k| (key.get(usize::from(k)) == Some(&b)).then_some(k + 1));
                    }
                    self.lex = Lex::Str {
                        matched: m,
                        escaped: false,
                    };
                }
            }
            Lex::AfterKey(f) => match b {
                b' ' | b'\t' | b'\r' | b'\n' => {}
                b':' => self.lex = Lex::BeforeValue(f),
                // The string was a value, not a key.
                _ => {
                    self.lex = Lex::Normal;
                    self.normal(b, out);
                }
            },
            Lex::BeforeValue(f) => match b {
                b' ' | b'\t' | b'\r' | b'\n' => {}
                b'0'..=b'9' => {
                    self.digit_ts = ts;
                    self.lex = Lex::Number {
                        field: f,
                        value: u64::from(b - b'0'),
                        digits: 1,
                        quoted: false,
                        ok: true,
                    };
                }
                b'"' => {
                    self.lex = Lex::Number {
                        field: f,
                        value: 0,
                        digits: 0,
                        quoted: true,
                        ok: true,
                    }
                }
                _ => {
                    self.invalid(f, c);
                    self.lex = Lex::Normal;
                    self.normal(b, out);
                }
            },
            Lex::Number {
                field,
                value,
                digits,
                quoted,
                ok,
            } => {
                if b.is_ascii_digit() {
                    let next = value
                        .checked_mul(10)
                        .and_then(|v| v.checked_add(u64::from(b - b'0')));
                    self.digit_ts = ts;
                    self.lex = Lex::Number {
                        field,
                        value: next.unwrap_or(0),
                        digits: digits.saturating_add(1),
                        quoted,
                        // Every u64 is taken (20 digits up to u64::MAX); beyond is not one.
                        ok: ok && next.is_some(),
                    };
                    return;
                }
                let whole = ok && digits > 0;
                if quoted {
                    if b == b'"' && whole {
                        self.complete(field, value, out);
                        self.lex = Lex::Normal;
                    } else {
                        self.invalid(field, c);
                        // The rest of the string is text, or it just ended.
                        self.lex = if b == b'"' {
                            Lex::Normal
                        } else {
                            Lex::Str {
                                matched: [None, None],
                                escaped: b == b'\\',
                            }
                        };
                    }
                } else if whole && matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b',' | b'}' | b']') {
                    self.complete(field, value, out);
                    self.lex = Lex::Normal;
                    self.normal(b, out);
                } else {
                    // 1.5, 1e3, 12abc: not an integer marker.
                    self.invalid(field, c);
                    self.lex = Lex::Normal;
                    self.normal(b, out);
                }
            }
        }
    }

    fn normal(&mut self, b: u8, out: &mut Vec<Found>) {
        match b {
            b'"' => {
                self.lex = Lex::Str {
                    matched: [Some(0), Some(0)],
                    escaped: false,
                }
            }
            b'{' => self.depth = self.depth.saturating_add(1),
            b'}' => {
                self.depth = self.depth.saturating_sub(1);
                if self.pending.is_some_and(|p| p.depth > self.depth) {
                    self.emit(out);
                }
                if self.early_position.is_some_and(|(_, d)| d > self.depth) {
                    self.early_position = None;
                }
            }
            _ => {}
        }
    }

    fn invalid(&mut self, f: Field, c: &mut Counts) {
        if f == Field::Marker {
            c.unparseable += 1;
        }
    }

    fn complete(&mut self, f: Field, value: u64, out: &mut Vec<Found>) {
        match f {
            Field::Marker => {
                self.emit(out);
                let position = self
                    .early_position
                    .take()
                    .filter(|&(_, d)| d == self.depth)
                    .map(|(v, _)| v);
                self.pending = Some(Pending {
                    id: value,
                    ts: self.digit_ts,
                    depth: self.depth,
                    position,
                });
            }
            Field::Position => match &mut self.pending {
                Some(p) if p.depth == self.depth && p.position.is_none() => {
                    p.position = Some(value)
                }
                _ => self.early_position = Some((value, self.depth)),
            },
        }
    }
}

/// A direction of a TCP connection at one capture point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamKey {
    pub point: u8,
    pub flow: Flow,
}

#[derive(Debug)]
struct Stream {
    parser: Parser,
    /// Sequence number of the next byte expected.
    next: Option<u32>,
    last_ts: u64,
}

/// Every stream being followed, by capture point and direction.
#[derive(Debug, Default)]
pub struct Streams {
    map: HashMap<StreamKey, Stream>,
}

impl Streams {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// One chunk of a segment: `data` starts at sequence number `seq`.
    #[allow(clippy::too_many_arguments)]
    pub fn feed(
        &mut self,
        keys: &Keys,
        key: StreamKey,
        seq: u32,
        flags: u8,
        ts: u64,
        data: &[u8],
        out: &mut Vec<Found>,
        c: &mut Counts,
    ) {
        let mut seq = seq;
        if flags & SYN != 0 {
            // A new connection: what was there under this 4-tuple has ended.
            if let Some(mut old) = self.map.remove(&key) {
                old.parser.finish(out, c);
            }
            seq = seq.wrapping_add(1); // SYN takes one sequence number before the data
            self.map.insert(
                key,
                Stream {
                    parser: Parser::new(true),
                    next: Some(seq),
                    last_ts: ts,
                },
            );
        }
        let s = self.map.entry(key).or_insert_with(|| Stream {
            parser: Parser::new(false),
            next: None,
            last_ts: ts,
        });
        s.last_ts = ts;
        let mut data = data;
        if let Some(next) = s.next {
            let ahead = seq.wrapping_sub(next) as i32;
            if ahead > 0 {
                c.gaps += 1;
                s.parser.gap(out, c);
            } else if ahead < 0 && !data.is_empty() {
                let seen = ahead.unsigned_abs() as usize;
                c.retransmitted += 1;
                data = data.get(seen..).unwrap_or(&[]);
                seq = next;
            }
        }
        if !data.is_empty() || s.next.is_none() {
            s.parser.feed(keys, data, ts, out, c);
            s.next = Some(seq.wrapping_add(data.len() as u32));
        }
        if flags & (FIN | RST) != 0 {
            if let Some(mut s) = self.map.remove(&key) {
                s.parser.finish(out, c);
            }
        }
    }

    /// End the streams idle since before `older_than` (bpf_ktime_get_ns time): each with
    /// what its end reported.
    pub fn expire(&mut self, older_than: u64) -> Vec<(StreamKey, Vec<Found>, Counts)> {
        let idle: Vec<StreamKey> = self
            .map
            .iter()
            .filter(|(_, s)| s.last_ts < older_than)
            .map(|(k, _)| *k)
            .collect();
        idle.into_iter()
            .filter_map(|k| {
                let mut s = self.map.remove(&k)?;
                let (mut found, mut c) = (Vec::new(), Counts::default());
                s.parser.finish(&mut found, &mut c);
                Some((k, found, c))
            })
            .collect()
    }

    /// End every stream (the run is over).
    pub fn finish_all(&mut self) -> Vec<(StreamKey, Vec<Found>, Counts)> {
        self.expire(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new("interval_id", "position")
    }

    /// Scan `parts` as consecutive segments (ts = index), then end the stream.
    fn scan(parts: &[&str]) -> (Vec<Found>, Counts) {
        let (k, mut p, mut out, mut c) = (keys(), Parser::new(true), Vec::new(), Counts::default());
        for (i, part) in parts.iter().enumerate() {
            p.feed(&k, part.as_bytes(), i as u64, &mut out, &mut c);
        }
        p.finish(&mut out, &mut c);
        (out, c)
    }

    fn ids(f: &[Found]) -> Vec<(u64, Option<u64>)> {
        f.iter().map(|f| (f.id, f.position)).collect()
    }

    #[test]
    fn sse_events_with_whitespace_variants() {
        let (f, c) = scan(&[concat!(
            "data: {\"interval_id\":1,\"position\":960}\n\n",
            "data: { \"interval_id\" : 2 , \"position\" : 1920 }\n\n",
            "data: {\n\t\"position\":\r\n 2880,\n \"interval_id\"\t:\n3\n}\n\n",
            "data: {\"interval_id\": \"4\"}\n\n",
        )]);
        assert_eq!(
            ids(&f),
            vec![(1, Some(960)), (2, Some(1920)), (3, Some(2880)), (4, None)]
        );
        assert_eq!(c, Counts::default());
    }

    #[test]
    fn several_events_in_one_segment_keep_their_order_and_time() {
        let (f, _) = scan(&[
            "data: {\"interval_id\": 7}\n\ndata: {\"interval_id\": 8}\n\n",
            "data: {\"interval_id\": 9}\n\n",
        ]);
        assert_eq!(ids(&f), vec![(7, None), (8, None), (9, None)]);
        assert_eq!(f.iter().map(|f| f.ts).collect::<Vec<_>>(), vec![0, 0, 1]);
    }

    #[test]
    fn a_field_split_anywhere_is_found_with_the_last_digits_time() {
        let text = "data: {\"interval_id\": 12345, \"position\": 678}\n\n";
        for cut in 1..text.len() {
            let (f, c) = scan(&[&text[..cut], &text[cut..]]);
            assert_eq!(ids(&f), vec![(12345, Some(678))], "cut at {cut}");
            assert_eq!(c, Counts::default(), "cut at {cut}");
            let last_digit = text.find("45,").unwrap() + 1;
            assert_eq!(f[0].ts, u64::from(cut <= last_digit), "cut at {cut}");
        }
    }

    #[test]
    fn malformed_values_are_counted_never_reported() {
        let (f, c) = scan(&[concat!(
            "data: {\"interval_id\": \"abc\"}\n\n",
            "data: {\"interval_id\": 1.5}\n\n",
            "data: {\"interval_id\": -3}\n\n",
            "data: {\"interval_id\": 12abc}\n\n",
            "data: {\"interval_id\": }\n\n",
            "data: {\"interval_id\": 99999999999999999999}\n\n",
            "data: {\"interval_id\":\n\n",
            "data: {\"interval_id\": 5}\n\n",
        )]);
        assert_eq!(ids(&f), vec![(5, None)]);
        assert_eq!(c.unparseable, 7);
    }

    #[test]
    fn every_u64_is_a_marker() {
        // Regression from fuzzing: 20-digit ids (>= 10^19) were refused as too long.
        let (f, c) = scan(&[concat!(
            "data: {\"interval_id\": 18446744073709551615}\n\n",
            "data: {\"interval_id\": \"10000000000000000000\"}\n\n",
            "data: {\"interval_id\": 18446744073709551616}\n\n",
        )]);
        assert_eq!(
            ids(&f),
            vec![(u64::MAX, None), (10_000_000_000_000_000_000, None)]
        );
        assert_eq!(c.unparseable, 1);
    }

    #[test]
    fn lookalikes_are_not_markers() {
        let (f, c) = scan(&[concat!(
            "data: {\"note\": \"interval_id\", \"x\": 3}\n\n",
            "data: {\"interval_idx\": 4, \"my_interval_id\": 5}\n\n",
            "data: {\"text\": \"say \\\"interval_id\\\": 6\"}\n\n",
            "data: {\"interval_id\": 10}\n\n",
        )]);
        assert_eq!(ids(&f), vec![(10, None)]);
        assert_eq!(c.unparseable, 0);
    }

    #[test]
    fn the_position_belongs_to_its_own_object() {
        let (f, _) = scan(&[concat!(
            "data: {\"interval_id\": 1, \"meta\": {\"position\": 5}}\n\n",
            "data: {\"position\": 7}\n\n",
            "data: {\"interval_id\": 2}\n\n",
        )]);
        assert_eq!(ids(&f), vec![(1, None), (2, None)]);
    }

    #[test]
    fn an_unclosed_object_ends_with_its_event() {
        let (f, _) =
            scan(&["data: {\"interval_id\": 1, \"position\": 2\n\ndata: {\"interval_id\": 3}\n\n"]);
        assert_eq!(ids(&f), vec![(1, Some(2)), (3, None)]);
    }

    fn flow() -> Flow {
        crate::events::flow_of(
            crate::events::AF_INET,
            6,
            &[10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            8000,
            &[10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            40000,
        )
    }

    #[test]
    fn streams_follow_sequence_numbers() {
        let k = keys();
        let key = StreamKey {
            point: 0,
            flow: flow(),
        };
        let (mut s, mut out, mut c) = (Streams::default(), Vec::new(), Counts::default());
        s.feed(&k, key, 999, SYN, 0, b"", &mut out, &mut c);
        let a = b"data: {\"interval_id\": 4";
        let b = b"2}\n\n";
        s.feed(&k, key, 1000, 0, 1, a, &mut out, &mut c);
        // A retransmission of the first part changes nothing.
        s.feed(&k, key, 1000, 0, 2, a, &mut out, &mut c);
        s.feed(&k, key, 1000 + a.len() as u32, 0, 3, b, &mut out, &mut c);
        assert_eq!(ids(&out), vec![(42, None)]);
        assert_eq!(out[0].ts, 3);
        assert_eq!(c.retransmitted, 1);
        // A gap in the middle of the next marker: missed, not misread as 5.
        out.clear();
        let next = 1000 + (a.len() + b.len()) as u32;
        let c1 = b"data: {\"interval_id\": 5";
        s.feed(&k, key, next, 0, 4, c1, &mut out, &mut c);
        s.feed(
            &k,
            key,
            next + c1.len() as u32 + 10,
            0,
            5,
            b"0}\n\ndata: {\"interval_id\": 6}\n\n",
            &mut out,
            &mut c,
        );
        s.feed(&k, key, next + 200, FIN, 6, b"", &mut out, &mut c);
        assert_eq!(ids(&out), vec![(6, None)]);
        assert_eq!((c.missed, c.gaps), (1, 2));
        assert!(s.is_empty());
    }

    #[test]
    fn a_stream_joined_midway_waits_for_a_newline() {
        let k = keys();
        let key = StreamKey {
            point: 1,
            flow: flow(),
        };
        let (mut s, mut out, mut c) = (Streams::default(), Vec::new(), Counts::default());
        s.feed(
            &k,
            key,
            5,
            0,
            0,
            b"_id\": 3}\n\ndata: {\"interval_id\": 4}\n\n",
            &mut out,
            &mut c,
        );
        let ended = s.finish_all();
        assert_eq!(ids(&out), vec![(4, None)]);
        assert_eq!(ended.len(), 1);
        assert!(ended[0].1.is_empty());
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn keys() -> Keys {
        Keys::new("interval_id", "position")
    }

    /// Byte streams made of the pieces markers are made of (so the scanner's states are all
    /// reached), or of any bytes at all.
    fn stream() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"\"interval_id\"".to_vec()),
            Just(b"\"position\"".to_vec()),
            Just(b"\"interval_".to_vec()),
            Just(b"data: ".to_vec()),
            Just(b":".to_vec()),
            Just(b" ".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"{".to_vec()),
            Just(b"}".to_vec()),
            Just(b",".to_vec()),
            Just(b"\"".to_vec()),
            Just(b"\\".to_vec()),
            Just(b"18446744073709551616".to_vec()),
            Just(b"-1.5e3".to_vec()),
            (0u64..100_000).prop_map(|n| n.to_string().into_bytes()),
            any::<u8>().prop_map(|b| vec![b]),
        ];
        prop_oneof![
            proptest::collection::vec(piece, 0..48).prop_map(|p| p.concat()),
            proptest::collection::vec(any::<u8>(), 0..256),
        ]
    }

    fn scan_parts(parts: &[&[u8]], at_start: bool) -> (Vec<Found>, Counts) {
        let (k, mut p) = (keys(), Parser::new(at_start));
        let (mut out, mut c) = (Vec::new(), Counts::default());
        for (i, part) in parts.iter().enumerate() {
            p.feed(&k, part, i as u64, &mut out, &mut c);
        }
        p.finish(&mut out, &mut c);
        (out, c)
    }

    fn ids(f: &[Found]) -> Vec<(u64, Option<u64>)> {
        f.iter().map(|f| (f.id, f.position)).collect()
    }

    /// Cut points (sorted, deduplicated, within the stream).
    fn cuts(len: usize, at: &[prop::sample::Index]) -> Vec<usize> {
        let mut c: Vec<usize> = at.iter().map(|i| i.index(len + 1)).collect();
        c.sort_unstable();
        c.dedup();
        c
    }

    fn split<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut parts = Vec::new();
        let mut from = 0;
        for &c in cuts.iter().chain([data.len()].iter()) {
            parts.push(&data[from..c]);
            from = c;
        }
        parts
    }

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        /// A stream split at any points (also into single bytes) gives the markers and counts
        /// of the whole stream; their times are the parts' and never go back.
        #[test]
        fn fuzz_marker_scan_split(
            data in stream(),
            at in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
            at_start in any::<bool>(),
        ) {
            let (whole, wc) = scan_parts(&[&data], at_start);
            let parts = split(&data, &cuts(data.len(), &at));
            let (got, gc) = scan_parts(&parts, at_start);
            prop_assert_eq!(ids(&got), ids(&whole));
            prop_assert_eq!(gc, wc);
            prop_assert!(got.windows(2).all(|w| w[0].ts <= w[1].ts));
            prop_assert!(got.iter().all(|f| f.ts < parts.len() as u64));
            let bytes: Vec<&[u8]> = data.chunks(1).collect();
            let (one, oc) = scan_parts(&bytes, at_start);
            prop_assert_eq!(ids(&one), ids(&whole));
            prop_assert_eq!(oc, wc);
        }

        /// Well-formed SSE events with any ids, positions and JSON whitespace, each then cut
        /// anywhere: every id is found once, in order, with its position.
        #[test]
        fn fuzz_marker_scan_finds_what_was_written(
            events in proptest::collection::vec(
                (any::<u64>(), proptest::option::of(any::<u64>()), any::<bool>(), 0usize..4),
                0..12,
            ),
            at in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            const WS: [&str; 4] = ["", " ", "\t", "\r\n "];
            let mut text = String::new();
            for &(id, pos, pos_first, ws) in &events {
                let w = WS[ws];
                let m = format!("\"interval_id\"{w}:{w}{id}");
                let body = match pos {
                    Some(p) if pos_first => format!("\"position\":{w}\"{p}\",{w}{m}"),
                    Some(p) => format!("{m}{w},\"position\":{w}{p}"),
                    None => m,
                };
                text += &format!("data: {{{w}\"note\": \"x\\\"y\",{w}{body}{w}}}\n\n");
            }
            let data = text.as_bytes();
            let parts = split(data, &cuts(data.len(), &at));
            let (got, c) = scan_parts(&parts, true);
            let want: Vec<(u64, Option<u64>)> = events.iter().map(|e| (e.0, e.1)).collect();
            prop_assert_eq!(ids(&got), want);
            prop_assert_eq!(c, Counts::default());
        }

        /// The same stream as TCP segments after a SYN, some sent again overlapping what
        /// came before (retransmissions): the markers of the stream once, no gap.
        #[test]
        fn fuzz_marker_streams_retransmitted(
            data in stream(),
            at in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
            back in proptest::collection::vec(0usize..64, 8),
            isn in any::<u32>(),
        ) {
            let (whole, wc) = scan_parts(&[&data], true);
            let k = keys();
            let key = StreamKey {
                point: 0,
                flow: crate::events::flow_of(2, 6, &[0; 16], 1, &[0; 16], 2),
            };
            let (mut s, mut out, mut c) = (Streams::default(), Vec::new(), Counts::default());
            s.feed(&k, key, isn, SYN, 0, b"", &mut out, &mut c);
            let mut from = 0;
            for (i, &to) in cuts(data.len(), &at).iter().chain([data.len()].iter()).enumerate() {
                // Start up to `back` bytes early: those were sent before.
                let start = from - back[i % back.len()].min(from);
                let seq = isn.wrapping_add(1).wrapping_add(start as u32);
                s.feed(&k, key, seq, 0, 1, &data[start..to], &mut out, &mut c);
                from = to;
            }
            s.feed(&k, key, isn.wrapping_add(1).wrapping_add(data.len() as u32), FIN, 2, b"", &mut out, &mut c);
            prop_assert!(s.is_empty());
            prop_assert_eq!(ids(&out), ids(&whole));
            prop_assert_eq!((c.gaps, c.missed, c.unparseable), (0, wc.missed, wc.unparseable));
        }
    }
}
