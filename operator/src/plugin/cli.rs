//! The command line of `kubectl dledger`: clap types only, no I/O.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `kubectl dledger`: look at and steer DLedgerGroups (status, switchover,
/// rolling restart, upgrade pause/resume/proceed).
#[derive(Parser, Debug, PartialEq)]
#[command(
    name = "kubectl-dledger",
    bin_name = "kubectl dledger",
    version,
    about,
    after_help = "Examples:
  kubectl dledger status orders -n shop
  kubectl dledger switchover orders --to orders-1 --wait
  kubectl dledger restart orders
  kubectl dledger upgrade proceed orders

Install: put the binary on PATH as `kubectl-dledger`; kubectl finds it as `kubectl dledger`.
The namespace is -n, or the current kubeconfig context's default."
)]
pub struct Cli {
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug, PartialEq)]
pub enum Command {
    /// Show a group's members (role, term, indexes, lag, version, ready,
    /// updated), its leader, and any upgrade or switchover in progress.
    #[command(after_help = "Examples:
  kubectl dledger status orders
  kubectl dledger status orders -n shop -o json

The members are as the operator last polled them (every 500 ms).")]
    Status(StatusArgs),
    /// Ask the operator to hand leadership to another member.
    #[command(after_help = "Examples:
  kubectl dledger switchover orders                  # to the most caught-up Ready follower
  kubectl dledger switchover orders --to orders-2    # to a named member
  kubectl dledger switchover orders --wait           # and wait up to 2m for it to lead
  kubectl dledger switchover orders --wait=30s

Sets spec.switchover.target; the operator transfers leadership and records
status.switchover. With --wait the command exits non-zero if the target does
not lead in time.")]
    Switchover(SwitchoverArgs),
    /// Restart every member, one at a time: followers first, the leader last
    /// after a transfer, never two down.
    #[command(after_help = "Examples:
  kubectl dledger restart orders
  kubectl dledger status orders      # follow the restart

Sets the annotation dledger.io/restarted-at on the group; the operator puts it
in the pod template, and the upgrade planner rolls the new revision like any
upgrade (so `upgrade pause` and, in supervised mode, `upgrade proceed` apply).")]
    Restart(GroupArgs),
    /// Pause, resume, or approve the leader's turn of a rolling upgrade.
    #[command(subcommand)]
    Upgrade(UpgradeCommand),
}

/// `upgrade pause|resume|proceed`.
#[derive(Subcommand, Debug, PartialEq)]
pub enum UpgradeCommand {
    /// Stop the rolling upgrade after the step in progress.
    #[command(after_help = "Example:
  kubectl dledger upgrade pause orders

Sets the annotation dledger.io/upgrade-pause=true; a step already started
(a pod deleted, a transfer asked) completes, no new one begins.")]
    Pause(GroupArgs),
    /// Let a paused rolling upgrade carry on.
    #[command(after_help = "Example:
  kubectl dledger upgrade resume orders

Removes the annotation dledger.io/upgrade-pause.")]
    Resume(GroupArgs),
    /// Supervised mode: approve restarting the current leader (after a
    /// transfer) when the upgrade waits for it.
    #[command(after_help = "Example:
  kubectl dledger upgrade proceed orders

Sets the annotation dledger.io/upgrade-approve=<the current leader>. Refused
when no upgrade waits for approval or no leader is known. The approval names
the leader, so it does not carry over if leadership moves first.")]
    Proceed(GroupArgs),
}

/// A group in a namespace.
#[derive(Args, Debug, PartialEq, Clone)]
pub struct GroupArgs {
    /// The DLedgerGroup's name.
    pub group: String,
    /// Its namespace (default: the kubeconfig context's).
    #[arg(short, long)]
    pub namespace: Option<String>,
}

/// `status`.
#[derive(Args, Debug, PartialEq)]
pub struct StatusArgs {
    /// The group.
    #[command(flatten)]
    pub target: GroupArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// How `status` prints.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Header lines and an aligned table, for a person.
    Table,
    /// One JSON object, for a script.
    Json,
}

/// `switchover`.
#[derive(Args, Debug, PartialEq)]
pub struct SwitchoverArgs {
    /// The group.
    #[command(flatten)]
    pub target: GroupArgs,
    /// The member that should lead (`<group>-<ordinal>`); default: the most
    /// caught-up Ready follower.
    #[arg(long, value_name = "MEMBER")]
    pub to: Option<String>,
    /// Wait until the target leads, at most this long (`--wait` alone: 2m;
    /// units s, m, h; a plain number is seconds).
    #[arg(
        long,
        value_name = "TIMEOUT",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "2m",
        value_parser = parse_duration
    )]
    pub wait: Option<Duration>,
}

/// The longest `--wait` accepted.
pub const WAIT_SECONDS_MAX: u64 = 24 * 3600;

/// Parses `90`, `90s`, `2m`, `1h` (whole numbers, at most a day).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit_seconds) = match text.char_indices().last() {
        Some((at, 's')) => (&text[..at], 1),
        Some((at, 'm')) => (&text[..at], 60),
        Some((at, 'h')) => (&text[..at], 3600),
        _ => (text, 1),
    };
    let count: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 30s, 2m or 1h"))?;
    let seconds = count.saturating_mul(unit_seconds);
    if seconds == 0 || seconds > WAIT_SECONDS_MAX {
        return Err(format!(
            "`{text}` is out of range: between 1s and {}h",
            WAIT_SECONDS_MAX / 3600
        ));
    }
    Ok(Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("kubectl-dledger").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_have_units_and_bounds() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("25h").is_err());
        assert!(parse_duration("2 minutes").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn status_takes_a_namespace_and_a_format() {
        let cli = parse(&["status", "orders", "-n", "shop", "-o", "json"]).unwrap();
        assert_eq!(
            cli.command,
            Command::Status(StatusArgs {
                target: GroupArgs {
                    group: "orders".into(),
                    namespace: Some("shop".into())
                },
                output: Output::Json,
            })
        );
        let cli = parse(&["status", "orders"]).unwrap();
        let Command::Status(args) = cli.command else {
            panic!("not status")
        };
        assert_eq!(args.output, Output::Table);
        assert_eq!(args.target.namespace, None);
        assert!(parse(&["status", "orders", "-o", "yaml"]).is_err());
        assert!(parse(&["status"]).is_err());
    }

    #[test]
    fn wait_alone_means_two_minutes() {
        let wait = |args: &[&str]| match parse(args).unwrap().command {
            Command::Switchover(args) => args.wait,
            other => panic!("{other:?}"),
        };
        assert_eq!(wait(&["switchover", "orders"]), None);
        assert_eq!(
            wait(&["switchover", "orders", "--wait"]),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            wait(&["switchover", "orders", "--wait=30s", "--to", "orders-2"]),
            Some(Duration::from_secs(30))
        );
        // `--wait orders` must not swallow the group name.
        assert_eq!(
            wait(&["switchover", "--wait", "orders"]),
            Some(Duration::from_secs(120))
        );
        assert!(parse(&["switchover", "orders", "--wait=soon"]).is_err());
    }

    #[test]
    fn upgrade_has_three_subcommands() {
        for (word, expected) in [
            ("pause", "Pause"),
            ("resume", "Resume"),
            ("proceed", "Proceed"),
        ] {
            let cli = parse(&["upgrade", word, "orders", "--context", "kind"]).unwrap();
            assert_eq!(cli.context.as_deref(), Some("kind"));
            assert!(format!("{:?}", cli.command).contains(expected));
        }
        assert!(parse(&["upgrade", "orders"]).is_err());
        assert!(parse(&["restart", "orders", "-n", "shop"]).is_ok());
    }

    #[test]
    fn every_subcommand_has_examples() {
        let mut cli = Cli::command();
        cli.build();
        let mut missing = Vec::new();
        for sub in cli.get_subcommands().filter(|sub| sub.get_name() != "help") {
            let nested: Vec<_> = sub.get_subcommands().collect();
            if nested.is_empty() && sub.get_after_help().is_none() {
                missing.push(sub.get_name().to_string());
            }
            for inner in nested {
                if inner.get_after_help().is_none() && inner.get_name() != "help" {
                    missing.push(format!("{} {}", sub.get_name(), inner.get_name()));
                }
            }
        }
        missing.retain(|name| name != "help");
        assert!(missing.is_empty(), "no examples: {missing:?}");
    }
}
