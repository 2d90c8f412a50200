//! Downloading one blob into the content store: streamed, resumable, retried, verified.

use std::io::Write;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;

use super::{PullContext, PullError, PullEvent};
use crate::content::{ContentError, Ingest};
use crate::digest::Digest;
use crate::registry::{Descriptor, RegistryClient, RegistryError, RetryBudget};

/// Chunks in flight between the network task and the file writer (each at most a few tens of
/// KiB as hyper delivers them): bounds memory per download to well under a MiB.
const CHANNEL_CHUNKS: usize = 32;
/// Minimum time between two `Downloading` events of one layer.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// Downloads `desc` into the content store unless it is there already. `report` says whether
/// to emit per-layer events (not for the config).
pub(crate) async fn download_blob(
    ctx: &PullContext,
    desc: &Descriptor,
    report: bool,
) -> Result<(), PullError> {
    let digest = desc.digest.clone();
    if ctx.store.content().contains(&digest) {
        if report {
            ctx.emit(PullEvent::Downloading {
                layer: digest.clone(),
                done: desc.size,
                total: desc.size,
            });
        }
        return Ok(());
    }
    let mut budget = RetryBudget::new(ctx.client.config().retry_budget());
    // A partial download left by an earlier, interrupted pull is resumed. If the whole then
    // fails verification, that partial (perhaps from a corrupting source) is the suspect: the
    // failed commit deleted it, and the blob is downloaded once more, from zero.
    let mut resumed_from = 0;
    match download_attempt(ctx, desc, report, &mut budget, &mut resumed_from).await {
        Err(e @ PullError::BlobVerification { .. }) if resumed_from > 0 => {
            tracing::warn!(image = %ctx.image, blob = %digest, resumed_from, error = %e, "a resumed download did not verify; downloading it again from zero");
            if report {
                ctx.emit(PullEvent::Retrying {
                    layer: digest.clone(),
                    attempt: 1,
                    error: format!(
                        "{e} (the partial download it resumed at byte {resumed_from} is discarded; starting again from zero)"
                    ),
                });
            }
            download_attempt(ctx, desc, report, &mut budget, &mut resumed_from).await
        }
        other => other,
    }
}

/// One download of `desc` into the store, resuming a partial one left by an earlier pull
/// (`resumed_from` is set to its size).
async fn download_attempt(
    ctx: &PullContext,
    desc: &Descriptor,
    report: bool,
    budget: &mut RetryBudget,
    resumed_from: &mut u64,
) -> Result<(), PullError> {
    let digest = desc.digest.clone();
    let content_err = |source: ContentError| PullError::Content {
        image: ctx.image.clone(),
        digest: digest.clone(),
        source: Box::new(source),
    };
    // Takes the per-digest lock (waits for a concurrent pull of the same blob), and re-hashes
    // any partial data left by an interrupted pull so we resume after it.
    let mut ingest = {
        let content = ctx.store.content().clone();
        let (d, size) = (digest.clone(), desc.size);
        tokio::task::spawn_blocking(move || content.ingest(&d, Some(size)))
            .await
            .map_err(|e| ctx.task_error("open ingest", e))?
            .map_err(content_err)?
    };
    *resumed_from = if ingest.is_complete() {
        0
    } else {
        ingest.resumed_from()
    };
    let mut failures = 0u32;
    while !ingest.is_complete() && ingest.offset() < desc.size {
        let offset = ingest.offset();
        if report {
            ctx.emit(PullEvent::Downloading {
                layer: digest.clone(),
                done: offset,
                total: desc.size,
            });
        }
        let (back, result, stalled) = fetch_into(ctx, desc, ingest, report).await?;
        ingest = back;
        let progressed = ingest.offset() > offset;
        let failure = Failure {
            count: &mut failures,
            budget: &mut *budget,
            stalled,
            progressed,
        };
        match result {
            Ok(()) if ingest.offset() >= desc.size => break,
            Ok(()) => {
                // The body ended early without an error: treat like a dropped connection.
                let e = RegistryClient::blob_stream_error(
                    &ctx.reference,
                    &digest,
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!(
                            "response ended at byte {} of {}",
                            ingest.offset(),
                            desc.size
                        ),
                    ),
                );
                retry_or_fail(ctx, desc, failure, e, report).await?;
            }
            Err(FetchError::Registry(e)) if e.is_transient() => {
                retry_or_fail(ctx, desc, failure, e, report).await?;
            }
            Err(FetchError::Registry(e)) => return Err(e.into()),
            Err(FetchError::Write(e)) => return Err(write_failed(ctx, &digest, ingest, e).await),
        }
    }
    if report {
        ctx.emit(PullEvent::Verifying {
            layer: digest.clone(),
        });
    }
    commit(ctx, desc, ingest).await
}

/// Moves a fully received blob into `blobs/` once its size and digest match.
async fn commit(ctx: &PullContext, desc: &Descriptor, ingest: Ingest) -> Result<(), PullError> {
    let digest = desc.digest.clone();
    let committed = tokio::task::spawn_blocking(move || ingest.commit())
        .await
        .map_err(|e| ctx.task_error("commit blob", e))?;
    match committed {
        Ok(_) => Ok(()),
        Err(ContentError::Mismatch {
            expected,
            actual,
            actual_size,
            ..
        }) => Err(PullError::BlobVerification {
            image: ctx.image.clone(),
            digest: digest.clone(),
            expected,
            expected_size: desc.size,
            actual,
            actual_size,
        }),
        Err(source) => Err(PullError::Content {
            image: ctx.image.clone(),
            digest: digest.clone(),
            source: Box::new(source),
        }),
    }
}

/// A local write failure, or more bytes than declared: not worth retrying. The partial
/// download is dropped.
async fn write_failed(
    ctx: &PullContext,
    digest: &Digest,
    ingest: Ingest,
    e: std::io::Error,
) -> PullError {
    let oversize = e.get_ref().is_some_and(|inner| inner.is::<ContentError>());
    if let Err(je) = tokio::task::spawn_blocking(move || ingest.abort()).await {
        return ctx.task_error("abort ingest", je);
    }
    PullError::Content {
        image: ctx.image.clone(),
        digest: digest.clone(),
        source: Box::new(ContentError::Io {
            op: if oversize {
                "receive (registry sent more bytes than the manifest declares)"
            } else {
                "write"
            },
            path: ctx.store.content().ingest_dir().to_path_buf(),
            source: e,
        }),
    }
}

/// The bookkeeping of one failed attempt.
struct Failure<'a> {
    /// Failures in a row without progress.
    count: &'a mut u32,
    budget: &'a mut RetryBudget,
    /// How long the failed attempt went without receiving a byte.
    stalled: Duration,
    progressed: bool,
}

/// Counts a failure (a failure after progress restarts the count: a flaky link that keeps
/// moving forward should finish, within the retry budget) and sleeps the backoff, or returns
/// the error when the retries or the retry budget are spent.
async fn retry_or_fail(
    ctx: &PullContext,
    desc: &Descriptor,
    f: Failure<'_>,
    e: RegistryError,
    report: bool,
) -> Result<(), PullError> {
    let failures = f.count;
    if f.progressed {
        *failures = 0;
    }
    if *failures >= ctx.client.config().retries {
        return Err(e.into());
    }
    let delay = ctx.client.backoff(*failures);
    *failures += 1;
    if !f.budget.spend(f.stalled + delay) {
        return Err(f
            .budget
            .spent_error(&format!("downloading blob {}", desc.digest), *failures, e)
            .into());
    }
    tracing::warn!(image = %ctx.image, blob = %desc.digest, error = %e, attempt = *failures, ?delay, "blob download failed, retrying");
    if report {
        ctx.emit(PullEvent::Retrying {
            layer: desc.digest.clone(),
            attempt: *failures,
            error: e.to_string(),
        });
    }
    tokio::time::sleep(delay).await;
    Ok(())
}

enum FetchError {
    Registry(RegistryError),
    Write(std::io::Error),
}

/// What one attempt gives back: the ingest (it holds the resume state and lock), how the
/// transfer ended, and how long it had gone without a byte when it ended.
type Fetched = (Ingest, Result<(), FetchError>, Duration);

/// One HTTP attempt: requests the blob from the ingest's offset and streams the body into it
/// on a blocking thread. Always gives the ingest back.
async fn fetch_into(
    ctx: &PullContext,
    desc: &Descriptor,
    mut ingest: Ingest,
    report: bool,
) -> Result<Fetched, PullError> {
    let offset = ingest.offset();
    let mut last_byte = Instant::now();
    let blob = match ctx
        .client
        .fetch_blob_with_urls(&ctx.reference, &desc.digest, offset, &desc.urls)
        .await
    {
        Ok(b) => b,
        Err(e) => return Ok((ingest, Err(FetchError::Registry(e)), last_byte.elapsed())),
    };
    if let Err(e) = blob.check_declared_size(&ctx.reference, desc.size) {
        return Ok((ingest, Err(FetchError::Registry(e)), last_byte.elapsed()));
    }
    // A registry that ignores Range sends the blob from 0: skip what we already have (it is
    // hashed already; re-downloading a prefix is cheaper than re-hashing a restarted file).
    let mut skip = offset.saturating_sub(blob.start);
    let mut stream = blob.stream;

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
    let writer = tokio::task::spawn_blocking(move || {
        let mut result = Ok(());
        while let Some(chunk) = rx.blocking_recv() {
            if let Err(e) = ingest.write_all(&chunk) {
                result = Err(e);
                break;
            }
        }
        (ingest, result)
    });

    let mut done = offset;
    let mut last_report = Instant::now();
    let mut net_result: Result<(), FetchError> = Ok(());
    while let Some(item) = stream.next().await {
        match item {
            Ok(mut chunk) => {
                last_byte = Instant::now();
                if skip > 0 {
                    let n = skip.min(chunk.len() as u64) as usize;
                    let _ = chunk.split_to(n);
                    skip -= n as u64;
                    if chunk.is_empty() {
                        continue;
                    }
                }
                done += chunk.len() as u64;
                if tx.send(chunk).await.is_err() {
                    // The writer stopped on an error; it reports it below.
                    break;
                }
                if report && last_report.elapsed() >= PROGRESS_INTERVAL {
                    last_report = Instant::now();
                    ctx.emit(PullEvent::Downloading {
                        layer: desc.digest.clone(),
                        done: done.min(desc.size),
                        total: desc.size,
                    });
                }
            }
            Err(e) => {
                net_result = Err(FetchError::Registry(RegistryClient::blob_stream_error(
                    &ctx.reference,
                    &desc.digest,
                    e,
                )));
                break;
            }
        }
    }
    drop(tx);
    let stalled = last_byte.elapsed();
    let (ingest, write_result) = writer.await.map_err(|e| ctx.task_error("write blob", e))?;
    if let Err(e) = write_result {
        return Ok((ingest, Err(FetchError::Write(e)), stalled));
    }
    if report {
        ctx.emit(PullEvent::Downloading {
            layer: desc.digest.clone(),
            done: ingest.offset(),
            total: desc.size,
        });
    }
    Ok((ingest, net_result, stalled))
}
