//! The member directory: the names and addresses behind the ids of the
//! configuration in force, and the file that keeps the configuration
//! records across restarts and retention.
//!
//! `<data-dir>/configuration` holds the core's records (the newest one
//! known committed and durable here, any later ones, and those of entries a
//! truncation replaced until the truncation is durable), replaced atomically
//! before the
//! entries that change them are written, so it never misses a
//! configuration entry the log has; one the log lost with an unsynced tail
//! is dropped at restart by `Node::restore_configurations`.
//!
//! A member that bootstraps a new group writes the `--peers` list there as
//! the record at index 0 on its first start, before it can vote: from then
//! on that list, or the changes the log makes to it, is in force whatever
//! `--peers` says at later starts. A member waiting to be added has no file
//! until the leader's first configuration entry reaches it.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::api;
use crate::entry::{Index, NodeId};
use crate::membership::{ConfigRecord, Configuration, MemberRecord, MemberRole};
use crate::store::vfs::{write_atomically, RealVfs};
use crate::store::StoreError;

use super::members::Member;

/// The configuration file's name inside the data directory.
pub const CONFIGURATION_FILE_NAME: &str = "configuration";

/// The configuration file of the data directory `data_dir`.
pub fn configuration_path(data_dir: &Path) -> PathBuf {
    data_dir.join(CONFIGURATION_FILE_NAME)
}

#[derive(Serialize, Deserialize)]
struct FileRecord {
    index: Index,
    term: u64,
    /// The entry's payload, a JSON document itself.
    configuration: String,
}

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    records: Vec<FileRecord>,
}

/// Replaces the file at `path` with `records` (a bootstrap record without
/// a payload, that of a member waiting to be added, is left out), durably.
pub fn save_records(path: &Path, records: &[ConfigRecord]) -> Result<(), StoreError> {
    let file = File {
        version: 1,
        records: records
            .iter()
            .filter(|record| !record.payload.is_empty())
            .map(|record| FileRecord {
                index: record.index,
                term: record.term,
                configuration: String::from_utf8_lossy(&record.payload).into_owned(),
            })
            .collect(),
    };
    let bytes = serde_json::to_vec_pretty(&file)
        .map_err(|err| StoreError::corrupt(path, 0, err.to_string()))?;
    write_atomically(&RealVfs, path, &bytes).map_err(|err| StoreError::io(path, err))
}

/// The records saved at `path`, oldest first; empty when there is no file.
/// A damaged file is an error naming it: starting from `--peers` instead
/// could make this member count the wrong majority.
pub fn load_records(path: &Path) -> Result<Vec<ConfigRecord>, StoreError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(StoreError::io(path, error)),
    };
    let corrupt = |reason: String| {
        StoreError::corrupt(
            path,
            0,
            format!("configuration file: {reason}; restore it from a backup of this member, or wipe the member and add it again"),
        )
    };
    let file: File = serde_json::from_slice(&bytes).map_err(|err| corrupt(err.to_string()))?;
    if file.version != 1 {
        return Err(corrupt(format!(
            "format version {} (this build reads 1)",
            file.version
        )));
    }
    let mut records = Vec::with_capacity(file.records.len());
    for record in file.records {
        let payload = Bytes::from(record.configuration.into_bytes());
        let decoded = ConfigRecord::from_entry(record.index, record.term, payload)
            .map_err(|err| corrupt(format!("record at index {}: {err}", record.index)))?;
        records.push(decoded);
    }
    Ok(records)
}

/// Names, addresses and roles of the members in force.
#[derive(Clone, Debug)]
pub struct Directory {
    /// The `--peers` list, in force until a configuration entry is known.
    bootstrap: Vec<Member>,
    /// The configuration in force.
    current: Configuration,
    /// Its entry's index (0 for the bootstrap list).
    index: Index,
}

impl Directory {
    /// A directory of the bootstrap list alone (all voters).
    pub fn new(bootstrap: Vec<Member>) -> Directory {
        let current = bootstrap_configuration(&bootstrap, |_| true);
        Directory {
            bootstrap,
            current,
            index: 0,
        }
    }

    /// The bootstrap record of a new group: the `--peers` list, all voters.
    pub fn bootstrap_record(&self) -> ConfigRecord {
        let configuration = bootstrap_configuration(&self.bootstrap, |_| true);
        ConfigRecord {
            index: 0,
            term: 0,
            membership: configuration.membership(),
            payload: configuration.encode(),
        }
    }

    /// The member names of the newest of `records`, sorted.
    pub fn names(records: &[ConfigRecord]) -> Vec<String> {
        records
            .last()
            .and_then(|record| Configuration::decode(&record.payload).ok())
            .map(|configuration| {
                configuration
                    .members()
                    .iter()
                    .map(|member| member.name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Takes up the newest of the core's `records`.
    pub fn update(&mut self, records: &[ConfigRecord]) {
        let Some(newest) = records.last() else {
            return;
        };
        self.index = newest.index;
        self.current = match Configuration::decode(&newest.payload) {
            Ok(configuration) => configuration,
            // The bootstrap record (no payload): the ids the core was given
            // are those of `--peers` (none for a member waiting to be added).
            Err(_) => bootstrap_configuration(&self.bootstrap, |id| newest.membership.is_voter(id)),
        };
    }

    /// The configuration in force, as the base of the next change.
    pub fn configuration(&self) -> &Configuration {
        &self.current
    }

    /// Its entry's index; 0 while the bootstrap list is in force.
    pub fn index(&self) -> Index {
        self.index
    }

    /// Every member in force, voters and learners.
    pub fn members(&self) -> Vec<Member> {
        self.current.members().iter().map(member_of).collect()
    }

    /// Who this member keeps links to and admits as a peer: the members in
    /// force, and those of `--peers` (by name) besides. A member waiting to be added
    /// knows the group only from `--peers`, and must reach the leader to
    /// answer it before the configuration naming it arrives.
    pub fn link_targets(&self) -> Vec<Member> {
        let mut targets = self.members();
        for member in &self.bootstrap {
            if !targets.iter().any(|known| known.name == member.name) {
                targets.push(member.clone());
            }
        }
        targets
    }

    /// The member whose id is `id`.
    pub fn member(&self, id: NodeId) -> Option<Member> {
        self.current.member_by_id(id).map(member_of).or_else(|| {
            self.bootstrap
                .iter()
                .find(|member| member.id == id)
                .cloned()
        })
    }

    /// The name of `id`, or `#id` for an id no configuration names.
    pub fn name_of(&self, id: NodeId) -> String {
        self.member(id)
            .map_or_else(|| format!("#{id}"), |member| member.name)
    }

    /// The `/admin/members` document; `committed` as this member knows it.
    pub fn api(&self, committed: bool) -> api::Members {
        let address = |record: &MemberRecord| api::MemberAddress {
            id: record.name.clone(),
            address: record.address.clone(),
            http_address: record.http_address.clone(),
            incarnation: record.incarnation,
        };
        let of_role = |role| {
            self.current
                .members()
                .iter()
                .filter(|record| record.role == role)
                .map(address)
                .collect()
        };
        api::Members {
            index: self.index,
            committed,
            voters: of_role(MemberRole::Voter),
            learners: of_role(MemberRole::Learner),
        }
    }
}

/// The bootstrap list as a configuration; members for which `is_voter`
/// is false are left out. Empty when nobody is left (a member waiting to be
/// added), which only the directory ever holds.
fn bootstrap_configuration(
    bootstrap: &[Member],
    is_voter: impl Fn(NodeId) -> bool,
) -> Configuration {
    let records = bootstrap
        .iter()
        .filter(|member| is_voter(member.id))
        .map(|member| MemberRecord::voter(&member.name, &member.tcp_address, &member.http_address))
        .collect();
    Configuration::new(records).unwrap_or_default()
}

fn member_of(record: &MemberRecord) -> Member {
    Member {
        name: record.name.clone(),
        peer_name: record.peer_name(),
        id: record.id,
        tcp_address: record.address.clone(),
        http_address: record.http_address.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::{node_id_of, Change};

    fn member(name: &str) -> Member {
        Member {
            name: name.into(),
            peer_name: name.into(),
            id: node_id_of(name),
            tcp_address: format!("{name}:20911"),
            http_address: format!("{name}:8080"),
        }
    }

    fn with_learner_c(directory: &Directory) -> Configuration {
        let add = Change::AddLearner {
            name: "c".into(),
            incarnation: 0,
            address: "c:1".into(),
            http_address: "c:2".into(),
        };
        directory.configuration().with_change(&add).unwrap()
    }

    #[test]
    fn records_survive_the_file_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = configuration_path(dir.path());
        assert!(load_records(&path).unwrap().is_empty());
        let directory = Directory::new(vec![member("a"), member("b")]);
        let added = with_learner_c(&directory);
        let records = vec![
            directory.bootstrap_record(),
            ConfigRecord::from_entry(7, 2, added.encode()).unwrap(),
        ];
        save_records(&path, &records).unwrap();
        assert_eq!(load_records(&path).unwrap(), records);
        // A member waiting to be added has nothing to save.
        save_records(&path, &[ConfigRecord::bootstrap([])]).unwrap();
        assert!(load_records(&path).unwrap().is_empty());
        std::fs::write(&path, b"{\"version\":1,\"records\":[{\"index\":1").unwrap();
        let err = load_records(&path).unwrap_err().to_string();
        assert!(err.contains("configuration file"), "{err}");
    }

    #[test]
    fn the_directory_follows_the_newest_record() {
        let mut directory = Directory::new(vec![member("a"), member("b")]);
        assert_eq!(directory.api(false).voters.len(), 2);
        let added = with_learner_c(&directory);
        directory.update(&[ConfigRecord::from_entry(4, 1, added.encode()).unwrap()]);
        let api = directory.api(true);
        assert_eq!((api.index, api.voters.len(), api.learners.len()), (4, 2, 1));
        assert_eq!(directory.name_of(node_id_of("c")), "c");
        assert_eq!(directory.name_of(5), "#5");
        // A member waiting to be added knows nobody.
        let mut joining = Directory::new(vec![member("a")]);
        joining.update(&[ConfigRecord::bootstrap([])]);
        assert!(joining.members().is_empty());
    }
}
