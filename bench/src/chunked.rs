//! The decoder of a chunked HTTP/1.1 body (RFC 9112 section 7.1), fed whatever bytes a read
//! brought.

/// Decoder state of a chunked body.
#[derive(Debug, Default)]
pub struct Chunked {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a size line.
    #[default]
    Size,
    /// This many data bytes to go.
    Data(usize),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// The last chunk was read.
    Done,
}

/// The longest chunk-size line accepted (size, extensions, CRLF).
const MAX_SIZE_LINE: usize = 1024;

impl Chunked {
    /// Decodes what it can of `raw` into `out`; returns how many bytes of `raw` it used.
    pub fn decode(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Result<usize, String> {
        let mut at = 0;
        loop {
            let rest = &raw[at..];
            match self.state {
                ChunkState::Done => return Ok(at),
                ChunkState::Size => {
                    let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
                        if rest.len() > MAX_SIZE_LINE {
                            return Err("chunk size line too long".into());
                        }
                        return Ok(at);
                    };
                    let line = String::from_utf8_lossy(&rest[..end]);
                    let hex = line.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(hex, 16)
                        .map_err(|_| format!("bad chunk size {hex:?}"))?;
                    at += end + 2;
                    self.state = if size == 0 {
                        ChunkState::Done
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if rest.is_empty() {
                        return Ok(at);
                    }
                    let take = left.min(rest.len());
                    out.extend_from_slice(&rest[..take]);
                    at += take;
                    self.state = if take == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - take)
                    };
                }
                ChunkState::DataEnd => {
                    if rest.len() < 2 {
                        return Ok(at);
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err("chunk data not followed by CRLF".into());
                    }
                    at += 2;
                    self.state = ChunkState::Size;
                }
            }
        }
    }

    /// Whether the last chunk has been read.
    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(wire: &[u8], piece: usize) -> (Vec<u8>, bool) {
        let mut decoder = Chunked::default();
        let mut raw = Vec::new();
        let mut out = Vec::new();
        for part in wire.chunks(piece) {
            raw.extend_from_slice(part);
            let used = decoder.decode(&raw, &mut out).expect("valid framing");
            raw.drain(..used);
        }
        (out, decoder.done())
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_boundaries() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        for piece in 1..=wire.len() {
            let (out, done) = decode_in_pieces(wire, piece);
            assert_eq!(out, b"hello, world", "pieces of {piece}");
            assert!(done);
        }
    }

    #[test]
    fn an_unfinished_body_is_not_done() {
        let (out, done) = decode_in_pieces(b"3\r\nabc\r\n4\r\nde", 4);
        assert_eq!(out, b"abcde");
        assert!(!done);
    }

    #[test]
    fn bad_framing_is_an_error() {
        let mut out = Vec::new();
        assert!(Chunked::default().decode(b"zz\r\n", &mut out).is_err());
        assert!(Chunked::default().decode(b"1\r\nabc", &mut out).is_err());
        let long = vec![b'1'; MAX_SIZE_LINE + 1];
        assert!(Chunked::default().decode(&long, &mut out).is_err());
    }
}
