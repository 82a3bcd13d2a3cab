//! Membership changes: proposing one, and following the configuration
//! records the core reports with the links, the listener and the names.

use crate::engine::MemberChange;
use crate::server::{directory, reconfigure};

use super::answers::Waiter;
use super::{MembersReply, RaftLoop};

impl RaftLoop {
    /// Proposes a configuration change by one member; answered once it
    /// is committed.
    pub(super) fn change_members(&mut self, change: MemberChange, reply: MembersReply) {
        let next = match reconfigure::next_configuration(self.directory.configuration(), &change) {
            Ok(next) => next,
            Err(err) => {
                let _ = reply.send(Err(err));
                return;
            }
        };
        match self.node.propose_configuration(next.encode()) {
            Ok((index, term)) => {
                let mut members = self.directory.clone();
                members.update(self.node.configurations());
                let waiter = Waiter::Members(reply, members.api(true));
                self.track_proposal(index, index, 1, term, waiter);
                tracing::info!(?change, index, "configuration change proposed");
            }
            Err(err) => {
                let leader = |id| self.directory.member(id);
                let _ = reply.send(Err(reconfigure::refusal(err, leader, |err| {
                    self.propose_error(err)
                })));
            }
        }
    }

    /// The configuration records changed: keep them on disk before any
    /// entry that carries them, and follow the newest with the links, the
    /// listener and the names.
    pub(super) fn on_configurations(
        &mut self,
        records: &[crate::membership::ConfigRecord],
    ) -> Result<(), String> {
        directory::save_records(&self.configuration_path, records)
            .map_err(|err| format!("saving the configuration: {err}"))?;
        let previous = self.directory.index();
        self.directory.update(records);
        let targets = self.directory.link_targets();
        self.peers.set_members(&targets);
        self.known_peers
            .set(targets.iter().map(|member| member.peer_name.clone()));
        if self.directory.index() != previous {
            let members = self.directory.api(false);
            tracing::info!(
                index = members.index,
                voters = ?members.voters.iter().map(|m| &m.id).collect::<Vec<_>>(),
                learners = ?members.learners.iter().map(|m| &m.id).collect::<Vec<_>>(),
                "configuration in force"
            );
        }
        Ok(())
    }
}
