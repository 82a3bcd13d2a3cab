//! Turning an admin's configuration change (by name) into the next
//! configuration, and the core's refusals into answers.

use crate::api::AddMember;
use crate::core::{self, ChangeRefusal};
use crate::engine::{AppendError, MemberChange, MembershipError};
use crate::entry::NodeId;
use crate::membership::{Change, Configuration, ConfigurationError};

use super::members::{parse_address_list, Member};

/// The HTTP port assumed for a member added without an HTTP address, as in
/// Kubernetes where every pod serves on 8080.
const DEFAULT_HTTP_PORT: u16 = 8080;

/// The configuration `change` makes of `current`, or why it cannot be made.
pub fn next_configuration(
    current: &Configuration,
    change: &MemberChange,
) -> Result<Configuration, MembershipError> {
    let change = match change {
        MemberChange::Add(add) => add_learner(add)?,
        MemberChange::Promote(name) => Change::Promote { name: name.clone() },
        MemberChange::Remove(name) => Change::Remove { name: name.clone() },
    };
    current.with_change(&change).map_err(|err| match err {
        ConfigurationError::UnknownMember(_) => MembershipError::UnknownMember {
            reason: err.to_string(),
        },
        ConfigurationError::BadMember { .. } | ConfigurationError::Malformed(_) => {
            MembershipError::BadRequest {
                reason: err.to_string(),
            }
        }
        _ => MembershipError::Refused {
            reason: err.to_string(),
        },
    })
}

/// Whether an add request is well formed: a name, and `host:port`
/// addresses.
pub fn check_add(add: &AddMember) -> Result<(), MembershipError> {
    add_learner(add).map(|_| ())
}

/// An add request, checked: a name, and `host:port` addresses.
fn add_learner(add: &AddMember) -> Result<Change, MembershipError> {
    let bad = |reason: String| MembershipError::BadRequest { reason };
    check_name(&add.id).map_err(bad)?;
    let pairs = parse_address_list(&format!("{}={}", add.id, add.address))
        .map_err(|err| bad(err.to_string()))?;
    if pairs.len() != 1 || add.id.contains(',') {
        return Err(bad(format!("{:?} is not a member name", add.id)));
    }
    let http_address = match &add.http_address {
        Some(http) => {
            parse_address_list(&format!("{}={http}", add.id))
                .map_err(|err| bad(err.to_string()))?;
            http.clone()
        }
        None => {
            let host = add.address.rsplit_once(':').map_or("", |(host, _)| host);
            format!("{host}:{DEFAULT_HTTP_PORT}")
        }
    };
    Ok(Change::AddLearner {
        name: add.id.clone(),
        incarnation: add.incarnation.unwrap_or(0),
        address: add.address.clone(),
        http_address,
    })
}

/// Longest member name: a Kubernetes pod name's limit.
const MAX_NAME_BYTES: usize = 253;

/// A member name is what Kubernetes allows in a pod name, give or take
/// case: letters, digits, `-`, `.` and `_`, starting with a letter or a
/// digit. `#` is kept for incarnations (`name#<incarnation>`), and `=` and
/// `,` for member lists.
fn check_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    let starts_well = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > MAX_NAME_BYTES || !starts_well || !name.chars().all(allowed)
    {
        return Err(format!(
            "{name:?} is not a member name: 1 to {MAX_NAME_BYTES} letters, digits, '-', '.' or \
             '_', starting with a letter or digit"
        ));
    }
    Ok(())
}

/// What the caller of a change is told when the core refused it.
pub fn refusal(
    err: core::ProposeError,
    member: impl Fn(NodeId) -> Option<Member>,
    append_error: impl FnOnce(core::ProposeError) -> AppendError,
) -> MembershipError {
    match err {
        core::ProposeError::NotLeader { leader } => {
            let leader = leader.and_then(member);
            MembershipError::NotLeader {
                leader_id: leader.as_ref().map(|member| member.name.clone()),
                leader_http: leader.map(|member| member.http_address),
            }
        }
        core::ProposeError::Membership(refusal @ ChangeRefusal::Invalid(_)) => {
            MembershipError::BadRequest {
                reason: refusal.to_string(),
            }
        }
        core::ProposeError::Membership(refusal) => MembershipError::Refused {
            reason: refusal.to_string(),
        },
        other => MembershipError::Append(append_error(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::{MemberRecord, MemberRole};

    fn two() -> Configuration {
        let voter = |name: &str| {
            MemberRecord::voter(name, &format!("{name}:20911"), &format!("{name}:8080"))
        };
        Configuration::new(vec![voter("a"), voter("b")]).unwrap()
    }

    fn add(id: &str, address: &str) -> MemberChange {
        MemberChange::Add(AddMember {
            id: id.into(),
            address: address.into(),
            http_address: None,
            incarnation: None,
        })
    }

    #[test]
    fn an_added_member_gets_the_default_http_port() {
        let next = next_configuration(&two(), &add("c", "c.peers:20911")).unwrap();
        let c = next.member("c").unwrap();
        assert_eq!(
            (c.role, c.http_address.as_str()),
            (MemberRole::Learner, "c.peers:8080")
        );
    }

    #[test]
    fn bad_requests_and_refusals_are_told_apart() {
        assert!(matches!(
            next_configuration(&two(), &add("c", "no-port")),
            Err(MembershipError::BadRequest { .. })
        ));
        for name in ["", " c", "c#1", "a=b", "-c", "c,d", "c/d"] {
            assert!(
                matches!(
                    next_configuration(&two(), &add(name, "c:1")),
                    Err(MembershipError::BadRequest { .. })
                ),
                "{name:?}"
            );
        }
        assert!(matches!(
            next_configuration(&two(), &add("a", "a:1")),
            Err(MembershipError::Refused { .. })
        ));
        assert!(matches!(
            next_configuration(&two(), &MemberChange::Promote("z".into())),
            Err(MembershipError::UnknownMember { .. })
        ));
        assert!(matches!(
            next_configuration(&two(), &MemberChange::Promote("a".into())),
            Err(MembershipError::Refused { .. })
        ));
    }
}
