//! After a scenario: every acknowledged entry is in the log at its index with
//! its payload and term, each writer's entries are in the order it was told,
//! no payload was committed twice, and all members hold the same committed log.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::http::{Client, ReadEntry};
use crate::load::Ack;
use crate::wait::wait_until;

/// Bytes asked for per range read.
const PAGE_BYTES_MAX: u64 = 1024 * 1024;
/// Time limit of one range read.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many problems are listed in a report.
const PROBLEMS_LISTED_MAX: usize = 20;

/// What a successful check covered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The commit index all members agree on.
    pub commit_index: u64,
    /// Acknowledgements checked.
    pub acknowledged: usize,
    /// Members whose logs were read and compared.
    pub members: usize,
}

/// Waits until every running member reports the same commit index and has
/// nothing uncommitted (so the load must be stopped), and returns that index.
///
/// # Errors
/// [`Error::Timeout`] with the last statuses when they do not agree in time.
pub fn converge(cluster: &Cluster, timeout: Duration) -> Result<u64> {
    let running: Vec<usize> = (0..cluster.size())
        .filter(|i| cluster.is_running(*i))
        .collect();
    let mut last_seen = String::new();
    let agreed = wait_until("all members to agree on the commit index", timeout, || {
        let statuses: Vec<_> = running.iter().map(|i| cluster.status(*i).ok()).collect();
        last_seen = format!("{statuses:?}");
        let statuses: Vec<_> = statuses.into_iter().collect::<Option<Vec<_>>>()?;
        let commit = statuses.first()?.commit_index;
        statuses
            .iter()
            .all(|s| s.commit_index == commit && s.last_index == commit)
            .then_some(commit)
    });
    agreed.map_err(|error| match error {
        Error::Timeout { what, waited_ms } => Error::Timeout {
            what: format!("{what}; last statuses: {last_seen}"),
            waited_ms,
        },
        other => other,
    })
}

/// Reads member `index`'s committed log from `from` up to `through` with range reads.
///
/// # Errors
/// A failed read, or a page that is not consecutive entries from where it was asked.
pub fn read_log(
    cluster: &Cluster,
    index: usize,
    from: u64,
    through: u64,
) -> Result<Vec<ReadEntry>> {
    cluster.with_client(index, READ_TIMEOUT, |client| {
        read_range(client, from, through)
    })
}

/// Reads a committed log from `from` through `through` with range reads via `client`.
///
/// # Errors
/// A failed read, or a page that is not consecutive entries from where it was asked.
pub fn read_range(client: &Client, from: u64, through: u64) -> Result<Vec<ReadEntry>> {
    let mut log = Vec::new();
    let mut next = from;
    while next <= through {
        let page = client.entries(next, PAGE_BYTES_MAX, 0)?;
        if page.entries.is_empty() {
            return Err(Error::Http {
                url: client.base().to_owned(),
                reason: format!(
                    "range read from {next} returned nothing; commitIndex {} (expected through {through})",
                    page.commit_index
                ),
            });
        }
        for entry in page.entries {
            if entry.index != next {
                return Err(Error::Http {
                    url: client.base().to_owned(),
                    reason: format!("range read expected index {next}, got {}", entry.index),
                });
            }
            if next <= through {
                log.push(entry);
            }
            next += 1;
        }
    }
    Ok(log)
}

/// Converges, reads every running member's whole committed log, and checks it
/// against `acks`.
///
/// # Errors
/// A message listing what is wrong (or why the logs could not be read).
pub fn verify(
    cluster: &Cluster,
    acks: &[Ack],
    timeout: Duration,
) -> std::result::Result<Verified, String> {
    let commit_index = converge(cluster, timeout).map_err(|error| error.to_string())?;
    let mut logs = Vec::new();
    for index in (0..cluster.size()).filter(|i| cluster.is_running(*i)) {
        let first = cluster
            .status(index)
            .map_err(|error| error.to_string())?
            .first_index
            .max(1);
        let log =
            read_log(cluster, index, first, commit_index).map_err(|error| error.to_string())?;
        logs.push((cluster.member(index).id.clone(), log));
    }
    let problems = check_logs(&logs, acks);
    if problems.is_empty() {
        Ok(Verified {
            commit_index,
            acknowledged: acks.len(),
            members: logs.len(),
        })
    } else {
        let total = problems.len();
        let mut listed: Vec<String> = problems.into_iter().take(PROBLEMS_LISTED_MAX).collect();
        if total > PROBLEMS_LISTED_MAX {
            listed.push(format!("... and {} more", total - PROBLEMS_LISTED_MAX));
        }
        Err(format!("{total} problems:\n  {}", listed.join("\n  ")))
    }
}

/// Checks members' logs (id, entries) against each other and against `acks`;
/// returns every problem found.
pub fn check_logs(logs: &[(String, Vec<ReadEntry>)], acks: &[Ack]) -> Vec<String> {
    let mut problems = Vec::new();
    let Some((reference_id, reference)) = logs.first() else {
        return vec!["no member's log was read".to_owned()];
    };
    for (id, log) in &logs[1..] {
        compare(reference_id, reference, id, log, &mut problems);
    }
    let by_index: HashMap<u64, &ReadEntry> = reference.iter().map(|e| (e.index, e)).collect();
    for ack in acks {
        match by_index.get(&ack.index) {
            None => problems.push(format!(
                "acknowledged {} at index {} term {} is not in the log",
                shown(&ack.payload),
                ack.index,
                ack.term
            )),
            Some(entry) if entry.payload != ack.payload || entry.term != ack.term => {
                problems.push(format!(
                    "acknowledged {} at index {} term {}; the log holds {} term {} there",
                    shown(&ack.payload),
                    ack.index,
                    ack.term,
                    shown(&entry.payload),
                    entry.term
                ));
            }
            Some(_) => {}
        }
    }
    check_writer_order(acks, &mut problems);
    check_unique_payloads(reference, acks, &mut problems);
    problems
}

fn compare(
    reference_id: &str,
    reference: &[ReadEntry],
    id: &str,
    log: &[ReadEntry],
    problems: &mut Vec<String>,
) {
    if log.len() != reference.len() {
        problems.push(format!(
            "{id} holds {} committed entries, {reference_id} holds {}",
            log.len(),
            reference.len()
        ));
    }
    if let Some((mine, theirs)) = log.iter().zip(reference).find(|(a, b)| a != b) {
        problems.push(format!(
            "{id} and {reference_id} differ first at index {}: term {} {:?} vs term {} {:?}",
            mine.index,
            mine.term,
            shown(&mine.payload),
            theirs.term,
            shown(&theirs.payload)
        ));
    }
}

/// A writer waits for each acknowledgement before sending its next entry, so
/// its acknowledged indices must rise with its sequence numbers.
fn check_writer_order(acks: &[Ack], problems: &mut Vec<String>) {
    let mut by_writer: HashMap<(&str, usize), Vec<&Ack>> = HashMap::new();
    for ack in acks {
        by_writer
            .entry((ack.label.as_str(), ack.writer))
            .or_default()
            .push(ack);
    }
    for ((label, writer), mut mine) in by_writer {
        mine.sort_by_key(|ack| ack.sequence);
        for pair in mine.windows(2) {
            if pair[1].index <= pair[0].index {
                problems.push(format!(
                    "load {label:?} writer {writer}: sequence {} acknowledged at index {} after sequence {} at {}",
                    pair[1].sequence, pair[1].index, pair[0].sequence, pair[0].index
                ));
            }
        }
    }
}

/// Payloads are never re-sent, so a payload twice in the log is a duplicate
/// the server made. Empty payloads (a new leader's no-op) are skipped, and
/// so are payloads that are not the loads' (another load generator, such as
/// `dledger-replica bench`, may write the same bytes many times).
fn check_unique_payloads(log: &[ReadEntry], acks: &[Ack], problems: &mut Vec<String>) {
    let prefixes: HashSet<String> = acks.iter().map(|ack| format!("{}-w", ack.label)).collect();
    let is_loads = |payload: &[u8]| {
        prefixes.is_empty()
            || prefixes
                .iter()
                .any(|prefix| payload.starts_with(prefix.as_bytes()))
    };
    let mut seen: HashMap<&[u8], u64> = HashMap::new();
    for entry in log
        .iter()
        .filter(|e| !e.payload.is_empty() && is_loads(&e.payload))
    {
        if let Some(first) = seen.insert(&entry.payload, entry.index) {
            problems.push(format!(
                "payload {} ({} bytes) is in the log twice, at {first} and {}",
                shown(&entry.payload),
                entry.payload.len(),
                entry.index
            ));
        }
    }
}

/// How much of a payload a problem shows (large entries would flood the report).
const PAYLOAD_SHOWN_BYTES: usize = 64;

/// The start of `payload`, as text.
fn shown(payload: &[u8]) -> String {
    String::from_utf8_lossy(&payload[..payload.len().min(PAYLOAD_SHOWN_BYTES)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn entry(index: u64, term: u64, payload: &str) -> ReadEntry {
        ReadEntry {
            index,
            term,
            payload: payload.as_bytes().to_vec(),
        }
    }

    fn ack(writer: usize, sequence: u64, index: u64, term: u64, payload: &str) -> Ack {
        Ack {
            label: "t".into(),
            writer,
            sequence,
            index,
            term,
            payload: payload.as_bytes().to_vec(),
            leader: String::new(),
            at: Instant::now(),
        }
    }

    fn logs(a: Vec<ReadEntry>, b: Vec<ReadEntry>) -> Vec<(String, Vec<ReadEntry>)> {
        vec![("a".to_owned(), a), ("b".to_owned(), b)]
    }

    #[test]
    fn a_consistent_history_passes() {
        let log = vec![entry(1, 1, ""), entry(2, 1, "x0"), entry(3, 2, "x1")];
        let acks = [ack(0, 0, 2, 1, "x0"), ack(0, 1, 3, 2, "x1")];
        assert!(check_logs(&logs(log.clone(), log), &acks).is_empty());
    }

    #[test]
    fn every_kind_of_loss_is_reported() {
        let log = vec![entry(1, 1, "x0"), entry(2, 1, "x1"), entry(3, 1, "x1")];
        let shorter = vec![entry(1, 1, "x0"), entry(2, 2, "other")];
        let acks = [
            ack(0, 0, 2, 1, "x0"), // wrong place
            ack(0, 1, 1, 1, "x0"), // out of order after the first
            ack(1, 0, 9, 1, "gone"),
        ];
        let problems = check_logs(&logs(log, shorter), &acks);
        let text = problems.join("\n");
        assert!(
            text.contains("b holds 2 committed entries, a holds 3"),
            "{text}"
        );
        assert!(text.contains("differ first at index 2"), "{text}");
        assert!(text.contains("the log holds x1 term 1 there"), "{text}");
        assert!(
            text.contains("gone at index 9 term 1 is not in the log"),
            "{text}"
        );
        assert!(text.contains("writer 0: sequence 1"), "{text}");
    }

    #[test]
    fn a_load_payload_twice_is_reported_and_another_generators_are_not() {
        let bench = "x".repeat(100);
        let log = vec![
            entry(1, 1, "t-w0-0"),
            entry(2, 1, &bench),
            entry(3, 1, &bench),
            entry(4, 1, "t-w0-1"),
            entry(5, 1, "t-w0-1"),
        ];
        let acks = [ack(0, 0, 1, 1, "t-w0-0")];
        let text = check_logs(&logs(log.clone(), log), &acks).join("\n");
        assert!(
            text.contains("payload t-w0-1 (6 bytes) is in the log twice, at 4 and 5"),
            "{text}"
        );
        assert!(!text.contains("xxx"), "{text}");
    }
}
