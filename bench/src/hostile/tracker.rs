//! Which event ids a stream delivered, checked in O(1) memory per stream.
//!
//! A stalled or reconnecting subscriber may have to read gigabytes (4,096 events of 1 MiB) or
//! hundreds of thousands of events, and a run holds hundreds of them, so neither the bodies
//! nor the list of ids are kept. [`Scanner`] reads the SSE body as it comes and keeps only the
//! short fields of each event (a long `data:` line is skipped as it streams past). [`Tally`]
//! keeps, for the events of interest, their count, a sum of a 64-bit hash of their ids, and
//! whether every id was greater than the one before. [`Expected`] gives the same count and sum
//! over the ids the publishers had acknowledged, so "every acknowledged event, in order, none
//! twice" is a comparison of three numbers.

use serde::Serialize;

/// Longest field line kept; longer ones (event data) are skipped.
const MAX_FIELD: usize = 256;

/// One complete SSE event's short fields.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `id:` field of this event, if it had one.
    pub id: Option<u64>,
    /// The `event:` field (empty for a block without one, such as an id-only frame).
    pub name: String,
    /// The `data:` field when short (the `$synced` id), else empty.
    pub data: String,
}

/// Reads an SSE body piece by piece without keeping long lines.
#[derive(Debug, Default)]
pub struct Scanner {
    line: Vec<u8>,
    skipping: bool,
    current: Event,
    any_field: bool,
}

impl Scanner {
    /// Feeds the next body bytes; calls `on_event` for every event they complete.
    pub fn feed(&mut self, mut bytes: &[u8], mut on_event: impl FnMut(Event)) {
        while !bytes.is_empty() {
            match memchr::memchr(b'\n', bytes) {
                Some(end) => {
                    self.take(&bytes[..end]);
                    bytes = &bytes[end + 1..];
                    if let Some(event) = self.end_line() {
                        on_event(event);
                    }
                }
                None => {
                    self.take(bytes);
                    bytes = &[];
                }
            }
        }
    }

    fn take(&mut self, part: &[u8]) {
        if self.skipping {
            return;
        }
        if self.line.len() + part.len() > MAX_FIELD {
            // Only `data:` lines are long; the event's name and id come before its data.
            self.skipping = true;
            self.any_field = true;
            self.line.clear();
            return;
        }
        self.line.extend_from_slice(part);
    }

    /// Ends the line gathered so far; an empty line completes the event.
    fn end_line(&mut self) -> Option<Event> {
        if std::mem::take(&mut self.skipping) {
            return None;
        }
        let line = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
        if line.is_empty() {
            self.line.clear();
            let event = std::mem::take(&mut self.current);
            return std::mem::take(&mut self.any_field).then_some(event);
        }
        if let Some(v) = line.strip_prefix(b"id: ") {
            self.current.id = std::str::from_utf8(v).ok().and_then(|v| v.parse().ok());
            self.any_field = true;
        } else if let Some(v) = line.strip_prefix(b"event: ") {
            self.current.name = String::from_utf8_lossy(v).into_owned();
            self.any_field = true;
        } else if let Some(v) = line.strip_prefix(b"data: ") {
            self.current.data = String::from_utf8_lossy(v).into_owned();
            self.any_field = true;
        }
        self.line.clear();
        None
    }
}

/// The ids of the events of interest one subscriber received, summed up.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Events counted.
    pub count: u64,
    /// Wrapping sum of [`mix`] over their ids.
    pub sum: u64,
    /// The greatest id counted.
    pub last: u64,
    /// Events whose id was not greater than the one before (sent twice or out of order).
    pub out_of_order: u64,
}

impl Tally {
    /// Counts an event with this id.
    pub fn add(&mut self, id: u64) {
        if self.count > 0 && id <= self.last {
            self.out_of_order += 1;
            return;
        }
        self.count += 1;
        self.sum = self.sum.wrapping_add(mix(id));
        self.last = id;
    }
}

/// A 64-bit hash of an id (splitmix64's finaliser): sums of it tell sets of ids apart.
pub fn mix(id: u64) -> u64 {
    let mut z = id.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The acknowledged ids, to compare tallies with.
#[derive(Debug, Default, Clone)]
pub struct Expected {
    ids: Vec<u64>,
    /// `suffix[i]`: the wrapping sum of `mix` over `ids[i..]`.
    suffix: Vec<u64>,
}

/// How one subscriber's tally compares with what it should have received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// It received exactly the acknowledged events after its start, in order, none twice.
    pub complete: bool,
    /// Acknowledged events it should have received.
    pub expected: u64,
    /// Events it received (in order).
    pub received: u64,
    /// Events received out of order or twice.
    pub out_of_order: u64,
}

impl Expected {
    /// From the acknowledged ids (any order).
    pub fn new(mut ids: Vec<u64>) -> Self {
        ids.sort_unstable();
        ids.dedup();
        let mut suffix = vec![0u64; ids.len() + 1];
        for i in (0..ids.len()).rev() {
            suffix[i] = suffix[i + 1].wrapping_add(mix(ids[i]));
        }
        Self { ids, suffix }
    }

    /// The greatest acknowledged id (0 when none).
    pub fn last(&self) -> u64 {
        self.ids.last().copied().unwrap_or(0)
    }

    /// Acknowledged ids.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Compares the tally of a subscriber that started after id `start` with the
    /// acknowledged ids greater than `start`.
    pub fn verdict(&self, start: u64, tally: &Tally) -> Verdict {
        let from = self.ids.partition_point(|&id| id <= start);
        let expected = (self.ids.len() - from) as u64;
        Verdict {
            complete: tally.out_of_order == 0
                && tally.count == expected
                && tally.sum == self.suffix[from],
            expected,
            received: tally.count,
            out_of_order: tally.out_of_order,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(body: &[u8], piece: usize) -> Vec<Event> {
        let mut scanner = Scanner::default();
        let mut out = Vec::new();
        for part in body.chunks(piece) {
            scanner.feed(part, |e| out.push(e));
        }
        out
    }

    #[test]
    fn events_are_read_whatever_the_pieces_and_long_data_is_skipped() {
        let long = "x".repeat(5000);
        let body = format!(
            "retry: 2000\n\n: keep-alive\n\nid: 3\nevent: $synced\ndata: {{\"id\":\"3\"}}\n\n\
             id: 7\r\nevent: bench\r\ndata: {{\"pad\":\"{long}\"}}\r\n\r\nid: 9\n\n"
        );
        for piece in [1, 7, 100, body.len()] {
            let got = events(body.as_bytes(), piece);
            // The retry and comment blocks carry no event field: nothing is dispatched.
            assert_eq!(got.len(), 3, "pieces of {piece}: {got:?}");
            assert_eq!(got[0].id, Some(3));
            assert_eq!(got[0].name, "$synced");
            assert_eq!(got[0].data, "{\"id\":\"3\"}");
            assert_eq!((got[1].id, got[1].name.as_str()), (Some(7), "bench"));
            assert_eq!(got[1].data, "", "the long data is not kept");
            assert_eq!((got[2].id, got[2].name.as_str()), (Some(9), ""));
        }
    }

    #[test]
    fn a_tally_matches_only_every_acknowledged_id_in_order() {
        let expected = Expected::new(vec![12, 10, 11, 15, 20]);
        let tally = |ids: &[u64]| {
            let mut t = Tally::default();
            for &id in ids {
                t.add(id);
            }
            t
        };
        assert!(expected.verdict(0, &tally(&[10, 11, 12, 15, 20])).complete);
        assert!(expected.verdict(11, &tally(&[12, 15, 20])).complete);
        let gap = expected.verdict(0, &tally(&[10, 11, 15, 20]));
        assert!(!gap.complete);
        assert_eq!((gap.expected, gap.received), (5, 4));
        let twice = expected.verdict(0, &tally(&[10, 11, 12, 12, 15, 20]));
        assert_eq!(twice.out_of_order, 1);
        assert!(!twice.complete);
        let other = expected.verdict(0, &tally(&[10, 11, 13, 15, 20]));
        assert!(!other.complete, "same count, another id");
        assert_eq!(expected.last(), 20);
        assert_eq!(expected.len(), 5);
    }
}
