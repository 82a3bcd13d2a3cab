//! Terms, roles and elections: message term checks, pre-vote, votes, leader
//! stickiness, and becoming follower, candidate or leader.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::entry::{EntryKind, NodeId, Term};

use super::log::LogRead;
use super::message::{Message, MessageBody, VoteRejection};
use super::node::Node;
use super::progress::Progress;
use super::quorum::{self, VoteResult};
use super::ready::{ReadError, Role, TransferOutcome};
use super::violation::ViolationKind;
use super::CoreError;

impl<L: LogRead> Node<L> {
    pub(super) fn step_inner(&mut self, message: Message) -> Result<(), CoreError> {
        // Messages are taken from members and non-members alike, as the
        // dissertation requires: a configuration this member has not received
        // yet may count the sender (the transport checks the group).
        if message.to != self.id || message.from == self.id || message.from == 0 {
            return Ok(());
        }
        if message.term > self.term {
            if !self.step_higher_term(&message)? {
                return Ok(());
            }
        } else if message.term < self.term {
            return self.step_lower_term(&message);
        }
        self.step_current_term(message)
    }

    /// A message from a newer term. Returns whether to go on handling it.
    fn step_higher_term(&mut self, message: &Message) -> Result<bool, CoreError> {
        match &message.body {
            MessageBody::PreVoteRequest { .. } | MessageBody::VoteRequest { .. } => {
                let forced = matches!(
                    message.body,
                    MessageBody::VoteRequest {
                        leadership_transfer: true,
                        ..
                    }
                );
                if !forced && self.in_lease() {
                    // Leader stickiness: a live leader was heard recently.
                    let term = self.term;
                    self.reject_vote(message, term, VoteRejection::LeaderAlive);
                    return Ok(false);
                }
                // A pre-vote changes nothing here; a vote moves us to its term.
                if matches!(message.body, MessageBody::VoteRequest { .. }) {
                    self.become_follower(message.term, None);
                }
            }
            // A granted pre-vote carries the term the candidate will use.
            MessageBody::PreVoteResponse { reject: None } => {}
            MessageBody::Append { .. }
            | MessageBody::InstallLogStart { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::RetentionFloor { .. }
            | MessageBody::TimeoutNow => {
                self.become_follower(message.term, Some(message.from));
            }
            _ => self.become_follower(message.term, None),
        }
        Ok(true)
    }

    /// A message from an older term: tell its sender the newer term where
    /// that helps it step down, drop it otherwise.
    fn step_lower_term(&mut self, message: &Message) -> Result<(), CoreError> {
        match &message.body {
            MessageBody::Append { prev_log_index, .. }
            | MessageBody::InstallLogStart { prev_log_index, .. } => {
                // A stale leader learns our term from the answer and steps down.
                let result = self.reject_append_result(*prev_log_index, 0)?;
                self.send(message.from, MessageBody::AppendResponse { result });
            }
            MessageBody::Heartbeat { .. } => {
                let commit_index = self.log.committed();
                self.send(
                    message.from,
                    MessageBody::HeartbeatResponse {
                        read_context: None,
                        commit_index,
                    },
                );
            }
            MessageBody::PreVoteRequest { .. } | MessageBody::VoteRequest { .. } => {
                let term = self.term;
                self.reject_vote(message, term, VoteRejection::StaleTerm);
            }
            _ => {}
        }
        Ok(())
    }

    /// `message.term == self.term`, or a granted pre-vote for `term + 1`.
    fn step_current_term(&mut self, message: Message) -> Result<(), CoreError> {
        let from = message.from;
        match message.body {
            MessageBody::PreVoteRequest {
                last_log_index,
                last_log_term,
            } => self.handle_vote_request(&message, true, last_log_index, last_log_term),
            MessageBody::VoteRequest {
                last_log_index,
                last_log_term,
                ..
            } => self.handle_vote_request(&message, false, last_log_index, last_log_term),
            MessageBody::PreVoteResponse { reject } => {
                if self.role == Role::PreCandidate {
                    self.record_vote(from, reject.is_none(), true)?;
                }
                Ok(())
            }
            MessageBody::VoteResponse { reject } => {
                if self.role == Role::Candidate {
                    self.record_vote(from, reject.is_none(), false)?;
                }
                Ok(())
            }
            MessageBody::Append {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            } => {
                if !self.follow(from) {
                    return Ok(());
                }
                self.handle_append(from, prev_log_index, prev_log_term, &entries, leader_commit)
            }
            MessageBody::InstallLogStart {
                prev_log_index,
                prev_log_term,
                configuration,
                state,
                leader_commit,
            } => {
                if !self.follow(from) {
                    return Ok(());
                }
                self.handle_install_log_start(
                    from,
                    prev_log_index,
                    prev_log_term,
                    configuration,
                    state,
                    leader_commit,
                )
            }
            MessageBody::RetentionFloor { keep_from } => {
                if self.follow(from) {
                    self.leader_keep_from = Some(keep_from);
                }
                Ok(())
            }
            MessageBody::Heartbeat {
                leader_commit,
                read_context,
            } => {
                if self.follow(from) {
                    self.handle_heartbeat(from, leader_commit, read_context);
                }
                Ok(())
            }
            MessageBody::AppendResponse { result } => {
                if self.role == Role::Leader {
                    self.handle_append_response(from, result)?;
                }
                Ok(())
            }
            MessageBody::HeartbeatResponse {
                read_context,
                commit_index,
            } => {
                if self.role == Role::Leader {
                    self.handle_heartbeat_response(from, read_context, commit_index)?;
                }
                Ok(())
            }
            MessageBody::TimeoutNow => {
                if self.role == Role::Follower
                    && self.leader_id == Some(from)
                    && self.may_campaign()
                {
                    self.campaign(true)?;
                }
                Ok(())
            }
        }
    }

    /// A leader of the current term spoke: follow it. Returns false (and
    /// reports a violation) when the term already has another leader: one
    /// term never has two, so the claim is dropped.
    fn follow(&mut self, leader: NodeId) -> bool {
        let known = if self.role == Role::Leader {
            Some(self.id)
        } else {
            self.leader_id
        };
        if let Some(known) = known.filter(|known| *known != leader) {
            let detail = format!(
                "claims to lead term {} which {known} already leads",
                self.term
            );
            self.violation(leader, ViolationKind::SecondLeader, detail);
            return false;
        }
        if self.role != Role::Follower {
            let term = self.term;
            self.become_follower(term, Some(leader));
        }
        self.leader_id = Some(leader);
        self.heard_from_leader = true;
        self.election_elapsed = 0;
        true
    }

    /// Whether a leader was heard within the minimum election timeout.
    fn in_lease(&self) -> bool {
        self.leader_id.is_some() && self.election_elapsed < self.config.election_ticks
    }

    fn reject_vote(&mut self, message: &Message, term: Term, reason: VoteRejection) {
        let body = match message.body {
            MessageBody::PreVoteRequest { .. } => MessageBody::PreVoteResponse {
                reject: Some(reason),
            },
            _ => MessageBody::VoteResponse {
                reject: Some(reason),
            },
        };
        self.send_at(message.from, term, body);
    }

    fn handle_vote_request(
        &mut self,
        message: &Message,
        pre_vote: bool,
        last_log_index: u64,
        last_log_term: Term,
    ) -> Result<(), CoreError> {
        let from = message.from;
        let can_vote = self.vote == Some(from)
            || (self.vote.is_none() && self.leader_id.is_none())
            || (pre_vote && message.term > self.term);
        let term = self.term;
        if !can_vote {
            let reason = if self.vote.is_some() {
                VoteRejection::AlreadyVoted
            } else {
                VoteRejection::HasLeader
            };
            self.reject_vote(message, term, reason);
            return Ok(());
        }
        if !self.log.is_up_to_date(last_log_index, last_log_term)? {
            self.reject_vote(message, term, VoteRejection::LogNotUpToDate);
            return Ok(());
        }
        if pre_vote {
            self.send_at(
                from,
                message.term,
                MessageBody::PreVoteResponse { reject: None },
            );
        } else {
            assert_eq!(
                message.term, self.term,
                "a vote is given in the candidate's term"
            );
            self.vote = Some(from);
            self.reset_election_timer();
            // The vote must be durable before the candidate can count it.
            self.send_after_persist(from, MessageBody::VoteResponse { reject: None });
        }
        Ok(())
    }

    fn record_vote(
        &mut self,
        from: NodeId,
        granted: bool,
        pre_vote: bool,
    ) -> Result<(), CoreError> {
        self.votes.entry(from).or_insert(granted);
        match self.vote_result() {
            VoteResult::Pending => {}
            VoteResult::Won if pre_vote => self.campaign(false)?,
            VoteResult::Won => self.become_leader(),
            VoteResult::Lost => {
                let term = self.term;
                self.become_follower(term, None);
            }
        }
        Ok(())
    }

    /// Election timeout: ask for pre-votes first, so a member that cannot win
    /// does not disturb the group by raising the term.
    pub(super) fn campaign_pre_vote(&mut self) -> Result<(), CoreError> {
        self.role = Role::PreCandidate;
        self.leader_id = None;
        self.votes.clear();
        self.votes.insert(self.id, true);
        self.reset_election_timer();
        if self.vote_result() == VoteResult::Won {
            return self.campaign(false);
        }
        let last_log_index = self.log.last_index();
        let last_log_term = self.log.last_term()?;
        let next_term = self.term + 1;
        for peer in self.other_voters() {
            self.send_at(
                peer,
                next_term,
                MessageBody::PreVoteRequest {
                    last_log_index,
                    last_log_term,
                },
            );
        }
        Ok(())
    }

    /// Start a real election at the next term. `leadership_transfer` marks an
    /// election started by TimeoutNow (voters then skip leader stickiness).
    pub(super) fn campaign(&mut self, leadership_transfer: bool) -> Result<(), CoreError> {
        self.term += 1;
        self.vote = Some(self.id);
        self.role = Role::Candidate;
        self.leader_id = None;
        self.leader_match_index = 0;
        self.votes.clear();
        self.votes.insert(self.id, true);
        self.reset_election_timer();
        if self.vote_result() == VoteResult::Won {
            self.become_leader();
            return Ok(());
        }
        let last_log_index = self.log.last_index();
        let last_log_term = self.log.last_term()?;
        for peer in self.other_voters() {
            // Sent after our own term and vote are durable: a vote counted
            // for us must survive our crash.
            self.send_after_persist(
                peer,
                MessageBody::VoteRequest {
                    last_log_index,
                    last_log_term,
                    leadership_transfer,
                },
            );
        }
        Ok(())
    }

    /// Where the election stands, counting the votes of the voters in
    /// force only.
    fn vote_result(&self) -> VoteResult {
        let votes: BTreeMap<NodeId, bool> = self
            .votes
            .iter()
            .filter(|(id, _)| self.membership.is_voter(**id))
            .map(|(id, granted)| (*id, *granted))
            .collect();
        quorum::vote_result(self.membership.voters.len(), &votes)
    }

    /// The voters in force but this member.
    fn other_voters(&self) -> Vec<NodeId> {
        self.membership
            .voters
            .iter()
            .copied()
            .filter(|voter| *voter != self.id)
            .collect()
    }

    pub(super) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        assert!(
            term >= self.term,
            "terms never go back ({} to {term})",
            self.term
        );
        if term > self.term {
            self.term = term;
            self.vote = None;
            self.leader_match_index = 0;
        }
        if self.role == Role::Leader {
            self.step_down_as_leader();
        }
        self.role = Role::Follower;
        self.leader_id = leader;
        self.votes.clear();
        self.reset_election_timer();
    }

    fn step_down_as_leader(&mut self) {
        let leader = None;
        for request_id in self.read_only.take_all() {
            self.answer_read(request_id, Err(ReadError::NotLeader { leader }));
        }
        for (request_id, _) in std::mem::take(&mut self.reads_before_noop) {
            self.answer_read(request_id, Err(ReadError::NotLeader { leader }));
        }
        if let Some(transfer) = self.transfer.take() {
            self.transfer_outcomes.push(TransferOutcome::SteppedDown {
                target: transfer.target,
            });
        }
        self.progress.clear();
        self.appends_pending = false;
        self.noop_index = 0;
        self.leaving_ticks = None;
        self.term_unsynced = false;
    }

    pub(super) fn become_leader(&mut self) {
        assert_eq!(
            self.role,
            Role::Candidate,
            "only a candidate becomes leader"
        );
        assert_eq!(self.vote, Some(self.id));
        self.role = Role::Leader;
        self.leader_id = Some(self.id);
        self.heard_from_leader = true;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.keep_from_sent = None;
        self.preferred_cooldown_ticks = 0;
        // Won without another member's vote: nothing proves the term durable.
        self.term_unsynced = !self
            .votes
            .iter()
            .any(|(voter, granted)| *granted && *voter != self.id);
        let next_index = self.log.last_index() + 1;
        let (window, window_bytes) = (
            self.config.max_inflight_appends,
            self.config.max_inflight_bytes,
        );
        self.progress = self
            .peers
            .iter()
            .map(|peer| {
                let progress = Progress::new(next_index, window);
                (*peer, progress.with_max_inflight_bytes(window_bytes))
            })
            .collect();
        // The no-op commits the entries of earlier terms along with it.
        self.noop_index = self.append_own(EntryKind::NoOp, Bytes::new());
    }
}
