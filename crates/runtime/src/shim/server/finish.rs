//! The end: the container's init exited; record, clean up, tell everyone, leave.

use std::time::{Duration, Instant};

use chrono::Utc;

use super::conn::Role;
use super::pipes::READ_CHUNK;
use super::{Server, DRAIN_GRACE};
use crate::atomic::Unsynced;
use crate::exit::{publish_exit_record, publish_reserved_exit_record, ExitRecord};
use crate::protocol::Event;
use crate::shim::error::error_chain;

impl Server {
    /// The container's init exited: record, clean up, tell everyone, leave.
    pub(super) fn finish(mut self) -> i32 {
        self.drain_init_output();
        let oom_killed = self.cgroup.as_ref().is_some_and(|c| c.oom_kills() > 0);
        self.tear_down();
        let (exit_code, signal) = self.init_status.unwrap_or((255, None));
        let rec = ExitRecord {
            exit_code,
            signal,
            oom_killed,
            pid: Some(self.init_pid.as_raw()),
            started_at: Some(self.started_at),
            finished_at: Utc::now(),
            error: None,
        };
        // Before the record: whoever sees the exit sees the loss too.
        self.record_log_loss();
        let unsynced = self.publish(&rec);
        self.end_execs();
        let ev = Event::Exit(rec);
        for c in self.conns.values_mut() {
            if matches!(c.role, Role::Waiter | Role::Attach { .. }) {
                c.send(&ev);
                c.close_after_flush = true;
            }
        }
        let _ = std::fs::remove_file(self.args.socket_path());
        self.flush_answers();
        match unsynced.map(|u| u.sync()) {
            // `rm` (of a `--rm` container, right after its waiter's answer) moved the
            // directory away meanwhile: nothing left to make durable.
            Some(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Some(Err(e)) => shim_log!("zlayer-agent shim {}: exit record: {e}", self.args.id),
            _ => {}
        }
        0
    }

    /// Last output still in the pipes, into the log.
    fn drain_init_output(&mut self) {
        let mut buf = [0u8; READ_CHUNK];
        for i in 0..2 {
            while let Some(n) = self.init_out[i].read_into(&mut buf) {
                let stream = self.init_out[i].stream;
                self.log_output(stream, &buf[..n]);
            }
        }
    }

    /// Kills whatever is left of the container and removes its cgroup and state.
    fn tear_down(&mut self) {
        // Kills whatever is left (exec processes) and removes the cgroup; libcontainer's
        // delete only when that failed (see cgroups::teardown for why not always).
        let torn_down = match self.cgroup.as_ref().map(|c| c.cgroups_path()) {
            Some(p) => crate::cgroups::teardown::remove(&p).map_err(|e| {
                shim_log!("zlayer-agent shim {}: {e}", self.args.id);
            }),
            None => Err(()),
        };
        if torn_down.is_err() {
            if let Err(e) = self.container.delete(true) {
                shim_log!(
                    "zlayer-agent shim {}: libcontainer delete: {}",
                    self.args.id,
                    error_chain(&e)
                );
            }
        }
        let _ = std::fs::remove_dir_all(self.args.runtime_root().join(&self.args.id));
    }

    /// Records how much output could not be logged (or releases the space set aside).
    fn record_log_loss(&mut self) {
        let loss = self.log_loss();
        let loss_reservation = self.log_loss_reservation.take();
        if loss.dropped_bytes == 0 {
            if let Some(r) = loss_reservation {
                r.release();
            }
        } else if let Err(e) =
            crate::logs::write_log_loss(&self.args.bundle, loss_reservation, &loss)
        {
            shim_log!(
                "zlayer-agent shim {}: {} bytes of output were not logged ({}); recording that failed: {e}",
                self.args.id,
                loss.dropped_bytes,
                loss.last_error.as_deref().unwrap_or("unknown error")
            );
        }
    }

    /// Puts the exit record in place; `None` when that failed (logged). Not yet durable:
    /// the caller syncs it after answering.
    fn publish(&mut self, rec: &ExitRecord) -> Option<Unsynced> {
        // In place for readers (log followers end on it) now, on disk after the answers.
        // Written into the space reserved at start, so that a full disk (maybe filled by
        // this very container) does not lose it; without a reservation, as a new file.
        let published = match self.exit_reservation.take() {
            Some(r) => publish_reserved_exit_record(r, rec).or_else(|e| {
                shim_log!(
                    "zlayer-agent shim {}: exit record (reserved): {e}",
                    self.args.id
                );
                publish_exit_record(&self.args.bundle, rec)
            }),
            None => publish_exit_record(&self.args.bundle, rec),
        };
        match published {
            Ok(u) => Some(u),
            Err(e) => {
                // The waiters still get the record, and the daemon stores it.
                shim_log!("zlayer-agent shim {}: exit record: {e}", self.args.id);
                None
            }
        }
    }

    /// Ends the exec streams: their processes died with the container.
    fn end_execs(&mut self) {
        // Exec processes died with the container (pid namespace teardown, delete):
        // collect their statuses briefly, then tell their clients.
        let deadline = Instant::now() + DRAIN_GRACE;
        loop {
            self.reap();
            if self.execs.values().all(|e| e.status.is_some()) || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for e in self.execs.values_mut() {
            for p in e.out.iter_mut() {
                p.fd = None;
            }
            e.status
                .get_or_insert((128 + libc::SIGKILL, Some(libc::SIGKILL)));
            e.exited_at = Some(Instant::now());
        }
        self.finish_execs();
    }

    /// Sends what is queued to every client, blocking up to 2 s in all.
    fn flush_answers(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        for c in self.conns.values_mut() {
            let _ = c.stream.set_nonblocking(false);
            let _ = c.stream.set_write_timeout(Some(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            ));
            c.flush();
        }
    }
}
