//! Cooperative cancellation of a service task.
//!
//! `undeploy` must not race a pass that is about to start a container (a cron fire, a job
//! retry, a restart): it cancels the deployment's tasks, waits for them to finish, and only
//! then removes the containers. Aborting a task instead would drop it mid-create, while the
//! shim launch it handed to the blocking pool goes on and leaves a container nobody removes.
//! A flag plus a `Notify` is all that needs (no tokio-util for one type).

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// Set once; checked by a service task between steps, awaited by its long waits.
#[derive(Debug, Default)]
pub struct Cancel {
    flag: AtomicBool,
    notify: Notify,
}

impl Cancel {
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Completes once [`cancel`](Self::cancel) was called.
    pub async fn cancelled(&self) {
        loop {
            // Created before the check: `notify_waiters` reaches a `Notified` from the moment
            // it exists, so a cancel between the check and the await is not missed.
            let notified = self.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn cancelled_completes_after_cancel_and_not_before() {
        let c = Arc::new(Cancel::default());
        assert!(
            tokio::time::timeout(Duration::from_millis(20), c.cancelled())
                .await
                .is_err(),
            "completed without a cancel"
        );
        let waiter = tokio::spawn({
            let c = Arc::clone(&c);
            async move { c.cancelled().await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        c.cancel();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("waiter woke up")
            .unwrap();
        assert!(c.is_cancelled());
        // Already cancelled: completes at once.
        c.cancelled().await;
    }
}
