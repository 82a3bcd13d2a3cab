//! `members list|add|promote|remove`: the group's configuration (voters
//! and learners), read and changed one member at a time through the
//! leader's `/admin/members` endpoints (HTTP).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::client_cmds::{finish, statuses, written, HttpTarget};
use crate::admin_client::{AdminClient, AdminError};
use crate::api::{AddMember, MemberAddress, Members, Role};

/// How long a change may take: it answers once committed, which a group
/// with a quorum does in well under a second; the server gives up at 50 s.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long reading the configuration may take.
const LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// The configuration, or a change of it by one member.
#[derive(Clone, Debug, Subcommand)]
pub enum MembersCommand {
    /// Print the configuration: every voter and learner with its binary
    /// protocol and HTTP addresses, the log index of the configuration
    /// entry, and whether it is committed. Asked of the leader (of the
    /// first member that answers when none reports itself leader).
    List(ListArgs),
    /// Add a member as a learner: it receives the log but does not vote
    /// until promoted. Start it first with `serve --initial-state
    /// existing`. Prints the new configuration once the change is committed.
    Add(AddArgs),
    /// Make a learner a voter; refused until it has caught up with the
    /// leader. Prints the new configuration once the change is committed.
    Promote(NameArgs),
    /// Remove a member, voter or learner (a leader removing itself hands
    /// leadership over first). Prints the new configuration once the change
    /// is committed.
    Remove(NameArgs),
}

/// `members list`.
#[derive(Clone, Debug, Args)]
pub struct ListArgs {
    /// Where to ask.
    #[command(flatten)]
    pub target: HttpTarget,
    /// Print the configuration as the JSON of `GET /admin/members`.
    #[arg(long)]
    pub json: bool,
}

/// `members add`.
#[derive(Clone, Debug, Args)]
pub struct AddArgs {
    /// Where to ask (the change is made by the leader).
    #[command(flatten)]
    pub target: HttpTarget,
    /// The new member's name (in Kubernetes, its pod name): the `--id` it
    /// runs `serve` with.
    #[arg(long, value_name = "NAME")]
    pub id: String,
    /// Its binary protocol address, `host:port` (peers replicate to it there).
    #[arg(long, value_name = "HOST:PORT")]
    pub address: String,
    /// Its HTTP address, `host:port` (where followers redirect clients when
    /// it leads) [default: the --address host on port 8080].
    #[arg(long, value_name = "HOST:PORT")]
    pub http_address: Option<String>,
    /// Print the new configuration as JSON instead of one line.
    #[arg(long)]
    pub json: bool,
}

/// `members promote` and `members remove`.
#[derive(Clone, Debug, Args)]
pub struct NameArgs {
    /// Where to ask (the change is made by the leader).
    #[command(flatten)]
    pub target: HttpTarget,
    /// The member's name.
    #[arg(value_name = "NAME")]
    pub id: String,
    /// Print the new configuration as JSON instead of one line.
    #[arg(long)]
    pub json: bool,
}

/// Runs `members list|add|promote|remove`.
pub fn run(command: MembersCommand) -> ExitCode {
    let (name, result) = match command {
        MembersCommand::List(args) => ("members list", list(&args)),
        MembersCommand::Add(args) => {
            let add = AddMember {
                id: args.id.clone(),
                address: args.address.clone(),
                http_address: args.http_address.clone(),
                incarnation: None,
            };
            let done = format!("added {} as a learner", args.id);
            let result = change(&args.target, args.json, &done, |client| {
                client.add_member(&add)
            });
            ("members add", result)
        }
        MembersCommand::Promote(args) => {
            let done = format!("promoted {} to voter", args.id);
            let result = change(&args.target, args.json, &done, |client| {
                client.promote_member(&args.id)
            });
            ("members promote", result)
        }
        MembersCommand::Remove(args) => {
            let done = format!("removed {}", args.id);
            let result = change(&args.target, args.json, &done, |client| {
                client.remove_member(&args.id)
            });
            ("members remove", result)
        }
    };
    finish(name, result)
}

/// The member to ask: the one that reports itself leader, else the first
/// that answers (a follower redirects a change to the leader, or says why
/// it cannot), with whether it is the leader.
fn member_to_ask(target: &HttpTarget) -> Result<(String, bool), String> {
    let all = statuses(target);
    if let Some((address, _)) = all
        .iter()
        .find(|(_, status)| matches!(status, Ok(status) if status.role == Role::Leader))
    {
        return Ok((address.clone(), true));
    }
    if let Some((address, _)) = all.iter().find(|(_, status)| status.is_ok()) {
        return Ok((address.clone(), false));
    }
    let reasons: Vec<String> = all
        .into_iter()
        .filter_map(|(address, status)| status.err().map(|err| format!("{address}: {err}")))
        .collect();
    Err(format!(
        "no member answered ({}); is the group running? --servers takes the members' HTTP \
         addresses",
        reasons.join("; ")
    ))
}

fn list(args: &ListArgs) -> Result<(), String> {
    let (address, is_leader) = member_to_ask(&args.target)?;
    if !is_leader {
        eprintln!(
            "none of the members asked reports itself leader; this is {address}'s \
             configuration, possibly behind the leader's"
        );
    }
    let members = args
        .target
        .credentials
        .admin_client(&address, LIST_TIMEOUT)?
        .members()
        .map_err(|err| err.to_string())?;
    let text = if args.json {
        format!("{}\n", serde_json::to_string(&members).unwrap_or_default())
    } else {
        table(&members)
    };
    written(std::io::stdout().write_all(text.as_bytes()))?;
    Ok(())
}

/// Makes a change with `call` on the member to ask and prints the new
/// configuration: `done` and a summary on one line, or the JSON.
fn change(
    target: &HttpTarget,
    json: bool,
    done: &str,
    call: impl FnOnce(&AdminClient) -> Result<Members, AdminError>,
) -> Result<(), String> {
    let (address, _) = member_to_ask(target)?;
    let client = target.credentials.admin_client(&address, CHANGE_TIMEOUT)?;
    let members = call(&client).map_err(change_error)?;
    let line = if json {
        serde_json::to_string(&members).unwrap_or_default()
    } else {
        format!("{done}: {}", summary(&members))
    };
    written(writeln!(std::io::stdout(), "{line}"))?;
    Ok(())
}

/// A failed change in words; when its fate is unknown, how to learn it.
fn change_error(err: AdminError) -> String {
    let unknown = match &err {
        AdminError::Unreachable { .. } => true,
        AdminError::Refused { status, .. } => *status == 504,
    };
    if unknown {
        format!(
            "{err}\n(the change may still be made if it reached the leader: \
             `dledger-replica members list` shows the configuration; retry only if it is not)"
        )
    } else {
        err.to_string()
    }
}

/// Where the configuration comes from and whether it is settled.
fn heading(members: &Members) -> String {
    let settled = if members.committed {
        "committed"
    } else {
        "not committed yet"
    };
    if members.index == 0 {
        format!("the bootstrap member list (--peers at the first start), {settled}")
    } else {
        format!("configuration at log index {}, {settled}", members.index)
    }
}

/// `configuration at log index 7, committed; voters a, b; learners c`.
fn summary(members: &Members) -> String {
    let names = |list: &[MemberAddress]| {
        if list.is_empty() {
            "none".to_string()
        } else {
            list.iter()
                .map(|member| member.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    format!(
        "{}; voters {}; learners {}",
        heading(members),
        names(&members.voters),
        names(&members.learners)
    )
}

/// The heading, then one row per member, voters first, in aligned columns.
fn table(members: &Members) -> String {
    let header = ["ROLE", "ID", "ADDRESS", "HTTP ADDRESS"];
    let rows: Vec<[&str; 4]> = members
        .voters
        .iter()
        .map(|member| ("voter", member))
        .chain(members.learners.iter().map(|member| ("learner", member)))
        .map(|(role, member)| {
            [
                role,
                member.id.as_str(),
                member.address.as_str(),
                member.http_address.as_str(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = format!("{}\n", heading(members));
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<MembersCommand, clap::Error> {
        let cli =
            Cli::try_parse_from(std::iter::once("dledger-replica").chain(args.iter().copied()))?;
        match cli.command {
            Command::Members(command) => Ok(command),
            other => panic!("parsed as {other:?}"),
        }
    }

    fn member(id: &str) -> MemberAddress {
        MemberAddress {
            id: id.into(),
            address: format!("{id}.peers:20911"),
            http_address: format!("{id}.peers:8080"),
            incarnation: 0,
        }
    }

    #[test]
    fn the_members_command_line_is_consistent() {
        // Only this group (the whole tree's check is another matter).
        MembersCommand::augment_subcommands(clap::Command::new("members")).debug_assert();
    }

    #[test]
    fn add_takes_the_members_flags_and_the_usual_target() {
        let command = parse(&[
            "members",
            "add",
            "--http",
            "h:8080",
            "--id",
            "d",
            "--address",
            "d.peers:20911",
            "--http-address",
            "d.peers:9090",
        ])
        .unwrap();
        let MembersCommand::Add(args) = command else {
            panic!("{command:?}");
        };
        assert_eq!(args.target.addresses, ["h:8080"]);
        assert_eq!(
            (args.id.as_str(), args.address.as_str()),
            ("d", "d.peers:20911")
        );
        assert_eq!(args.http_address.as_deref(), Some("d.peers:9090"));
        assert!(!args.json);
        // --id and --address are required; --http-address is not.
        for missing in [
            &["members", "add", "--address", "d:1"][..],
            &["members", "add", "--id", "d"][..],
        ] {
            let err = parse(missing).unwrap_err();
            assert_eq!(
                err.kind(),
                ErrorKind::MissingRequiredArgument,
                "{missing:?}"
            );
        }
        let command =
            parse(&["members", "add", "--id", "d", "--address", "d:1", "--json"]).unwrap();
        assert!(matches!(
            command,
            MembersCommand::Add(AddArgs {
                http_address: None,
                json: true,
                ..
            })
        ));
    }

    #[test]
    fn promote_and_remove_take_one_name_and_the_servers_list() {
        let command = parse(&["members", "promote", "--servers", "a:1,b:2", "d"]).unwrap();
        let MembersCommand::Promote(args) = command else {
            panic!("{command:?}");
        };
        assert_eq!(args.target.addresses, ["a:1", "b:2"]);
        assert_eq!(args.id, "d");
        let command = parse(&["members", "remove", "d", "--json"]).unwrap();
        assert!(
            matches!(&command, MembersCommand::Remove(NameArgs { id, json: true, .. }) if id == "d")
        );
        for args in [&["members", "promote"][..], &["members", "remove"][..]] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::MissingRequiredArgument, "{args:?}");
        }
        let err = parse(&["members", "remove", "d", "e"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnknownArgument);
        let err = parse(&["members"]).unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
    }

    #[test]
    fn the_list_is_a_table_under_its_index() {
        let members = Members {
            index: 12,
            committed: true,
            voters: vec![member("a"), member("orders-1")],
            learners: vec![member("d")],
        };
        assert_eq!(
            table(&members),
            "configuration at log index 12, committed\n\
             ROLE     ID        ADDRESS               HTTP ADDRESS\n\
             voter    a         a.peers:20911         a.peers:8080\n\
             voter    orders-1  orders-1.peers:20911  orders-1.peers:8080\n\
             learner  d         d.peers:20911         d.peers:8080\n"
        );
        let bootstrap = Members {
            index: 0,
            committed: false,
            voters: vec![member("a")],
            learners: vec![],
        };
        assert!(table(&bootstrap).starts_with(
            "the bootstrap member list (--peers at the first start), not committed yet\n"
        ));
    }

    #[test]
    fn a_change_is_one_line() {
        let members = Members {
            index: 13,
            committed: true,
            voters: vec![member("a"), member("b")],
            learners: vec![],
        };
        assert_eq!(
            summary(&members),
            "configuration at log index 13, committed; voters a, b; learners none"
        );
    }

    #[test]
    fn a_change_of_unknown_fate_says_how_to_learn_it() {
        let timeout = change_error(AdminError::Refused {
            url: "http://a/admin/members".into(),
            status: 504,
            reason: "outcome unknown".into(),
        });
        assert!(timeout.contains("members list"), "{timeout}");
        let refused = change_error(AdminError::Refused {
            url: "http://a/admin/members/d/promote".into(),
            status: 409,
            reason: "d is not caught up".into(),
        });
        assert_eq!(
            refused,
            "http://a/admin/members/d/promote: HTTP 409: d is not caught up"
        );
    }
}
