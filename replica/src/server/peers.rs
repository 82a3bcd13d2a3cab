//! Outbound links to the other members, by numeric id, following the
//! configuration in force.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::core::Message;
use crate::entry::NodeId;
use crate::metrics::Metrics;
use crate::net::outbound::{PeerLink, PeerLinkConfig, SendError};

use super::members::Member;

/// One self-reconnecting link per other member.
pub struct Peers {
    self_id: NodeId,
    /// Links by id, with the address each was made for.
    links: Mutex<HashMap<NodeId, (String, PeerLink<Message>)>>,
    config: PeerLinkConfig,
    /// The runtime links run on (the raft loop calls in from its own thread).
    runtime: tokio::runtime::Handle,
    metrics: Arc<Metrics>,
}

impl Peers {
    /// Starts a link to every member but `self_id`. Needs a tokio runtime.
    pub fn start(
        self_id: NodeId,
        members: &[Member],
        config: &PeerLinkConfig,
        metrics: Arc<Metrics>,
    ) -> Peers {
        let peers = Peers {
            self_id,
            links: Mutex::new(HashMap::new()),
            config: config.clone(),
            runtime: tokio::runtime::Handle::current(),
            metrics,
        };
        peers.set_members(members);
        peers
    }

    /// Keeps a link to exactly the members of `members` but this one: new
    /// members get one, removed ones lose theirs (dropping a link stops it),
    /// a moved member gets a fresh one.
    pub fn set_members(&self, members: &[Member]) {
        let _entered = self.runtime.enter();
        let mut links = self
            .links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        links.retain(|id, (address, _)| {
            members
                .iter()
                .any(|member| member.id == *id && member.tcp_address == *address)
        });
        for member in members.iter().filter(|member| member.id != self.self_id) {
            links.entry(member.id).or_insert_with(|| {
                let link = PeerLink::spawn(
                    member.peer_name.clone(),
                    member.tcp_address.clone(),
                    self.config.clone(),
                );
                (member.tcp_address.clone(), link)
            });
        }
    }

    /// Queues each message for its addressee. Delivery is best effort, as
    /// Raft expects: a dropped message is retransmitted by the protocol.
    pub fn send_all(&self, messages: Vec<Message>) {
        let links = self
            .links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for message in messages {
            let Some((_, link)) = links.get(&message.to) else {
                // A member just removed, or one not known yet.
                tracing::debug!(to = message.to, "message for a non-member dropped");
                continue;
            };
            match link.send(&message) {
                Ok(()) => {}
                Err(SendError::QueueFull { .. }) => {
                    self.metrics.peer_messages_dropped_total.inc();
                }
                // A member of an older build during a rolling upgrade.
                Err(err @ SendError::PeerTooOld { .. }) => {
                    tracing::debug!(peer = link.peer_id(), "not sent: {err}");
                }
                Err(err) => tracing::warn!(peer = link.peer_id(), "send failed: {err}"),
            }
        }
    }
}

/// A core message needs the version its kind was added in.
impl crate::net::frame::WireVersion for Message {
    fn wire_version(&self) -> u8 {
        self.body.wire_version()
    }
}
