//! The libcontainer executor used for the container's init and for exec processes.
//!
//! libcontainer clones its processes straight from the shim without resetting signal
//! state, so whatever the shim has (SIGPIPE ignored by the Rust runtime, SIGCHLD blocked
//! for its signalfd) would leak into the workload: `yes | head` would misbehave and
//! shells could not wait for children. Right before exec we restore what a fresh process
//! gets: default dispositions and an empty signal mask.
//!
//! It also installs the container's seccomp filter, compiled once by the shim (see
//! [`super::seccomp_bpf`] for why libcontainer no longer does it).

use libcontainer::oci_spec::runtime::Spec;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};

use super::seccomp_bpf::SeccompProgram;

#[derive(Clone, Default)]
pub(crate) struct ShimExecutor {
    /// The filter to install before the workload runs; `None` when there is none to
    /// install by us (privileged, or a profile libcontainer applies itself).
    pub(crate) seccomp: Option<std::rc::Rc<SeccompProgram>>,
}

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

    /// libcontainer calls this once, in the container's process, after it dropped the
    /// capabilities, changed to the working directory and set no_new_privileges: the
    /// same place where its own seccomp set-up ran. The filter goes in here rather than in
    /// [`Executor::exec`] because an error here fails the create (or the exec request)
    /// with its message, while a failure in `exec` would only end the container's process
    /// after the start was reported. Either way the workload never runs unfiltered.
    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)?;
        if let Some(filter) = &self.seccomp {
            filter
                .install()
                .map_err(|e| ExecutorValidationError::ArgValidationError(e.to_string()))?;
        }
        Ok(())
    }
}
