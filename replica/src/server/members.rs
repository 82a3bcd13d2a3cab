//! The member list (`--peers id=host:port,...`) and the numeric ids the
//! consensus core uses.
//!
//! A member's numeric id is a hash of its name, as etcd derives member ids:
//! it stays the same when the list is reordered or a pod restarts, so a
//! persisted vote always names the same member.

use std::collections::HashSet;

use crate::engine::AppendError;
use crate::entry::{NodeId, Term};

/// One member of the group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its name (in Kubernetes, the pod name).
    pub name: String,
    /// The name it goes by among peers: `name`, or `name#<incarnation>`
    /// for a member that joined after the bootstrap (see `identity`).
    pub peer_name: String,
    /// The id the consensus core knows it by.
    pub id: NodeId,
    /// Its binary protocol address, `host:port`, resolved at every connect.
    pub tcp_address: String,
    /// Its HTTP address, `host:port`, for redirects.
    pub http_address: String,
}

/// Why a member list is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembersError {
    /// The list is empty.
    #[error("the member list is empty; give id=host:port,...")]
    Empty,
    /// One item is not `id=host:port`.
    #[error("member {item:?} is not of the form id=host:port: {reason}")]
    Malformed {
        /// The offending item.
        item: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A name appears twice.
    #[error("member {name:?} is listed twice")]
    Duplicate {
        /// The name.
        name: String,
    },
    /// Two names hash to the same id (astronomically unlikely; rename one).
    #[error("members {first:?} and {second:?} hash to the same id; rename one")]
    IdCollision {
        /// One name.
        first: String,
        /// The other.
        second: String,
    },
    /// This member's own id is not in the list.
    #[error("this member's id {id:?} is not in the member list {names:?}")]
    SelfMissing {
        /// This member's id.
        id: String,
        /// The names in the list.
        names: Vec<String>,
    },
    /// The HTTP address list names a member that is not in the member list.
    #[error("HTTP address given for {name:?}, which is not a member")]
    UnknownHttpMember {
        /// The name.
        name: String,
    },
}

/// The answer to a write sent to a member that does not lead: a redirect to
/// `leader` when it is a known member, else "no leader" naming the term.
pub fn not_leader_error(members: &[Member], leader: Option<NodeId>, term: Term) -> AppendError {
    match leader.and_then(|leader| members.iter().find(|member| member.id == leader)) {
        Some(member) => AppendError::NotLeader {
            leader_id: member.name.clone(),
            leader_http: Some(member.http_address.clone()),
            leader_tcp: Some(member.tcp_address.clone()),
        },
        None => AppendError::NoLeader {
            reason: format!("no leader is known in term {term}; an election is under way"),
        },
    }
}

pub use crate::membership::node_id_of;

/// Parses `id=host:port,id=host:port,...` into (name, address) pairs.
pub fn parse_address_list(list: &str) -> Result<Vec<(String, String)>, MembersError> {
    let mut pairs = Vec::new();
    for item in list
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let malformed = |reason: &str| MembersError::Malformed {
            item: item.to_string(),
            reason: reason.to_string(),
        };
        let (name, address) = item.split_once('=').ok_or_else(|| malformed("no '='"))?;
        let (name, address) = (name.trim(), address.trim());
        if name.is_empty() {
            return Err(malformed("empty id"));
        }
        if name.contains('#') {
            // `name#<incarnation>` is how a joined member goes by among peers.
            return Err(malformed("'#' is reserved in ids"));
        }
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| malformed("address has no ':port'"))?;
        if host.is_empty() {
            return Err(malformed("empty host"));
        }
        if port.parse::<u16>().map_or(true, |port| port == 0) {
            return Err(malformed("port is not a number from 1 to 65535"));
        }
        pairs.push((name.to_string(), address.to_string()));
    }
    Ok(pairs)
}

/// The whole member list, checked: unique names and ids, `self_name` in it.
///
/// `http_addresses` gives members' HTTP addresses (`id=host:port,...`);
/// a member not in it is taken to serve HTTP on its binary protocol host
/// at `default_http_port` (as in Kubernetes, where every pod uses 8080).
pub fn parse_members(
    self_name: &str,
    peers: &str,
    http_addresses: &str,
    default_http_port: u16,
) -> Result<Vec<Member>, MembersError> {
    let members = parse_member_list(peers, http_addresses, default_http_port)?;
    if !members.iter().any(|member| member.name == self_name) {
        return Err(MembersError::SelfMissing {
            id: self_name.to_string(),
            names: members.iter().map(|member| member.name.clone()).collect(),
        });
    }
    Ok(members)
}

/// A member list, checked as [`parse_members`] does, without requiring any
/// member in particular: that of a member joining a running group, which
/// need not be in it (it only tells where the group can be reached).
pub fn parse_member_list(
    peers: &str,
    http_addresses: &str,
    default_http_port: u16,
) -> Result<Vec<Member>, MembersError> {
    let pairs = parse_address_list(peers)?;
    if pairs.is_empty() {
        return Err(MembersError::Empty);
    }
    let http = parse_address_list(http_addresses)?;
    let mut names = HashSet::new();
    let mut members: Vec<Member> = Vec::with_capacity(pairs.len());
    for (name, tcp_address) in pairs {
        if !names.insert(name.clone()) {
            return Err(MembersError::Duplicate { name });
        }
        let id = node_id_of(&name);
        if let Some(other) = members.iter().find(|member| member.id == id) {
            return Err(MembersError::IdCollision {
                first: other.name.clone(),
                second: name,
            });
        }
        let http_address = match http.iter().find(|(http_name, _)| *http_name == name) {
            Some((_, address)) => address.clone(),
            None => {
                let host = tcp_address
                    .rsplit_once(':')
                    .map_or(tcp_address.as_str(), |(host, _)| host);
                format!("{host}:{default_http_port}")
            }
        };
        members.push(Member {
            peer_name: name.clone(),
            name,
            id,
            tcp_address,
            http_address,
        });
    }
    if let Some((name, _)) = http.iter().find(|(name, _)| !names.contains(name)) {
        return Err(MembersError::UnknownHttpMember { name: name.clone() });
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_kubernetes_member_list() {
        let members = parse_members(
            "orders-1",
            "orders-0=orders-0.orders-peers.ns.svc:20911, orders-1=orders-1.orders-peers.ns.svc:20911",
            "",
            8080,
        )
        .unwrap();
        assert_eq!(members.len(), 2);
        assert_eq!(members[1].name, "orders-1");
        assert_eq!(members[1].tcp_address, "orders-1.orders-peers.ns.svc:20911");
        assert_eq!(members[1].http_address, "orders-1.orders-peers.ns.svc:8080");
        assert_eq!(members[0].id, node_id_of("orders-0"));
        assert_ne!(members[0].id, members[1].id);
    }

    #[test]
    fn ids_do_not_depend_on_order_and_are_never_zero() {
        assert_eq!(node_id_of("a"), node_id_of("a"));
        assert_ne!(node_id_of("a"), node_id_of("b"));
        assert_ne!(node_id_of(""), 0);
    }

    #[test]
    fn http_addresses_override_the_default() {
        let members = parse_members(
            "a",
            "a=127.0.0.1:20001,b=127.0.0.1:20002",
            "b=127.0.0.1:18002",
            8080,
        )
        .unwrap();
        assert_eq!(members[0].http_address, "127.0.0.1:8080");
        assert_eq!(members[1].http_address, "127.0.0.1:18002");
    }

    #[test]
    fn bad_lists_are_refused_with_the_reason() {
        let cases = [
            ("", MembersError::Empty),
            (
                "a=host",
                MembersError::Malformed {
                    item: "a=host".into(),
                    reason: "address has no ':port'".into(),
                },
            ),
            (
                "a=host:0",
                MembersError::Malformed {
                    item: "a=host:0".into(),
                    reason: "port is not a number from 1 to 65535".into(),
                },
            ),
            (
                "host:1",
                MembersError::Malformed {
                    item: "host:1".into(),
                    reason: "no '='".into(),
                },
            ),
            ("a=h:1,a=h:2", MembersError::Duplicate { name: "a".into() }),
            (
                "a#1=h:1",
                MembersError::Malformed {
                    item: "a#1=h:1".into(),
                    reason: "'#' is reserved in ids".into(),
                },
            ),
            (
                "b=h:1",
                MembersError::SelfMissing {
                    id: "a".into(),
                    names: vec!["b".into()],
                },
            ),
        ];
        for (list, expected) in cases {
            assert_eq!(parse_members("a", list, "", 8080), Err(expected), "{list}");
        }
        assert_eq!(
            parse_members("a", "a=h:1", "z=h:2", 8080),
            Err(MembersError::UnknownHttpMember { name: "z".into() })
        );
        // A joining member need not be in the list it reaches the group by.
        assert_eq!(parse_member_list("b=h:1", "", 8080).unwrap().len(), 1);
    }
}
