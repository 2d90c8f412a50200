//! A blocking, verifying, resuming `Read` over a registry blob.

use std::io::{self, Read};

use bytes::{Buf, Bytes};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;

use super::{RegistryClient, RetryBudget};
use crate::digest::{Digest, DigestHasher};
use crate::reference::Reference;

/// See [`RegistryClient::blob_reader`].
pub struct BlobReader {
    client: RegistryClient,
    handle: tokio::runtime::Handle,
    reference: Reference,
    digest: Digest,
    /// Alternative locations (foreign layers), tried when the registry lacks the blob.
    urls: Vec<String>,
    /// Bytes handed to the caller so far (and hashed).
    position: u64,
    hasher: DigestHasher,
    stream: Option<BoxStream<'static, io::Result<Bytes>>>,
    /// Bytes of the current response still to skip (a registry that ignored Range).
    skip: u64,
    chunk: Bytes,
    finished: bool,
    failures: u32,
    budget: RetryBudget,
    /// When the last byte arrived (or the current attempt started): the time a failure lost.
    last_progress: std::time::Instant,
}

impl BlobReader {
    pub(crate) fn new(
        client: RegistryClient,
        handle: tokio::runtime::Handle,
        reference: Reference,
        digest: Digest,
        urls: Vec<String>,
    ) -> Self {
        let budget = RetryBudget::new(client.config().retry_budget());
        Self {
            budget,
            last_progress: std::time::Instant::now(),
            client,
            handle,
            reference,
            digest,
            urls,
            position: 0,
            hasher: DigestHasher::new(),
            stream: None,
            skip: 0,
            chunk: Bytes::new(),
            finished: false,
            failures: 0,
        }
    }

    /// Bytes read so far.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Gets the next chunk, (re)connecting from `position` after a failure, with the client's
    /// retry budget and backoff.
    fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            if self.stream.is_none() {
                let fut = self.client.fetch_blob_with_urls(
                    &self.reference,
                    &self.digest,
                    self.position,
                    &self.urls,
                );
                match self.handle.block_on(fut) {
                    Ok(s) => {
                        self.skip = self.position - s.start;
                        self.stream = Some(s.stream);
                    }
                    Err(e) if e.is_transient() => {
                        self.fail(e.to_string())?;
                        continue;
                    }
                    Err(e) => return Err(io::Error::other(e)),
                }
            }
            let Some(stream) = self.stream.as_mut() else {
                continue;
            };
            match self.handle.block_on(stream.next()) {
                None => return Ok(None),
                Some(Ok(mut chunk)) => {
                    if self.skip > 0 {
                        let n = (self.skip.min(chunk.len() as u64)) as usize;
                        chunk.advance(n);
                        self.skip -= n as u64;
                    }
                    if !chunk.is_empty() {
                        self.failures = 0;
                        self.last_progress = std::time::Instant::now();
                        return Ok(Some(chunk));
                    }
                }
                Some(Err(e)) => {
                    self.stream = None;
                    self.fail(e.to_string())?;
                }
            }
        }
    }

    fn fail(&mut self, error: String) -> io::Result<()> {
        if self.failures >= self.client.config().retries {
            return Err(io::Error::other(format!(
                "{}: reading blob {} failed at byte {} after {} retries: {error}",
                self.reference, self.digest, self.position, self.failures
            )));
        }
        let delay = self.client.backoff(self.failures);
        self.failures += 1;
        if !self.budget.spend(self.last_progress.elapsed() + delay) {
            return Err(io::Error::other(format!(
                "{}: reading blob {} failed at byte {} after {} attempts: the retry budget of {} s is spent (registry setting retry_budget_secs): {error}",
                self.reference,
                self.digest,
                self.position,
                self.failures,
                self.client.config().retry_budget_secs
            )));
        }
        tracing::warn!(blob = %self.digest, at = self.position, %error, "blob download interrupted, resuming");
        std::thread::sleep(delay);
        self.last_progress = std::time::Instant::now();
        Ok(())
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.finished {
            return Ok(0);
        }
        if self.chunk.is_empty() {
            match self.next_chunk()? {
                Some(c) => self.chunk = c,
                None => {
                    self.finished = true;
                    let actual = std::mem::take(&mut self.hasher).finish();
                    if actual != self.digest {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "{}: blob verification failed: expected {}, got {actual} ({} bytes)",
                                self.reference, self.digest, self.position
                            ),
                        ));
                    }
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk.advance(n);
        self.hasher.update(&buf[..n]);
        self.position += n as u64;
        Ok(n)
    }
}
