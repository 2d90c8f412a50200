//! The libcontainer executor used for the container's init and for exec processes.
//!
//! libcontainer clones its processes straight from the shim without resetting signal
//! state, so whatever the shim has (SIGPIPE ignored by the Rust runtime, SIGCHLD blocked
//! for its signalfd) would leak into the workload: `yes | head` would misbehave and
//! shells could not wait for children. Right before exec we restore what a fresh process
//! gets: default dispositions and an empty signal mask.

use libcontainer::oci_spec::runtime::Spec;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};

#[derive(Clone)]
pub(crate) struct ShimExecutor;

pub(crate) fn reset_signals() {
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL has no memory-safety preconditions; failures for
        // signal numbers the libc reserves are harmless and ignored.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    // SAFETY: an empty set, initialised by sigemptyset, is passed by pointer.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

impl Executor for ShimExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        reset_signals();
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}
