//! The replica's storage: a segmented, append-only log of [`Entry`]s and the
//! durable [`HardState`] (term and vote), kept apart from each other.
//!
//! The store knows nothing of Raft roles and does no async: the consensus core
//! decides what to persist, the server runs it on a storage thread.
//!
//! # Data directory layout
//!
//! ```text
//! <data-dir>/meta                          HardState (term, vote), replaced atomically
//! <data-dir>/log/<base index, 20 digits>.seg   a segment: header + entry frames
//! <data-dir>/log/<base index, 20 digits>.idx   a sealed segment's offset index (rebuilt if lost)
//! <data-dir>/log/spare-segment.tmp         the next segment, pre-written with zeros (deleted at open)
//! ```
//!
//! # Pieces
//!
//! - [`Log`]: the segmented log. One writer at a time (serialised inside),
//!   any number of concurrent readers (`&self`, positional reads).
//! - [`GroupCommit`]: the front end concurrent appenders share; one write and
//!   one fdatasync per batch, completion by callback or blocking wait.
//! - [`MetaStore`]: the hard state file, written by temp file + fsync +
//!   rename + directory fsync.
//! - [`vfs`]: the file layer the store does its I/O through, with a
//!   fault-injecting implementation for tests.
//! - [`space`]: the room left on the log's file system.
//! - [`verify`]: the full, read-only check behind `dledger-replica log verify`.
//!
//! [`Entry`]: crate::entry::Entry
//! [`HardState`]: crate::entry::HardState

mod error;
mod frame;
mod group_commit;
mod log;
mod meta;
mod segment;
pub mod space;
mod spare;
pub mod verify;
pub mod vfs;

pub use error::StoreError;
pub use frame::{FRAME_HEADER_BYTES, FRAME_VERSION, SEGMENT_HEADER_BYTES};
pub use group_commit::{
    GroupCommit, GroupCommitOptions, GroupCommitStats, SubmitCallback, DISK_FULL_RETRY,
};
pub use log::{FlushMode, Log, LogOptions, SegmentInfo, DEFAULT_SEGMENT_BYTES};
pub use meta::MetaStore;

/// The result type of every store operation.
pub type Result<T> = std::result::Result<T, StoreError>;

/// The directory under the data directory that holds the log segments.
pub const LOG_DIR_NAME: &str = "log";

/// The file under the data directory that holds the hard state.
pub const META_FILE_NAME: &str = "meta";

/// The log directory of the data directory `data_dir`.
pub fn log_dir(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join(LOG_DIR_NAME)
}

/// The hard-state file of the data directory `data_dir`.
pub fn meta_path(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join(META_FILE_NAME)
}
