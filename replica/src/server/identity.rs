//! Whose data directory this is: `<data-dir>/identity` names the group, the
//! member and its incarnation, written once when the directory is first
//! used and checked at every start.
//!
//! The incarnation is what makes a wiped member safe. A member that starts
//! with an empty data directory to join a running group draws a new random
//! incarnation, and goes by `name#<incarnation>` among peers
//! ([`peer_name_of`]): its numeric id is new, so the votes and the log the
//! old incarnation had are not counted as its own, and the group's links
//! to the old incarnation refuse it at the handshake. It can only take part
//! once the leader adds it as a learner and promotes it. Members that
//! bootstrap a group are incarnation 0 and go by their plain name, which is
//! also how data directories from builds before this file are read.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::membership::peer_name_of;
use crate::store::vfs::{write_atomically, RealVfs};
use crate::store::StoreError;

/// The identity file's name inside the data directory.
pub const IDENTITY_FILE_NAME: &str = "identity";

/// The identity file of the data directory `data_dir`.
pub fn identity_path(data_dir: &Path) -> PathBuf {
    data_dir.join(IDENTITY_FILE_NAME)
}

/// Whose data directory it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The group name (`--group`).
    pub group: String,
    /// The member name (`--id`).
    pub member: String,
    /// 0 for a member that bootstrapped the group (or a directory from an
    /// older build); otherwise drawn when it first started to join.
    pub incarnation: u64,
    /// The group's id (`--group-id`, in Kubernetes the `DLedgerGroup`'s
    /// uid): a group recreated under the same name has another, and its
    /// members never talk to this one's. Empty when none was given.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group_id: String,
}

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    #[serde(flatten)]
    identity: Identity,
}

impl Identity {
    /// The name this member goes by among peers.
    pub fn peer_name(&self) -> String {
        peer_name_of(&self.member, self.incarnation)
    }
}

/// Why the data directory cannot be used by this member.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing the file failed, or it is damaged.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The directory belongs to another group of the same name.
    #[error(
        "the data directory belongs to group {group:?} of id {found:?} ({path}), not to the \
         group of id {given:?} (--group-id): a group recreated under the same name, or a \
         volume from a deleted one; give this member an empty --data-dir"
    )]
    OtherGroupId {
        /// The file.
        path: PathBuf,
        /// The group name.
        group: String,
        /// What the file says.
        found: String,
        /// `--group-id`.
        given: String,
    },
    /// The directory belongs to another member or group.
    #[error(
        "the data directory belongs to member {found_member:?} of group {found_group:?} \
         ({path}), not to member {member:?} of group {group:?}; give this member its own \
         --data-dir"
    )]
    NotOurs {
        /// The file.
        path: PathBuf,
        /// What it says.
        found_group: String,
        /// What it says.
        found_member: String,
        /// `--group`.
        group: String,
        /// `--id`.
        member: String,
    },
}

/// The identity of the data directory at `data_dir` for member `member` of
/// `group` (of id `group_id`, empty when none is given): the one saved
/// there, or a new one saved now. A new directory (`holds_state` false)
/// that joins an existing group (`join`) gets a random incarnation; one
/// that bootstraps, or one that already holds a log from an older build,
/// gets 0. A saved group id that differs from `group_id` is refused; a
/// directory saved without one takes `group_id` up.
pub fn claim(
    data_dir: &Path,
    group: &str,
    member: &str,
    group_id: &str,
    holds_state: bool,
    join: bool,
) -> Result<Identity, IdentityError> {
    let path = identity_path(data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let file: File = serde_json::from_slice(&bytes)
                .map_err(|err| StoreError::corrupt(&path, 0, format!("identity file: {err}")))?;
            if file.version != 1 {
                let reason = format!("identity file format {} (this build reads 1)", file.version);
                return Err(StoreError::corrupt(&path, 0, reason).into());
            }
            let mut identity = file.identity;
            if identity.group != group || identity.member != member {
                return Err(IdentityError::NotOurs {
                    path,
                    found_group: identity.group,
                    found_member: identity.member,
                    group: group.to_string(),
                    member: member.to_string(),
                });
            }
            if !identity.group_id.is_empty()
                && !group_id.is_empty()
                && identity.group_id != group_id
            {
                return Err(IdentityError::OtherGroupId {
                    path,
                    group: identity.group,
                    found: identity.group_id,
                    given: group_id.to_string(),
                });
            }
            if identity.group_id.is_empty() && !group_id.is_empty() {
                identity.group_id = group_id.to_string();
                save(&path, &identity)?;
            }
            Ok(identity)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let identity = Identity {
                group: group.to_string(),
                member: member.to_string(),
                incarnation: if join && !holds_state {
                    new_incarnation()
                } else {
                    0
                },
                group_id: group_id.to_string(),
            };
            save(&path, &identity)?;
            Ok(identity)
        }
        Err(error) => Err(StoreError::io(&path, error).into()),
    }
}

fn save(path: &Path, identity: &Identity) -> Result<(), IdentityError> {
    let file = File {
        version: 1,
        identity: identity.clone(),
    };
    let bytes = serde_json::to_vec_pretty(&file)
        .map_err(|err| StoreError::corrupt(path, 0, err.to_string()))?;
    write_atomically(&RealVfs, path, &bytes).map_err(|err| StoreError::io(path, err))?;
    Ok(())
}

/// A random, non-zero incarnation (from the standard library's per-process
/// random hash keys, mixed with the clock).
fn new_incarnation() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    hasher.finish().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_joining_member_draws_an_incarnation_once_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = claim(dir.path(), "orders", "orders-3", "", false, true).unwrap();
        assert_ne!(first.incarnation, 0);
        assert!(first.peer_name().starts_with("orders-3#"));
        let again = claim(dir.path(), "orders", "orders-3", "", true, true).unwrap();
        assert_eq!(again, first);
    }

    #[test]
    fn bootstrap_members_and_old_directories_are_incarnation_zero() {
        let dir = tempfile::tempdir().unwrap();
        let bootstrap = claim(&dir.path().join("a"), "g", "a", "", false, false);
        assert!(bootstrap.is_err(), "the directory must exist");
        std::fs::create_dir(dir.path().join("a")).unwrap();
        let bootstrap = claim(&dir.path().join("a"), "g", "a", "", false, false).unwrap();
        assert_eq!(
            (bootstrap.incarnation, bootstrap.peer_name().as_str()),
            (0, "a")
        );
        std::fs::create_dir(dir.path().join("b")).unwrap();
        let old = claim(&dir.path().join("b"), "g", "b", "", true, true).unwrap();
        assert_eq!(old.incarnation, 0);
    }

    #[test]
    fn another_members_directory_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        claim(dir.path(), "orders", "orders-1", "", false, false).unwrap();
        let err = claim(dir.path(), "orders", "orders-2", "", false, false).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("\"orders-1\"") && text.contains("\"orders-2\""),
            "{text}"
        );
        let err = claim(dir.path(), "payments", "orders-1", "", false, false).unwrap_err();
        assert!(err.to_string().contains("group \"payments\""), "{err}");
    }

    #[test]
    fn a_group_id_is_kept_taken_up_once_and_another_refused() {
        let dir = tempfile::tempdir().unwrap();
        // A directory from before group ids takes the first one given.
        let old = claim(dir.path(), "orders", "orders-1", "", false, false).unwrap();
        assert_eq!(old.group_id, "");
        let taken = claim(dir.path(), "orders", "orders-1", "uid-a", true, false).unwrap();
        assert_eq!(taken.group_id, "uid-a");
        // Started without the flag, it keeps its id.
        let kept = claim(dir.path(), "orders", "orders-1", "", true, false).unwrap();
        assert_eq!(kept.group_id, "uid-a");
        let err = claim(dir.path(), "orders", "orders-1", "uid-b", true, false).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("\"uid-a\"") && text.contains("\"uid-b\"") && text.contains("recreated"),
            "{text}"
        );
    }
}
