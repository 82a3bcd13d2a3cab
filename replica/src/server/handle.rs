//! [`ReplicaHandle`]: the [`Engine`] the front ends (HTTP, binary protocol)
//! talk to. Writes, read points and transfers go to the raft loop as
//! inputs; committed entries are read straight from the log.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{oneshot, watch};

use crate::admin_client::AdminError;
use crate::api::{
    AddMember, Appended, ConsumerGroup, ConsumerGroups, Members, OffsetCommitted, PeerStatus, Role,
    Status, Transferred,
};
use crate::consumers::{validate_group_name, Applied, Condition, ConsumerState, OffsetCommit};
use crate::core;
use crate::engine::{
    AppendError, CommittedRange, Engine, MemberChange, MembershipError, OffsetError, ReadError,
    TransferError,
};
use crate::entry::{Entry, NodeId};
use crate::metrics::Metrics;
use crate::net::tls::{Tls, TlsFiles};
use crate::store::{Log, StoreError};

use super::input_queue::{InputSender, Refused};
use super::members::{not_leader_error, Member};
use super::raft_loop::{Input, OffsetReply, ProposeReply, Snapshot};

/// How long a transfer request waits for the new leader.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a linearizable read waits for the leader's own disk to catch
/// up with its commit index.
const READ_INDEX_WAIT: Duration = Duration::from_secs(5);

/// Most entries one range read returns.
const MAX_RANGE_ENTRIES: usize = 10_000;

/// Log reads (gets, range reads) running on the blocking pool at most; more
/// wait their turn, so a burst of readers cannot take every pool thread.
const MAX_CONCURRENT_READS: usize = 16;

/// The replica as its front ends see it.
pub struct ReplicaHandle {
    group: String,
    self_name: String,
    /// This member's incarnation (see `identity`).
    incarnation: u64,
    /// The group's id (see `identity`).
    group_id: String,
    /// The `--peers` list: names for ids until the raft loop publishes the
    /// configuration in force.
    bootstrap_members: Vec<Member>,
    inputs: InputSender,
    /// Bounds the log reads running on the blocking pool.
    read_permits: tokio::sync::Semaphore,
    snapshot: watch::Receiver<Snapshot>,
    log: Arc<Log>,
    consumers: Arc<RwLock<ConsumerState>>,
    metrics: Arc<Metrics>,
    max_entry_bytes: usize,
    ready_max_lag: u64,
    /// This member's TLS, to ask another member for its status and to
    /// report its certificate.
    tls: Option<Tls>,
}

/// What a [`ReplicaHandle`] is made of.
pub struct HandleParts {
    /// The group name.
    pub group: String,
    /// This member's name.
    pub self_name: String,
    /// This member's incarnation.
    pub incarnation: u64,
    /// The group's id.
    pub group_id: String,
    /// The `--peers` list.
    pub members: Vec<Member>,
    /// The raft loop's inputs.
    pub inputs: InputSender,
    /// The raft loop's published state.
    pub snapshot: watch::Receiver<Snapshot>,
    /// The log, for reads.
    pub log: Arc<Log>,
    /// The consumer groups' offsets, as the raft loop applies them.
    pub consumers: Arc<RwLock<ConsumerState>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Largest payload accepted.
    pub max_entry_bytes: usize,
    /// Readiness: how far behind the commit index a member may be.
    pub ready_max_lag: u64,
    /// This member's TLS (HTTPS to other members); `None`: plaintext.
    pub tls: Option<Tls>,
}

impl ReplicaHandle {
    /// A handle over the parts.
    pub fn new(parts: HandleParts) -> ReplicaHandle {
        ReplicaHandle {
            group: parts.group,
            self_name: parts.self_name,
            incarnation: parts.incarnation,
            group_id: parts.group_id,
            bootstrap_members: parts.members,
            inputs: parts.inputs,
            snapshot: parts.snapshot,
            log: parts.log,
            consumers: parts.consumers,
            metrics: parts.metrics,
            max_entry_bytes: parts.max_entry_bytes,
            ready_max_lag: parts.ready_max_lag,
            tls: parts.tls,
            read_permits: tokio::sync::Semaphore::new(MAX_CONCURRENT_READS),
        }
    }

    /// The members in force (the `--peers` list before the first snapshot).
    fn members_now(&self) -> Arc<Vec<Member>> {
        let members = self.snapshot.borrow().members.clone();
        if members.is_empty() {
            Arc::new(self.bootstrap_members.clone())
        } else {
            members
        }
    }

    fn name_of(&self, id: NodeId) -> String {
        self.members_now()
            .iter()
            .chain(self.bootstrap_members.iter())
            .find(|member| member.id == id)
            .map_or_else(|| format!("#{id}"), |member| member.name.clone())
    }

    /// Whether this member leads now.
    pub fn is_leader(&self) -> bool {
        self.snapshot.borrow().role == Some(core::Role::Leader)
    }

    /// The error for a write sent to a non-leader, from the snapshot.
    fn not_leader(&self, snapshot: &Snapshot) -> AppendError {
        if let Some(reason) = &snapshot.stopped {
            return AppendError::Unavailable {
                reason: reason.clone(),
            };
        }
        let members = if snapshot.members.is_empty() {
            &self.bootstrap_members
        } else {
            &*snapshot.members
        };
        not_leader_error(members, snapshot.leader, snapshot.term)
    }

    /// Proposes a batch; `reply` is called exactly once with the outcome,
    /// at once when the batch is refused here. Never waits, so front ends
    /// call it from any thread.
    pub fn propose(&self, payloads: Vec<Bytes>, reply: ProposeReply) {
        if let Err(err) = self.check_proposal(&payloads) {
            reply(Err(err));
            return;
        }
        let started = Instant::now();
        let metrics = self.metrics.clone();
        let reply: ProposeReply = Box::new(move |result| {
            if result.is_ok() {
                metrics.append_latency.observe(started.elapsed());
            }
            reply(result);
        });
        match self.inputs.offer(Input::Propose { payloads, reply }) {
            Ok(()) => {}
            Err(Refused::Full(Input::Propose { reply, .. })) => {
                self.metrics.appends_refused_busy_total.inc();
                reply(Err(AppendError::Overloaded {
                    reason: "the consensus loop's input queue is full".into(),
                }));
            }
            Err(Refused::Closed(Input::Propose { reply, .. })) => {
                reply(Err(self.stopped_error()));
            }
            // Only a proposal was offered.
            Err(Refused::Full(_) | Refused::Closed(_)) => {}
        }
    }

    fn check_proposal(&self, payloads: &[Bytes]) -> Result<(), AppendError> {
        {
            let snapshot = self.snapshot.borrow();
            if snapshot.role != Some(core::Role::Leader) || snapshot.stopped.is_some() {
                return Err(self.not_leader(&snapshot));
            }
        }
        match payloads.iter().find(|p| p.len() > self.max_entry_bytes) {
            Some(payload) => Err(AppendError::TooLarge {
                size_bytes: payload.len(),
                max_bytes: self.max_entry_bytes,
            }),
            None => Ok(()),
        }
    }

    /// Appends a batch; resolves once all of it is committed.
    pub async fn append_batch(&self, payloads: Vec<Bytes>) -> Result<Appended, AppendError> {
        let (sender, answer) = oneshot::channel();
        self.propose(
            payloads,
            Box::new(move |result| {
                let _ = sender.send(result);
            }),
        );
        let (index, term) = answer.await.map_err(|_| self.stopped_error())??;
        Ok(Appended { index, term })
    }

    fn stopped_error(&self) -> AppendError {
        AppendError::Unavailable {
            reason: "the replica is stopping".into(),
        }
    }

    /// Waits until `index` is readable here, or `wait` passed; the readable
    /// index then.
    async fn wait_readable(&self, index: u64, wait: Duration) -> u64 {
        let mut snapshot = self.snapshot.clone();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let readable = snapshot.borrow_and_update().readable_index;
            if readable >= index {
                return readable;
            }
            match tokio::time::timeout_at(deadline, snapshot.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return snapshot.borrow().readable_index,
            }
        }
    }

    fn read_error(&self, index: u64, err: StoreError) -> ReadError {
        match err {
            StoreError::Compacted { first_index, .. } => {
                ReadError::Compacted { index, first_index }
            }
            StoreError::Unavailable { .. } => ReadError::NotCommitted {
                index,
                commit_index: self.snapshot.borrow().readable_index,
            },
            err => ReadError::Storage {
                reason: err.to_string(),
            },
        }
    }

    /// Hands leadership over; `to` is a member name.
    pub async fn transfer(&self, to: Option<String>) -> Result<Transferred, TransferError> {
        let target = match to {
            None => None,
            Some(name) => match self.members_now().iter().find(|member| member.name == name) {
                Some(member) => Some(member.id),
                None => {
                    return Err(TransferError::BadTarget {
                        reason: format!("{name:?} is not a member of group {:?}", self.group),
                    })
                }
            },
        };
        let (reply, answer) = oneshot::channel();
        let stopping = || TransferError::Failed {
            reason: "the replica is stopping".into(),
        };
        if self.inputs.send(Input::Transfer { target, reply }).is_err() {
            return Err(stopping());
        }
        match tokio::time::timeout(TRANSFER_TIMEOUT, answer).await {
            Ok(Ok(Ok((leader, term)))) => Ok(Transferred {
                leader_id: self.name_of(leader),
                term,
            }),
            Ok(Ok(Err(err))) => Err(err),
            Ok(Err(_)) => Err(stopping()),
            Err(_) => Err(TransferError::Failed {
                reason: format!("no new leader within {} s", TRANSFER_TIMEOUT.as_secs()),
            }),
        }
    }

    /// Runs a log read on the blocking pool, at most [`MAX_CONCURRENT_READS`]
    /// at a time: a slow disk then delays readers, not the network thread
    /// that carries heartbeats.
    async fn read_off_thread<T: Send + 'static>(
        &self,
        read: impl FnOnce() -> crate::store::Result<T> + Send + 'static,
    ) -> crate::store::Result<T> {
        let _permit = self
            .read_permits
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        tokio::task::spawn_blocking(read)
            .await
            .map_err(|err| StoreError::Invalid(format!("a log read task failed: {err}")))?
    }

    /// The groups with their lag behind the commit index, in name order:
    /// `only` that one, else the first `max_groups`; and how many groups
    /// there are in all.
    fn consumer_lags(&self, only: Option<&str>, max_groups: usize) -> (Vec<ConsumerGroup>, usize) {
        let published_commit = self.snapshot.borrow().commit_index;
        let state = self
            .consumers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // The state may be a round ahead of the published snapshot.
        let commit_index = published_commit.max(state.applied_index());
        let group = |(group, offset): (&str, u64)| ConsumerGroup {
            group: group.to_string(),
            offset,
            lag: commit_index.saturating_add(1).saturating_sub(offset),
        };
        let groups = match only {
            Some(name) => state
                .offset(name)
                .map(|offset| group((name, offset)))
                .into_iter()
                .collect(),
            None => state.groups().take(max_groups).map(group).collect(),
        };
        (groups, state.len())
    }

    /// A receiver of the raft loop's snapshots (to wait for it to stop).
    pub fn stopped_watch(&self) -> watch::Receiver<Snapshot> {
        self.snapshot.clone()
    }
}

impl Engine for ReplicaHandle {
    fn status(&self) -> Status {
        let snapshot = self.snapshot.borrow().clone();
        let role = match snapshot.role {
            Some(core::Role::Leader) => Role::Leader,
            Some(core::Role::Candidate | core::Role::PreCandidate) => Role::Candidate,
            Some(core::Role::Follower) | None if snapshot.learner => Role::Learner,
            Some(core::Role::Follower) | None => Role::Follower,
        };
        let peers = snapshot
            .peers
            .iter()
            .map(|(id, match_index, last_contact_ms)| PeerStatus {
                id: self.name_of(*id),
                match_index: *match_index,
                lag: snapshot.last_index.saturating_sub(*match_index),
                last_contact_ms: *last_contact_ms,
            })
            .collect();
        Status {
            group: self.group.clone(),
            id: self.self_name.clone(),
            version: crate::version().to_string(),
            role,
            term: snapshot.term,
            leader_id: snapshot.leader.map(|leader| self.name_of(leader)),
            first_index: snapshot.first_index,
            last_index: snapshot.last_index,
            last_term: snapshot.last_term,
            commit_index: snapshot.commit_index,
            peers,
            leader_commit_index: snapshot.leader_commit_index,
            lag: snapshot_lag(&snapshot),
            configuration: Some(Box::new(snapshot.configuration.clone())),
            incarnation: self.incarnation,
            group_id: self.group_id.clone(),
            certificate_not_after_s: self.tls.as_ref().and_then(Tls::certificate_not_after_s),
        }
    }

    fn members(&self) -> Members {
        self.snapshot.borrow().configuration.clone()
    }

    async fn change_members(&self, change: MemberChange) -> Result<Members, MembershipError> {
        self.change_members_inner(change).await
    }

    fn readiness(&self) -> Result<(), String> {
        let snapshot = self.snapshot.borrow();
        if let Some(reason) = &snapshot.stopped {
            return Err(reason.clone());
        }
        if !snapshot.heard_from_leader {
            return Err("has not heard from a leader since it started".into());
        }
        if snapshot.leader.is_none() {
            return Err(format!("no leader known in term {}", snapshot.term));
        }
        if let Some(until) = snapshot.stale_until {
            let now = Instant::now();
            if now < until {
                return Err(format!(
                    "resumed after a pause; waiting {} ms for the leader's current figures",
                    (until - now).as_millis()
                ));
            }
        }
        if snapshot.role != Some(core::Role::Leader) {
            // After a pause (SIGSTOP, a long GC-like stall) the figures are
            // as old as the pause: wait for fresh word from the leader.
            let silent = snapshot
                .leader_contact_at
                .map_or(Duration::MAX, |at| at.elapsed());
            if silent > snapshot.leader_silence_limit {
                return Err(format!(
                    "no word from the leader for {} ms",
                    silent.as_millis()
                ));
            }
        }
        let lag = snapshot_lag(&snapshot);
        if lag > self.ready_max_lag {
            return Err(format!(
                "{lag} entries behind the leader's commit index {} (bound {})",
                snapshot.leader_commit_index.unwrap_or(0),
                self.ready_max_lag
            ));
        }
        Ok(())
    }

    fn metrics(&self) -> String {
        self.metrics.set_status(self.status());
        let (exported, groups_total) =
            self.consumer_lags(None, crate::metrics::MAX_EXPORTED_CONSUMER_GROUPS);
        self.metrics.set_consumer_lags(
            exported
                .into_iter()
                .map(|group| (group.group, group.lag))
                .collect(),
            groups_total,
        );
        self.metrics.render()
    }

    fn max_entry_bytes(&self) -> usize {
        self.max_entry_bytes
    }

    async fn append(&self, payload: Bytes) -> Result<Appended, AppendError> {
        self.append_batch(vec![payload]).await
    }

    async fn read_index(&self) -> Result<u64, AppendError> {
        {
            let snapshot = self.snapshot.borrow();
            if snapshot.role != Some(core::Role::Leader) || snapshot.stopped.is_some() {
                return Err(self.not_leader(&snapshot));
            }
        }
        let (reply, answer) = oneshot::channel();
        match self.inputs.offer(Input::ReadIndex { reply }) {
            Ok(()) => {}
            Err(Refused::Full(_)) => {
                return Err(AppendError::Overloaded {
                    reason: "the consensus loop's input queue is full".into(),
                })
            }
            Err(Refused::Closed(_)) => return Err(self.stopped_error()),
        }
        let index = answer.await.map_err(|_| self.stopped_error())??;
        // The leader's commit index may briefly run ahead of its own disk.
        let readable = self.wait_readable(index, READ_INDEX_WAIT).await;
        if readable < index {
            return Err(AppendError::Unavailable {
                reason: format!(
                    "this member's log is not yet readable up to the read index {index}"
                ),
            });
        }
        Ok(index)
    }

    async fn entry(&self, index: u64) -> Result<Entry, ReadError> {
        if index == 0 {
            return Err(ReadError::BadRequest {
                reason: "indexes start at 1".into(),
            });
        }
        let (commit, mut readable) = {
            let snapshot = self.snapshot.borrow();
            (snapshot.commit_index, snapshot.readable_index)
        };
        if index > readable && index <= commit {
            // Committed (a majority has it) but not yet on this member's
            // disk: a leader may count two followers before its own write.
            // A writer reading back what it was just told is committed must
            // find it, so wait for this member's write rather than say no.
            readable = self.wait_readable(index, READ_INDEX_WAIT).await;
        }
        if index > readable {
            return Err(ReadError::NotCommitted {
                index,
                commit_index: readable,
            });
        }
        let log = self.log.clone();
        self.read_off_thread(move || log.entry(index))
            .await
            .map_err(|err| self.read_error(index, err))
    }

    async fn range(
        &self,
        from: u64,
        max_bytes: usize,
        wait_ms: u64,
    ) -> Result<CommittedRange, ReadError> {
        if from == 0 {
            return Err(ReadError::BadRequest {
                reason: "indexes start at 1".into(),
            });
        }
        let readable = self
            .wait_readable(from, Duration::from_millis(wait_ms))
            .await;
        if from > readable {
            return Ok(CommittedRange {
                entries: Vec::new(),
                commit_index: readable,
            });
        }
        let count = usize::try_from(readable - from + 1)
            .unwrap_or(usize::MAX)
            .min(MAX_RANGE_ENTRIES);
        let log = self.log.clone();
        let entries = self
            .read_off_thread(move || log.entries(from, count, max_bytes as u64))
            .await
            .map_err(|err| self.read_error(from, err))?;
        Ok(CommittedRange {
            entries,
            commit_index: readable,
        })
    }

    async fn transfer_leadership(&self, to: Option<String>) -> Result<Transferred, TransferError> {
        self.transfer(to).await
    }

    fn consumer_groups(&self) -> ConsumerGroups {
        ConsumerGroups {
            groups: self.consumer_lags(None, usize::MAX).0,
        }
    }

    fn consumer_group(&self, group: &str) -> Option<ConsumerGroup> {
        self.consumer_lags(Some(group), 1).0.pop()
    }

    async fn commit_offset(
        &self,
        group: String,
        offset: u64,
        expected: Option<u64>,
    ) -> Result<OffsetCommitted, OffsetError> {
        validate_group_name(&group).map_err(|err| OffsetError::BadRequest {
            reason: err.to_string(),
        })?;
        {
            let snapshot = self.snapshot.borrow();
            if snapshot.role != Some(core::Role::Leader) || snapshot.stopped.is_some() {
                return Err(OffsetError::Write(self.not_leader(&snapshot)));
            }
        }
        let condition = expected.map_or(Condition::None, Condition::Expected);
        let commit = OffsetCommit {
            group,
            offset,
            condition,
        };
        let (sender, answer) = oneshot::channel();
        let reply: OffsetReply = Box::new(move |result| {
            let _ = sender.send(result);
        });
        match self.inputs.offer(Input::ProposeOffset { commit, reply }) {
            Ok(()) => {}
            Err(Refused::Full(_)) => {
                self.metrics.appends_refused_busy_total.inc();
                return Err(OffsetError::Write(AppendError::Overloaded {
                    reason: "the consensus loop's input queue is full".into(),
                }));
            }
            Err(Refused::Closed(_)) => return Err(OffsetError::Write(self.stopped_error())),
        }
        match answer.await {
            Ok(Ok(Applied::Stored { group, offset })) => Ok(OffsetCommitted { group, offset }),
            Ok(Ok(Applied::Refused(refusal))) => Err(OffsetError::Refused(refusal)),
            Ok(Err(err)) => Err(OffsetError::Write(err)),
            Err(_) => Err(OffsetError::Write(self.stopped_error())),
        }
    }
}

impl ReplicaHandle {
    /// Sends a membership change to the raft loop and waits for its end.
    async fn change_members_inner(&self, change: MemberChange) -> Result<Members, MembershipError> {
        let change = match change {
            MemberChange::Add(add) if add.incarnation.is_none() => MemberChange::Add(
                with_incarnation(add, self.tls.as_ref().map(|tls| tls.files().clone())).await?,
            ),
            other => other,
        };
        {
            let snapshot = self.snapshot.borrow();
            if snapshot.role != Some(core::Role::Leader) || snapshot.stopped.is_some() {
                return Err(match self.not_leader(&snapshot) {
                    AppendError::NotLeader {
                        leader_id,
                        leader_http,
                        ..
                    } => MembershipError::NotLeader {
                        leader_id: Some(leader_id),
                        leader_http,
                    },
                    other => MembershipError::Append(other),
                });
            }
        }
        let (reply, answer) = oneshot::channel();
        match self.inputs.offer(Input::ChangeMembers { change, reply }) {
            Ok(()) => {}
            Err(Refused::Full(_)) => {
                return Err(MembershipError::Append(AppendError::Overloaded {
                    reason: "the consensus loop's input queue is full".into(),
                }))
            }
            Err(Refused::Closed(_)) => return Err(MembershipError::Append(self.stopped_error())),
        }
        answer
            .await
            .unwrap_or_else(|_| Err(MembershipError::Append(self.stopped_error())))
    }
}

/// The contents of `files`, for an HTTPS client.
fn client_tls(files: &TlsFiles) -> Result<crate::admin_client::ClientTls, AdminError> {
    crate::admin_client::ClientTls::read(&files.ca, Some((&files.cert, &files.key))).map_err(
        |reason| AdminError::Unreachable {
            url: files.cert.display().to_string(),
            reason: format!("this member's TLS files: {reason}"),
        },
    )
}

/// How long the leader waits for a member to be added to say its
/// incarnation.
const INCARNATION_ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// `add` with the incarnation the member reports at its HTTP address: the
/// configuration must name the incarnation that runs there, not assume the
/// bootstrap one.
async fn with_incarnation(
    mut add: AddMember,
    tls: Option<TlsFiles>,
) -> Result<AddMember, MembershipError> {
    // A malformed request is told so before anyone is asked anything.
    super::reconfigure::check_add(&add)?;
    let http = match &add.http_address {
        Some(http) => http.clone(),
        None => match add.address.rsplit_once(':') {
            Some((host, _)) => format!("{host}:8080"),
            None => {
                return Err(MembershipError::BadRequest {
                    reason: format!("address {:?} has no port", add.address),
                })
            }
        },
    };
    let asked = http.clone();
    let status = tokio::task::spawn_blocking(move || {
        // This member's own certificate (read now: it may have rotated)
        // gives the read right `/status` needs.
        let credentials = crate::admin_client::Credentials {
            tls: tls.as_ref().map(client_tls).transpose()?,
            token: None,
        };
        crate::admin_client::AdminClient::with_credentials(
            &asked,
            INCARNATION_ASK_TIMEOUT,
            &credentials,
        )?
        .status()
    })
    .await
    .map_err(|err| MembershipError::Refused {
        reason: format!("asking {http} for its incarnation: {err}"),
    })?
    .map_err(|err| MembershipError::Refused {
        reason: format!(
            "{} must be running to be added, and say its incarnation at {http}: {err} \
             (or give \"incarnation\" in the request)",
            add.id
        ),
    })?;
    if status.id != add.id {
        return Err(MembershipError::BadRequest {
            reason: format!("{http} is member {:?}, not {:?}", status.id, add.id),
        });
    }
    add.incarnation = Some(status.incarnation);
    Ok(add)
}

/// How far this member's disk is behind the leader's commit index.
fn snapshot_lag(snapshot: &Snapshot) -> u64 {
    snapshot
        .leader_commit_index
        .map_or(0, |commit| commit.saturating_sub(snapshot.last_index))
}
