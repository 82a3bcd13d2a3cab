//! Outbound links to the other members, by numeric id.

use std::collections::HashMap;
use std::sync::Arc;

use crate::core::Message;
use crate::entry::NodeId;
use crate::metrics::Metrics;
use crate::net::outbound::{PeerLink, PeerLinkConfig, SendError};

use super::members::Member;

/// One self-reconnecting link per other member.
pub struct Peers {
    links: HashMap<NodeId, PeerLink<Message>>,
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
        let links = members
            .iter()
            .filter(|member| member.id != self_id)
            .map(|member| {
                let link = PeerLink::spawn(
                    member.name.clone(),
                    member.tcp_address.clone(),
                    config.clone(),
                );
                (member.id, link)
            })
            .collect();
        Peers { links, metrics }
    }

    /// Queues each message for its addressee. Delivery is best effort, as
    /// Raft expects: a dropped message is retransmitted by the protocol.
    pub fn send_all(&self, messages: Vec<Message>) {
        for message in messages {
            let Some(link) = self.links.get(&message.to) else {
                tracing::error!(to = message.to, "message for an unknown member dropped");
                continue;
            };
            match link.send(&message) {
                Ok(()) => {}
                Err(SendError::QueueFull { .. }) => {
                    self.metrics.peer_messages_dropped_total.inc();
                }
                Err(err) => tracing::warn!(peer = link.peer_id(), "send failed: {err}"),
            }
        }
    }
}
