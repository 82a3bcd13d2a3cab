//! The full, read-only check of a log directory behind
//! `dledger-replica log verify`: every frame's CRC, index continuity within
//! and across segments, and each sealed segment's index file against the data.
//! Unlike opening, it reads every byte and changes nothing.

use std::path::{Path, PathBuf};

use super::segment::{self, Segment};
use super::vfs::{RealVfs, Vfs};
use super::{Result, StoreError};
use crate::entry::{Index, Term};

/// The state of a sealed segment's index file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexFileStatus {
    /// The active segment has none, by design.
    NotExpected,
    /// Present and matching the data.
    Matches,
    /// Missing or stale (rebuilt on the next open; not data damage).
    NeedsRebuild(String),
    /// Present, believable, but disagreeing with the data it describes.
    Disagrees,
}

/// What the check found in one segment.
#[derive(Clone, Debug)]
pub struct SegmentReport {
    /// The segment file.
    pub path: PathBuf,
    /// Its first index.
    pub base_index: Index,
    /// Its last valid index (`base_index - 1` when empty).
    pub last_index: Index,
    /// Its size on disk.
    pub size_bytes: u64,
    /// The index file's state.
    pub index_file: IndexFileStatus,
}

/// Damage found, with where.
#[derive(Clone, Debug)]
pub struct Problem {
    /// The file.
    pub path: PathBuf,
    /// Byte offset in it.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

/// The outcome of a full check.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Each segment, oldest first.
    pub segments: Vec<SegmentReport>,
    /// The first index present.
    pub first_index: Index,
    /// The last valid index.
    pub last_index: Index,
    /// The term of the last valid entry.
    pub last_term: Term,
    /// A torn tail (crash artefact) that opening would cut.
    pub torn_tail: Option<Problem>,
    /// Damage that opening would refuse.
    pub damage: Vec<Problem>,
}

impl Report {
    /// Whether the log is free of damage (a torn tail is not damage).
    pub fn is_healthy(&self) -> bool {
        self.damage.is_empty()
            && self
                .segments
                .iter()
                .all(|segment| segment.index_file != IndexFileStatus::Disagrees)
    }
}

/// Checks the log in `dir` completely without changing it.
pub fn verify_log(dir: &Path) -> Result<Report> {
    let vfs = RealVfs;
    let mut bases: Vec<Index> = vfs
        .list(dir)
        .map_err(|error| StoreError::io(dir, error))?
        .iter()
        .filter_map(|name| name.strip_suffix(".seg"))
        .filter(|stem| stem.len() == 20)
        .filter_map(|stem| stem.parse().ok())
        .collect();
    bases.sort_unstable();
    if bases.is_empty() {
        return Err(StoreError::Invalid(format!(
            "no log segments in {}",
            dir.display()
        )));
    }
    let mut report = Report {
        first_index: bases[0],
        ..Report::default()
    };
    let mut previous: Option<(Index, Term)> = None;
    for (position, base) in bases.iter().enumerate() {
        let last = position + 1 == bases.len();
        let path = segment::segment_path(dir, *base);
        let file = vfs
            .open_read_only(&path)
            .map_err(|error| StoreError::io(&path, error))?;
        let len_bytes = file
            .len_bytes()
            .map_err(|error| StoreError::io(&path, error))?;
        let header = match segment::read_header(file.as_ref(), &path, len_bytes) {
            Ok(header) => header,
            Err(error) => {
                report.damage.push(problem_of(error, &path));
                continue;
            }
        };
        if header.base_index != *base {
            report.damage.push(Problem {
                path: path.clone(),
                offset: 0,
                reason: format!(
                    "header says base {}, the name says {base}",
                    header.base_index
                ),
            });
        }
        if let Some((previous_last, previous_term)) = previous {
            if header.base_index != previous_last + 1 || header.prev_term != previous_term {
                report.damage.push(Problem {
                    path: path.clone(),
                    offset: 0,
                    reason: format!(
                        "segment starts at index {} after term {}, the previous one ends at {previous_last} in term {previous_term}",
                        header.base_index, header.prev_term
                    ),
                });
            }
        }
        let scan = segment::scan(file.as_ref(), &path, header, len_bytes)?;
        if let Some(damage) = &scan.damage {
            let problem = Problem {
                path: path.clone(),
                offset: damage.offset,
                reason: damage.reason.to_string(),
            };
            if last && !damage.followed_by_valid_frame {
                report.torn_tail = Some(problem);
            } else {
                report.damage.push(problem);
            }
        }
        let scanned = Segment {
            path: path.clone(),
            file,
            base_index: header.base_index,
            prev_term: header.prev_term,
            offsets: scan.offsets,
            term_runs: scan.term_runs,
            end_bytes: scan.valid_end_bytes,
        };
        let index_file = if last {
            IndexFileStatus::NotExpected
        } else {
            match segment::load_index(&vfs, &path, header, len_bytes) {
                Ok((offsets, runs)) if offsets == scanned.offsets && runs == scanned.term_runs => {
                    IndexFileStatus::Matches
                }
                Ok(_) => IndexFileStatus::Disagrees,
                Err(reason) => IndexFileStatus::NeedsRebuild(reason),
            }
        };
        previous = Some((scanned.last_index(), scanned.last_term()));
        report.last_index = scanned.last_index();
        report.last_term = scanned.last_term();
        report.segments.push(SegmentReport {
            path,
            base_index: scanned.base_index,
            last_index: scanned.last_index(),
            size_bytes: len_bytes,
            index_file,
        });
    }
    Ok(report)
}

fn problem_of(error: StoreError, path: &Path) -> Problem {
    match error {
        StoreError::Corrupt {
            path,
            offset,
            reason,
        } => Problem {
            path,
            offset,
            reason,
        },
        other => Problem {
            path: path.to_owned(),
            offset: 0,
            reason: other.to_string(),
        },
    }
}
