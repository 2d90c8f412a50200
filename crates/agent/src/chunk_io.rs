//! Blocking `Read`/`Write` over a channel of byte chunks, for tar streams that a blocking
//! walker writes (or an unpacker reads) while async code moves them over a connection.
//! The daemon's archive calls and the CLI's `cp` both use them, so the two ends of a copy
//! chunk the same way.

use std::io::{self, Read, Write};

use bytes::Bytes;
use tokio::sync::mpsc;

/// Size of one chunk handed to the async side.
pub const CHUNK_SIZE: usize = 64 << 10;

/// A `Write` that hands full chunks to the async side; fails with `BrokenPipe` once the
/// receiver is gone (the other end went away), which ends the writer's work.
pub struct ChunkWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
    /// The `BrokenPipe` error's text, in the words of the side that writes (a user of the
    /// CLI reads "the daemon stopped reading").
    gone: &'static str,
}

impl ChunkWriter {
    pub fn new(tx: mpsc::Sender<io::Result<Bytes>>, gone: &'static str) -> Self {
        Self {
            tx,
            buf: Vec::with_capacity(CHUNK_SIZE),
            gone,
        }
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK_SIZE - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK_SIZE {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(CHUNK_SIZE),
        ));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, self.gone))
    }
}

/// A blocking `Read` over chunks arriving from the async side; an `Err` chunk is returned as
/// the read's error, a closed channel is the end of the stream.
pub struct ChunkReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
}

impl ChunkReader {
    pub fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        Self {
            rx,
            cur: Bytes::new(),
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len());
        out[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_written_in_pieces_are_read_back_whole_then_the_end() {
        let (tx, rx) = mpsc::channel(4);
        let data: Vec<u8> = (0..(CHUNK_SIZE * 2 + 123)).map(|i| i as u8).collect();
        let expected = data.clone();
        let writer = std::thread::spawn(move || {
            let mut w = ChunkWriter::new(tx, "gone");
            for piece in data.chunks(1000) {
                w.write_all(piece).unwrap();
            }
            w.flush().unwrap();
        });
        let mut got = Vec::new();
        ChunkReader::new(rx).read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        assert_eq!(got, expected);
    }

    #[test]
    fn a_gone_reader_is_a_broken_pipe() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let mut w = ChunkWriter::new(tx, "the reader went away");
        w.write_all(b"x").unwrap();
        let e = w.flush().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(e.to_string(), "the reader went away");
    }
}
