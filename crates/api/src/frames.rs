//! Binary-safe framing of process output on the wire (exec, attach, logs), in docker's
//! multiplexed-stream layout: an 8-byte header `[stream, 0, 0, 0, len (u32 big-endian)]`, then
//! `len` bytes. Streams 1 and 2 are stdout and stderr; we add 3 for the closing status (JSON:
//! `{"exit_code": N}`) and 4 for an error that ended the stream (JSON: `{"error": "…"}`).

use bytes::{BufMut, Bytes, BytesMut};

pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const STATUS: u8 = 3;
pub const ERROR: u8 = 4;

/// One frame.
pub fn encode(stream: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(8 + payload.len());
    b.put_u8(stream);
    b.put_bytes(0, 3);
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.freeze()
}

/// Splits a byte stream back into frames.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, if one is buffered.
    pub fn next_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        if self.buf.len() < 8 {
            return None;
        }
        let len = u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]) as usize;
        if self.buf.len() < 8 + len {
            return None;
        }
        let stream = self.buf[0];
        let payload = self.buf[8..8 + len].to_vec();
        self.buf.drain(..8 + len);
        Some((stream, payload))
    }

    /// Bytes left over that do not make a whole frame.
    pub fn leftover(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_pieces() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&encode(STDOUT, b"hello\n"));
        wire.extend_from_slice(&encode(STDERR, b""));
        wire.extend_from_slice(&encode(STATUS, br#"{"exit_code":7}"#));
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for chunk in wire.chunks(3) {
            d.push(chunk);
            while let Some(f) = d.next_frame() {
                got.push(f);
            }
        }
        assert_eq!(
            got,
            vec![
                (STDOUT, b"hello\n".to_vec()),
                (STDERR, vec![]),
                (STATUS, br#"{"exit_code":7}"#.to_vec())
            ]
        );
        assert_eq!(d.leftover(), 0);
    }
}
