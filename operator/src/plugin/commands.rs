//! Each command against a [`kube::Client`]: read the group, decide with the
//! pure functions of [`super::patches`] and [`super::render`], write one
//! merge patch. Output goes to a writer, so the tests read it.

use std::io::Write;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::Value;

use super::cli::{Command, Output, UpgradeCommand};
use super::patches::{self, SwitchoverPlan, APPROVE_ANNOTATION};
use super::render;
use super::Error;
use crate::crd::DLedgerGroup;
use crate::specs::selector_string;

/// The field manager the plugin's patches are recorded under.
pub const FIELD_MANAGER: &str = "kubectl-dledger";

/// How often `switchover --wait` reads the group.
pub const WAIT_POLL: Duration = Duration::from_millis(500);

/// Where commands act and what they need besides their arguments.
pub struct Session {
    /// The client.
    pub client: Client,
    /// The namespace when a command has no `-n`.
    pub default_namespace: String,
    /// The period of `switchover --wait` polls.
    pub wait_poll: Duration,
}

impl Session {
    /// A session on `client`, in the client's default namespace (the
    /// kubeconfig context's).
    pub fn new(client: Client) -> Session {
        let default_namespace = client.default_namespace().to_string();
        Session {
            client,
            default_namespace,
            wait_poll: WAIT_POLL,
        }
    }

    fn groups(&self, namespace: &Option<String>) -> (Api<DLedgerGroup>, String) {
        let namespace = namespace
            .clone()
            .unwrap_or_else(|| self.default_namespace.clone());
        (Api::namespaced(self.client.clone(), &namespace), namespace)
    }
}

/// Runs `command`; `now` stamps a restart.
pub async fn run(
    session: &Session,
    command: Command,
    now: DateTime<Utc>,
    out: &mut dyn Write,
) -> Result<(), Error> {
    match command {
        Command::Status(args) => {
            status(
                session,
                &args.target.group,
                &args.target.namespace,
                args.output,
                out,
            )
            .await
        }
        Command::Switchover(args) => {
            switchover(
                session,
                &args.target.group,
                &args.target.namespace,
                args.to.as_deref(),
                args.wait,
                out,
            )
            .await
        }
        Command::Restart(args) => restart(session, &args.group, &args.namespace, now, out).await,
        Command::Upgrade(UpgradeCommand::Pause(args)) => {
            pause(session, &args.group, &args.namespace, true, out).await
        }
        Command::Upgrade(UpgradeCommand::Resume(args)) => {
            pause(session, &args.group, &args.namespace, false, out).await
        }
        Command::Upgrade(UpgradeCommand::Proceed(args)) => {
            proceed(session, &args.group, &args.namespace, out).await
        }
    }
}

async fn get(api: &Api<DLedgerGroup>, name: &str, namespace: &str) -> Result<DLedgerGroup, Error> {
    api.get_opt(name)
        .await?
        .ok_or_else(|| Error::GroupNotFound {
            group: name.to_string(),
            namespace: namespace.to_string(),
        })
}

async fn apply(api: &Api<DLedgerGroup>, name: &str, patch: &Value) -> Result<(), Error> {
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    api.patch(name, &params, &Patch::Merge(patch)).await?;
    Ok(())
}

/// `status`: header lines and the members table, or JSON.
pub async fn status(
    session: &Session,
    name: &str,
    namespace: &Option<String>,
    output: Output,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let (api, namespace) = session.groups(namespace);
    let group = get(&api, name, &namespace).await?;
    let reported = group.status.as_ref().map_or(0, |s| s.members.len());
    // Only a group the operator has not fully reported needs its pods.
    let mut pods = Vec::new();
    if reported < usize::try_from(group.spec.replicas).unwrap_or(0) {
        let pod_api: Api<Pod> = Api::namespaced(session.client.clone(), &namespace);
        let params = ListParams::default().labels(&selector_string(name));
        match pod_api.list(&params).await {
            Ok(list) => pods = list.items,
            Err(err) => writeln!(out, "note: cannot list the pods: {}", Error::from(err))?,
        }
    }
    let view = render::overview(&group, &pods);
    match output {
        Output::Table => write!(out, "{}", render::table(&view))?,
        Output::Json => writeln!(out, "{}", render::json(&view))?,
    }
    Ok(())
}

/// `switchover`: set `spec.switchover.target`, optionally wait for it.
pub async fn switchover(
    session: &Session,
    name: &str,
    namespace: &Option<String>,
    to: Option<&str>,
    wait: Option<Duration>,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let (api, namespace) = session.groups(namespace);
    let group = get(&api, name, &namespace).await?;
    let target = match patches::plan_switchover(&group, to)? {
        SwitchoverPlan::AlreadyLeads(leader) => {
            writeln!(out, "{leader} already leads {name}; nothing to do")?;
            return Ok(());
        }
        SwitchoverPlan::Request(target) => target,
    };
    apply(&api, name, &patches::switchover_patch(&target)).await?;
    let from = group
        .status
        .as_ref()
        .and_then(|s| s.leader.clone())
        .unwrap_or_else(|| "none".into());
    writeln!(
        out,
        "switchover of {namespace}/{name} requested: {from} -> {target}"
    )?;
    let Some(timeout) = wait else {
        writeln!(
            out,
            "follow it with: kubectl dledger status {name} -n {namespace}"
        )?;
        return Ok(());
    };
    wait_for_leader(session, &api, name, &namespace, &target, timeout, out).await
}

async fn wait_for_leader(
    session: &Session,
    api: &Api<DLedgerGroup>,
    name: &str,
    namespace: &str,
    target: &str,
    timeout: Duration,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let started = tokio::time::Instant::now();
    let deadline = started + timeout;
    loop {
        let group = get(api, name, namespace).await?;
        let status = group.status.clone().unwrap_or_default();
        if patches::switchover_done(&group, target) {
            writeln!(
                out,
                "{target} leads {name} (term {}) after {:.1}s",
                status.term,
                started.elapsed().as_secs_f64()
            )?;
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(Error::SwitchoverTimedOut {
                group: name.to_string(),
                target: target.to_string(),
                waited_seconds: timeout.as_secs(),
                leader: status.leader.unwrap_or_else(|| "none".into()),
            });
        }
        tokio::time::sleep(session.wait_poll.min(deadline - now)).await;
    }
}

/// `restart`: stamp the restart annotation.
pub async fn restart(
    session: &Session,
    name: &str,
    namespace: &Option<String>,
    now: DateTime<Utc>,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let (api, namespace) = session.groups(namespace);
    let group = get(&api, name, &namespace).await?;
    let patch = patches::restart_patch(now);
    apply(&api, name, &patch).await?;
    writeln!(
        out,
        "rolling restart of {namespace}/{name} requested: followers first, the leader last"
    )?;
    if patches::is_paused(&group) {
        writeln!(
            out,
            "note: upgrades of {name} are paused; nothing restarts until: kubectl dledger upgrade resume {name}"
        )?;
    }
    writeln!(
        out,
        "follow it with: kubectl dledger status {name} -n {namespace}"
    )?;
    Ok(())
}

/// `upgrade pause` (`paused`) and `upgrade resume`.
pub async fn pause(
    session: &Session,
    name: &str,
    namespace: &Option<String>,
    paused: bool,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let (api, namespace) = session.groups(namespace);
    let group = get(&api, name, &namespace).await?;
    let word = if paused { "paused" } else { "resumed" };
    if patches::is_paused(&group) == paused {
        let state = if paused { "paused" } else { "not paused" };
        writeln!(out, "upgrades of {namespace}/{name} are {state} already")?;
        return Ok(());
    }
    apply(&api, name, &patches::pause_patch(paused)).await?;
    writeln!(out, "upgrades of {namespace}/{name} {word}")?;
    Ok(())
}

/// `upgrade proceed`: approve restarting the current leader.
pub async fn proceed(
    session: &Session,
    name: &str,
    namespace: &Option<String>,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let (api, namespace) = session.groups(namespace);
    let group = get(&api, name, &namespace).await?;
    let leader = patches::approval_target(&group)?;
    if group.annotations().get(APPROVE_ANNOTATION) == Some(&leader) {
        writeln!(out, "restarting {leader} is approved already")?;
        return Ok(());
    }
    apply(&api, name, &patches::approve_patch(&leader)).await?;
    writeln!(
        out,
        "approved: the operator hands leadership away from {leader}, then restarts it"
    )?;
    if patches::is_paused(&group) {
        writeln!(
            out,
            "note: upgrades of {name} are paused; run kubectl dledger upgrade resume {name}"
        )?;
    }
    Ok(())
}
