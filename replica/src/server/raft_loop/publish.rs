//! Publishing the loop's state for the front ends, after each round.

use std::sync::Arc;

use crate::core;
use crate::server::members::Member;
use crate::server::role_log;

use super::{RaftLoop, Snapshot};

impl RaftLoop {
    /// The member list for the snapshot, shared with the last one when it
    /// did not change.
    fn published_members(&self) -> Arc<Vec<Member>> {
        let members = self.directory.members();
        let published = self.snapshot.borrow().members.clone();
        if *published == members {
            published
        } else {
            Arc::new(members)
        }
    }

    /// Publishes the commit index (and what of it this member can read)
    /// at once, ahead of the round's full [`RaftLoop::publish`]: called
    /// before appends are answered committed, so that a writer who reads
    /// back what it was told is committed never finds the front ends a
    /// step behind.
    pub(super) fn publish_commit(&mut self) {
        let commit_index = self.node.commit_index();
        let readable_index = commit_index.min(self.node.persisted_index());
        self.snapshot.send_if_modified(|current| {
            if current.commit_index >= commit_index && current.readable_index >= readable_index {
                return false;
            }
            current.commit_index = current.commit_index.max(commit_index);
            current.readable_index = current.readable_index.max(readable_index);
            true
        });
    }

    pub(super) fn publish(&mut self) {
        let soft = self.node.soft_state();
        let is_leader = soft.role == core::Role::Leader;
        let tick_ms = self.tick.as_millis() as u64;
        let peers = if is_leader {
            self.node
                .peer_status()
                .into_iter()
                .filter(|peer| peer.id != self.node.id())
                .map(|peer| (peer.id, peer.match_index, peer.last_contact_ticks * tick_ms))
                .collect()
        } else {
            Vec::new()
        };
        let commit_index = self.node.commit_index();
        let persisted = self.node.persisted_index();
        let next = Snapshot {
            role: Some(soft.role),
            leader: soft.leader_id,
            term: soft.term,
            commit_index,
            readable_index: commit_index.min(persisted),
            first_index: self.node.first_index(),
            // What is on this member's disk, not what is still being
            // written: the operator and the readers take lastIndex as held.
            last_index: persisted,
            last_term: self.node.entry_term(persisted).ok().flatten().unwrap_or(0),
            peers,
            stopped: None,
            leader_commit_index: self.node.leader_commit_index(),
            heard_from_leader: self.node.heard_from_leader(),
            leader_contact_at: if is_leader {
                None
            } else {
                // Moved on only once a tick old, so heartbeats alone do not
                // wake every snapshot watcher.
                let published = self.snapshot.borrow().leader_contact_at;
                match (published, self.leader_contact_at) {
                    (Some(old), Some(new)) if new.duration_since(old) < self.tick => Some(old),
                    (_, new) => new,
                }
            },
            leader_silence_limit: self.leader_silence_limit(),
            stale_until: self.stale_until,
            configuration: self.directory.api(self.directory.index() <= commit_index),
            members: self.published_members(),
            learner: self.node.membership().learners.contains(&self.node.id()),
        };
        let lost_after_ms = self.node.config().election_ticks * tick_ms;
        role_log::peers_changed(
            &self.snapshot.borrow().peers,
            &next.peers,
            lost_after_ms,
            soft.term,
            |id| self.member_name(id),
        );
        self.snapshot.send_if_modified(|current| {
            if *current == next {
                false
            } else {
                *current = next;
                true
            }
        });
    }
}
