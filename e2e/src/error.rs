//! The harness's error type.

use std::path::PathBuf;

/// Everything the harness can fail at, with enough context to act on.
#[derive(thiserror::Error)]
pub enum Error {
    /// The replica executable was not found or could not be built.
    #[error("replica binary: {0}")]
    Binary(String),
    /// Spawning, signalling or waiting for a replica process failed.
    #[error("process {member}: {source}")]
    Process {
        /// The member id.
        member: String,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// A file-system operation on the test directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// An HTTP request could not be made or its answer could not be read.
    #[error("http {url}: {reason}")]
    Http {
        /// The request URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The server answered with a status or body the contract does not allow.
    #[error("unexpected answer from {url}: {status} {body}")]
    Unexpected {
        /// The request URL.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The body, cut to a readable length.
        body: String,
    },
    /// A condition was not reached in time.
    #[error("timed out after {waited_ms} ms waiting for {what}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long it was waited for.
        waited_ms: u128,
    },
    /// A network-namespace command failed.
    #[error("netns: `{command}` failed: {reason}")]
    Netns {
        /// The command line that failed.
        command: String,
        /// Its stderr or the spawn error.
        reason: String,
    },
    /// A `kubectl` command failed or printed something unusable.
    #[error("`{command}` failed: {reason}")]
    Kube {
        /// The command line (or the variable) involved.
        command: String,
        /// Its stderr, the exit status or what was wrong with its output.
        reason: String,
    },
    /// A condition was not reached in time; what was last seen instead.
    #[error("timed out after {waited_ms} ms waiting for {what}; last seen: {last_seen}")]
    Waited {
        /// What was waited for.
        what: String,
        /// How long it was waited for.
        waited_ms: u128,
        /// The last observation that did not satisfy the condition.
        last_seen: String,
    },
}

/// Debug shows the message: tests `expect()` these, and a failing scenario
/// should read as a sentence, not as a struct dump.
impl std::fmt::Debug for Error {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{self}")
    }
}

/// The harness's result type.
pub type Result<T> = std::result::Result<T, Error>;
