//! Describing failures, at the bottom of the shim's layers: every other shim module may
//! use this one, and it uses none of them.
//!
//! libcontainer explains its failures in nested error sources, and tells "command not found"
//! from other start failures only in their text; this is the one place that reads it.

/// The full chain of an error, so that "failed to create container" comes with its cause.
/// The one helper for this in the workspace (the agent re-exports it); a cause already
/// quoted by its parent's message is not repeated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Maps a libcontainer start error (its [`error_chain`]) to docker's exit status: 127 when
/// the command was not found, 126 when it is not executable. libcontainer has no error
/// variant for these: they come from its init process as text.
pub(crate) fn start_error_code(msg: &str) -> Option<i32> {
    let exec_failed = msg.contains("executing") || msg.contains("execvp");
    if msg.contains("not found in $PATH") || (exec_failed && msg.contains("ENOENT")) {
        Some(127)
    } else if msg.contains("does not have correct permissions")
        || (exec_failed && msg.contains("EACCES"))
    {
        Some(126)
    } else {
        None
    }
}

/// An I/O failure with what was being done (`creating /x`, `pipe`, `fork`).
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub(crate) struct IoFailure {
    pub(crate) context: String,
    #[source]
    pub(crate) source: std::io::Error,
}

impl IoFailure {
    pub(crate) fn new(context: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        IoFailure {
            context: context.into(),
            source: source.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_exit_codes_for_start_errors() {
        assert_eq!(
            start_error_code("error in executing process : executable 'x' not found in $PATH"),
            Some(127)
        );
        assert_eq!(
            start_error_code("executable 'x' at path '/x' does not have correct permissions"),
            Some(126)
        );
        // an unrelated missing file is not "command not found"
        assert_eq!(
            start_error_code("oci spec error: io operation failed: No such file or directory"),
            None
        );
    }

    #[derive(Debug, thiserror::Error)]
    #[error("failed to create container")]
    struct Outer(#[source] IoFailure);

    #[test]
    fn chain_names_every_cause_once() {
        let inner = IoFailure::new("creating /x", std::io::Error::other("disk full"));
        assert_eq!(error_chain(&inner), "creating /x: disk full");
        assert_eq!(
            error_chain(&Outer(inner)),
            "failed to create container: creating /x: disk full"
        );
    }
}
