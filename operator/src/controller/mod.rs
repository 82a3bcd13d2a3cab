//! The reconcile loop: apply the children, poll the members, decide, then
//! write the role labels, the status and the Events, and carry out at most
//! one disruptive step of an upgrade or switchover. Deciding is pure
//! ([`decide`], [`upgrade`], [`switchover`]); this module is the API
//! plumbing around it.

pub mod apply;
pub mod decide;
pub mod poll;
pub mod scale;
pub mod switchover;
pub mod tls;
pub mod upgrade;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::Predicate;
use kube::runtime::watcher;
use kube::runtime::{predicates, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};

use self::apply::{Applied, Inputs};
use self::decide::{decide, Decision, Facts, Notice, Observed, PodFacts};
use self::poll::{poll_members, Address, Target};
use self::scale::ScaleExecution;
use self::switchover::{SwitchoverExecution, SwitchoverInput};
use self::tls::Access;
use self::upgrade::{Disruption, ExecInput, Execution, Verdict, PAUSE_ANNOTATION};
use crate::crd::{Condition, DLedgerGroup, DLedgerGroupStatus};
use crate::membership::planner as membership;
use crate::metrics::Metrics;
use crate::specs::{
    self, Group, GroupError, Join, INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL, ROLE_LABEL,
};
use crate::upgrade::planner::{self, Step, WaitReason, APPROVE_ANNOTATION};

/// Why a reconcile failed. The variant names are the metric labels.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The resource came back incomplete.
    #[error(transparent)]
    Group(#[from] GroupError),
    /// The API server refused or failed a call.
    #[error("{action}: {source}")]
    Api {
        /// What was being done.
        action: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The group's certificates cannot be read or made.
    #[error("TLS of {group}: {reason}")]
    Tls {
        /// `namespace/name`.
        group: String,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// The API server did not answer in time.
    #[error("{action}: no answer from the API server within {timeout_ms} ms")]
    Timeout {
        /// What was being done.
        action: String,
        /// The bound.
        timeout_ms: u64,
    },
}

impl Error {
    /// The `error` label of `dledger_operator_reconcile_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Group(_) => "incomplete_resource",
            Error::Api {
                source: kube::Error::Api(status),
                ..
            } if status.code == 409 => "conflict",
            Error::Api {
                source: kube::Error::Api(status),
                ..
            } if status.code >= 500 => "server_error",
            Error::Api { .. } => "api_error",
            Error::Timeout { .. } => "timeout",
            Error::Tls { .. } => "tls",
        }
    }
}

/// The knobs of the loop.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long a member gets to answer `/status`.
    pub poll_timeout_ms: u64,
    /// Next poll while the group is settled.
    pub requeue_settled_ms: u64,
    /// Next poll while there is no leader or a member is silent.
    pub requeue_unsettled_ms: u64,
    /// How long one API call may take.
    pub api_timeout_ms: u64,
    /// The port of the members' HTTP server.
    pub member_http_port: u16,
    /// Back-off after a failed reconcile.
    pub error_requeue_ms: u64,
    /// The longest time to the next poll while an upgrade or switchover
    /// step is under way.
    pub requeue_in_progress_ms: u64,
    /// How long a leadership transfer call may take (the replica answers
    /// once a new leader is elected, within 5 s).
    pub transfer_timeout_ms: u64,
    /// The operator's own namespace, which a group's NetworkPolicy lets in
    /// (any namespace when unknown).
    pub operator_namespace: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            poll_timeout_ms: 400,
            requeue_settled_ms: 500,
            requeue_unsettled_ms: 250,
            api_timeout_ms: 10_000,
            member_http_port: specs::HTTP_PORT as u16,
            error_requeue_ms: 2_000,
            requeue_in_progress_ms: 1_000,
            transfer_timeout_ms: 7_000,
            operator_namespace: None,
        }
    }
}

/// The watched copies of the children, fed by the controller's watches.
#[derive(Clone)]
pub struct Stores {
    /// StatefulSets the operator manages.
    pub statefulsets: Store<StatefulSet>,
    /// Services the operator manages.
    pub services: Store<Service>,
    /// PodDisruptionBudgets the operator manages.
    pub pdbs: Store<PodDisruptionBudget>,
    /// Member pods.
    pub pods: Store<Pod>,
    /// The join ConfigMaps.
    pub configmaps: Store<ConfigMap>,
    /// The CA, member and client Secrets.
    pub secrets: Store<Secret>,
    /// The groups' NetworkPolicies.
    pub network_policies: Store<NetworkPolicy>,
}

impl Stores {
    /// Whether every watch has delivered its first full list, waiting at most `wait`.
    pub async fn synced(&self, wait: Duration) -> bool {
        let all = async {
            self.statefulsets.wait_until_ready().await.is_ok()
                && self.services.wait_until_ready().await.is_ok()
                && self.pdbs.wait_until_ready().await.is_ok()
                && self.pods.wait_until_ready().await.is_ok()
                && self.configmaps.wait_until_ready().await.is_ok()
                && self.secrets.wait_until_ready().await.is_ok()
                && self.network_policies.wait_until_ready().await.is_ok()
        };
        tokio::time::timeout(wait, all).await.unwrap_or(false)
    }
}

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Who publishes the Events; `None` in tests that do not look at them.
    pub reporter: Option<Reporter>,
    /// The metrics.
    pub metrics: Metrics,
    /// The knobs.
    pub settings: Settings,
    /// The watched children.
    pub stores: Stores,
    applied: Mutex<HashMap<String, Applied>>,
    previous: Mutex<HashMap<String, DLedgerGroupStatus>>,
    /// Per group, the restart count of each member pod (by uid) at the last
    /// poll, to see a crash loop before the kubelet calls it one.
    restart_counts: Mutex<HashMap<String, HashMap<String, i32>>>,
    /// Per group, what the join ConfigMap was last written to say (its
    /// watched copy can lag behind, and must never turn `existing` back
    /// into `new`).
    joins: Mutex<HashMap<String, Join>>,
    /// Per group, the operator's own admin certificate (never in a Secret).
    own_certificates: Mutex<HashMap<String, tls::OwnCertificate>>,
    /// cert-manager Certificates as last applied (they are not watched).
    certificates_applied: Mutex<HashMap<String, String>>,
}

impl Context {
    /// A context over `client` and `stores`.
    pub fn new(
        client: Client,
        reporter: Option<Reporter>,
        metrics: Metrics,
        settings: Settings,
        stores: Stores,
    ) -> Context {
        Context {
            client,
            reporter,
            metrics,
            settings,
            stores,
            applied: Mutex::new(HashMap::new()),
            previous: Mutex::new(HashMap::new()),
            restart_counts: Mutex::new(HashMap::new()),
            joins: Mutex::new(HashMap::new()),
            own_certificates: Mutex::new(HashMap::new()),
            certificates_applied: Mutex::new(HashMap::new()),
        }
    }

    /// What the join ConfigMap says: the watched copy, or what this operator
    /// wrote last if the watch has not delivered it yet.
    fn join_of(&self, key: &str, group: &Group<'_>) -> Option<Join> {
        let name = specs::join_config_map_name(group);
        let watched = self
            .stores
            .configmaps
            .get(&ObjectRef::new(&name).within(&group.namespace))
            .and_then(|map| Join::of(&map));
        watched.or_else(|| self.joins.lock().ok()?.get(key).cloned())
    }

    fn remember_join(&self, key: String, join: Join) {
        if let Ok(mut joins) = self.joins.lock() {
            joins.insert(key, join);
        }
    }

    fn own_certificate(&self, key: &str) -> Option<tls::OwnCertificate> {
        self.own_certificates.lock().ok()?.get(key).cloned()
    }

    fn remember_own_certificate(&self, key: String, own: tls::OwnCertificate) {
        if let Ok(mut all) = self.own_certificates.lock() {
            all.insert(key, own);
        }
    }

    fn certificate_applied(&self, key: &str) -> Option<String> {
        self.certificates_applied.lock().ok()?.get(key).cloned()
    }

    fn remember_certificate_applied(&self, key: String, spec: String) {
        if let Ok(mut all) = self.certificates_applied.lock() {
            all.insert(key, spec);
        }
    }

    fn applied_record(&self, key: &str) -> Option<Applied> {
        self.applied.lock().ok()?.get(key).cloned()
    }

    fn record_applied(&self, key: String, applied: Applied) {
        if let Ok(mut records) = self.applied.lock() {
            records.insert(key, applied);
        }
    }

    /// The status this operator wrote last (the watched copy can lag behind it).
    fn previous_status(&self, key: &str, group: &DLedgerGroup) -> DLedgerGroupStatus {
        let remembered = self.previous.lock().ok().and_then(|p| p.get(key).cloned());
        remembered
            .or_else(|| group.status.clone())
            .unwrap_or_default()
    }

    fn remember_status(&self, key: String, status: DLedgerGroupStatus) {
        if let Ok(mut previous) = self.previous.lock() {
            previous.insert(key, status);
        }
    }

    /// Marks the pods whose restart count went up since the last poll, and
    /// remembers the counts of these pods only (so the memory stays bounded).
    fn mark_rising_restarts(&self, key: &str, pods: &mut [(Option<i32>, &mut PodFacts)]) {
        let Ok(mut all) = self.restart_counts.lock() else {
            return;
        };
        let before = all.remove(key).unwrap_or_default();
        let mut now = HashMap::new();
        for (count, facts) in pods.iter_mut() {
            let (Some(count), Some(uid)) = (count, facts.uid.clone()) else {
                continue;
            };
            facts.restarts_rising = before.get(&uid).is_some_and(|seen| *count > *seen);
            now.insert(uid, *count);
        }
        all.insert(key.to_string(), now);
    }
}

/// Runs one API call under the operator's deadline.
pub(crate) async fn api_call<T>(
    ctx: &Context,
    action: String,
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, Error> {
    let timeout_ms = ctx.settings.api_timeout_ms;
    match tokio::time::timeout(Duration::from_millis(timeout_ms), call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(Error::Api { action, source }),
        Err(_) => Err(Error::Timeout { action, timeout_ms }),
    }
}

/// One reconcile of one group.
pub async fn reconcile(group: Arc<DLedgerGroup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&group, &ctx).await;
    ctx.metrics
        .duration
        .with_label_values(&[] as &[&str])
        .observe(started.elapsed().as_secs_f64());
    let outcome = if result.is_ok() { "ok" } else { "error" };
    ctx.metrics.reconciles.with_label_values(&[outcome]).inc();
    result
}

async fn reconcile_inner(resource: &DLedgerGroup, ctx: &Context) -> Result<Action, Error> {
    let group = Group::of(resource)?;
    let key = format!("{}/{}", group.namespace, group.name);
    if resource.meta().deletion_timestamp.is_some() {
        // Garbage collection removes the children; only the metrics are ours to drop.
        let previous = ctx.previous_status(&key, resource);
        let members: Vec<String> = previous.members.iter().map(|m| m.name.clone()).collect();
        ctx.metrics
            .forget_group(&group.namespace, &group.name, &members);
        return Ok(Action::await_change());
    }
    if !ctx
        .stores
        .synced(Duration::from_millis(ctx.settings.api_timeout_ms))
        .await
    {
        // Until every watch has listed once, a missing pod or child only
        // means "not seen yet": deciding now would raise false alarms.
        return Ok(Action::requeue(Duration::from_millis(
            ctx.settings.requeue_unsettled_ms,
        )));
    }
    let generation = resource.meta().generation;
    let statefulset = ctx
        .stores
        .statefulsets
        .get(&ObjectRef::new(&group.name).within(&group.namespace));
    let statefulset_replicas = statefulset
        .as_ref()
        .and_then(|sts| sts.spec.replicas)
        .map(|replicas| replicas.max(0).unsigned_abs());
    // Every pod the StatefulSet has or will have: members past
    // spec.replicas stay until they are removed from the configuration.
    let desired = group.spec.replicas.max(1).unsigned_abs();
    let members = specs::member_names(&group, desired.max(statefulset_replicas.unwrap_or(0)));
    let pods: Vec<Option<Arc<Pod>>> = members
        .iter()
        .map(|name| {
            ctx.stores
                .pods
                .get(&ObjectRef::new(name).within(&group.namespace))
        })
        .collect();
    // Before anything reaches a member: the certificates the pods mount,
    // and the operator's own.
    let access = tls::ensure(ctx, resource, &group).await?;
    let targets: Vec<Target> = members
        .iter()
        .zip(&pods)
        .map(|(name, pod)| Target {
            name: name.clone(),
            address: member_address(&group, pod.as_deref(), ctx.settings.member_http_port),
        })
        .collect();
    let polled = poll_members(&targets, &access, ctx.settings.poll_timeout_ms).await;
    let mut observed: Vec<Observed> = polled
        .into_iter()
        .zip(&pods)
        .map(|((name, polled), pod)| Observed {
            name,
            pod: pod.as_deref().map(pod_facts),
            polled,
        })
        .collect();

    let scale_input = scale::input(
        &group,
        &observed,
        statefulset_replicas,
        group.spec.upgrade.max_lag,
        u64::from(group.spec.config.election_timeout_ms),
    );
    let scaling = scale::execute(&scale_input, &membership::plan(&scale_input));
    let formed = scale_input
        .leader
        .as_ref()
        .is_some_and(|leader| leader.configuration.committed);
    let join = Join::desired(
        &group,
        ctx.join_of(&key, &group).as_ref(),
        formed,
        statefulset.is_some(),
        scaling.statefulset_replicas,
    );
    let outcome = apply::ensure_children(
        ctx,
        &group,
        generation,
        &Inputs {
            statefulset_replicas: scaling.statefulset_replicas,
            join: &join,
        },
    )
    .await?;
    ctx.remember_join(key.clone(), join);
    for child in &outcome.repaired {
        publish(
            ctx,
            resource,
            true,
            "ChildRepaired",
            format!("{child} had been changed or deleted by hand; put back"),
        )
        .await;
    }

    let mut counted: Vec<(Option<i32>, &mut PodFacts)> = observed
        .iter_mut()
        .zip(&pods)
        .filter_map(|(member, pod)| {
            let count = pod.as_deref().and_then(restart_count);
            member.pod.as_mut().map(|facts| (count, facts))
        })
        .collect();
    ctx.mark_rising_restarts(&key, &mut counted);

    let previous = ctx.previous_status(&key, resource);
    let clock = Timestamp::now();
    let now = clock.to_string();
    let now_seconds = clock.as_second();
    let sts_status = outcome
        .statefulset
        .as_ref()
        .and_then(|sts| sts.status.as_ref());
    let facts = Facts {
        group: &group.name,
        generation,
        replicas: group.spec.replicas,
        current_revision: sts_status.and_then(|s| s.current_revision.clone()),
        update_revision: sts_status.and_then(|s| s.update_revision.clone()),
        previous: &previous,
        now: &now,
    };
    let Decision {
        mut status,
        labels,
        mut notices,
    } = decide(&facts, &observed);
    // The update revision is the StatefulSet's answer to its current spec
    // only once its controller has seen that spec; just after an apply (a
    // repaired hand edit, say) it can still name a template that is gone.
    let revision_current = outcome.statefulset.as_ref().is_some_and(|sts| {
        sts_status.and_then(|s| s.observed_generation) == sts.metadata.generation
    });
    let plan_revision = facts
        .update_revision
        .as_deref()
        .filter(|_| revision_current);
    let (in_progress, remove_approval, action, member_call) = if scaling.busy {
        // Upgrades and switchovers hold while the membership changes (their
        // recorded steps stay as they are): one disruption at a time.
        if let Some(verdict) = &scaling.progressing {
            let previous = &previous.conditions;
            upgrade::set_condition(
                &mut status,
                "Progressing",
                verdict,
                previous,
                &now,
                generation,
            );
        }
        (true, false, None, scaling.call.clone())
    } else {
        let (execution, switching) = plan_and_execute(
            resource,
            &group,
            &observed,
            &previous,
            status.leader.as_deref(),
            plan_revision,
            (&now, now_seconds),
        );
        let in_progress = execution.in_progress || switching.in_progress;
        let remove_approval = execution.remove_approval;
        let action = fold_executions(
            &mut status,
            &mut notices,
            execution,
            switching,
            &previous.conditions,
            &now,
            generation,
        );
        (in_progress, remove_approval, action, None)
    };

    // Labels first: they are what moves the -leader Service.
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &group.namespace);
    for (pod, role) in &labels {
        let patch = serde_json::json!({"metadata": {"labels": {ROLE_LABEL: role}}});
        api_call(
            ctx,
            format!("label pod {pod} {role}"),
            pods_api.patch(pod, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await?;
    }
    if previous != status {
        write_status(ctx, &group, &status).await?;
    }
    for notice in notices {
        publish(ctx, resource, notice.warning, &notice.reason, notice.note).await;
    }
    if remove_approval {
        remove_annotation(ctx, &group, APPROVE_ANNOTATION).await?;
    }
    // The status (with status.upgrade) is written before the step, so an
    // operator that stops here resumes from it.
    if let Some(action) = &action {
        if let Some(failure) = carry_out(ctx, &group, &access, &pods, action).await? {
            let failed = ("TransferFailed", failure);
            status = write_step_failure(ctx, &group, status, failed, &now, generation).await?;
        }
    }
    if let Some(call) = &member_call {
        match change_members(ctx, &group, &access, &pods, &scaling, call).await {
            Ok(()) => {
                let notice = scale::notice(call);
                publish(ctx, resource, notice.warning, &notice.reason, notice.note).await;
            }
            Err(failure) => {
                let failed = ("MembershipChangeFailed", failure);
                status = write_step_failure(ctx, &group, status, failed, &now, generation).await?;
            }
        }
    }
    ctx.metrics
        .observe_group(&group.namespace, &group.name, &status);
    let settled = status.leader.is_some() && status.members.iter().all(|m| m.answering);
    ctx.remember_status(key, status);
    let mut requeue_ms = if settled {
        ctx.settings.requeue_settled_ms
    } else {
        ctx.settings.requeue_unsettled_ms
    };
    if in_progress {
        requeue_ms = requeue_ms.min(ctx.settings.requeue_in_progress_ms);
    }
    Ok(Action::requeue(Duration::from_millis(requeue_ms)))
}

/// Runs the planner and both executors on what this reconcile observed.
fn plan_and_execute(
    resource: &DLedgerGroup,
    group: &Group<'_>,
    observed: &[Observed],
    previous: &DLedgerGroupStatus,
    leader: Option<&str>,
    update_revision: Option<&str>,
    (now, now_seconds): (&str, i64),
) -> (Execution, SwitchoverExecution) {
    let annotations = resource.annotations();
    let plan = upgrade::plan_input(
        &group.spec.upgrade,
        annotations,
        update_revision,
        observed,
        previous.upgrade.as_ref(),
        now_seconds,
    );
    let step = planner::plan(&plan);
    let pod_uids: BTreeMap<String, String> = observed
        .iter()
        .filter_map(|member| Some((member.name.clone(), member.pod.as_ref()?.uid.clone()?)))
        .collect();
    let execution = upgrade::execute(&ExecInput {
        plan: &plan,
        step: &step,
        pod_uids: &pod_uids,
        paused: annotations.get(PAUSE_ANNOTATION).map(String::as_str) == Some("true"),
        recorded: previous.upgrade.as_ref(),
        previous_conditions: &previous.conditions,
        now,
    });
    let upgrade_busy = execution.action.is_some()
        || matches!(
            step,
            Step::StepTimedOut { .. }
                | Step::Wait {
                    reason: WaitReason::RestartNotComplete { .. }
                        | WaitReason::TransferNotComplete { .. }
                }
        );
    let members: Vec<String> = observed.iter().map(|m| m.name.clone()).collect();
    let switching = switchover::execute(&SwitchoverInput {
        target: group.spec.switchover.as_ref().map(|s| s.target.as_str()),
        recorded: previous.switchover.as_ref(),
        members: &members,
        leader,
        upgrade_busy,
        step_timeout_seconds: group.spec.upgrade.step_timeout_seconds,
        previous_conditions: &previous.conditions,
        now,
        now_seconds,
    });
    (execution, switching)
}

/// Folds both executors' decisions into the status and the Events; returns
/// the one action to take, the upgrade's first.
fn fold_executions(
    status: &mut DLedgerGroupStatus,
    notices: &mut Vec<Notice>,
    execution: Execution,
    switching: SwitchoverExecution,
    previous: &[Condition],
    now: &str,
    generation: Option<i64>,
) -> Option<Disruption> {
    status.upgrade = execution.upgrade;
    status.switchover = switching.switchover;
    if let Some(verdict) = execution.progressing.or(switching.progressing) {
        upgrade::set_condition(status, "Progressing", &verdict, previous, now, generation);
    }
    if let Some(verdict) = execution.degraded.or(switching.degraded) {
        upgrade::set_condition(status, "Degraded", &verdict, previous, now, generation);
        status.phase = Some("Degraded".to_string());
        // The poll's own trouble is hidden under this one; announcing it at
        // every reconcile (its reason never matches the written one) is noise.
        notices.retain(|notice| !decide::is_trouble_reason(&notice.reason));
    }
    notices.extend(execution.notices);
    notices.extend(switching.notices);
    execution.action.or(switching.action)
}

/// Removes one annotation from the resource (a JSON merge patch with null).
async fn remove_annotation(
    ctx: &Context,
    group: &Group<'_>,
    annotation: &str,
) -> Result<(), Error> {
    let groups: Api<DLedgerGroup> = Api::namespaced(ctx.client.clone(), &group.namespace);
    let patch = serde_json::json!({"metadata": {"annotations": {annotation: null}}});
    api_call(
        ctx,
        format!("remove annotation {annotation} from {}", group.name),
        groups.patch(&group.name, &PatchParams::default(), &Patch::Merge(&patch)),
    )
    .await?;
    Ok(())
}

/// Carries out one disruptive step. A failed transfer is not an error of the
/// reconcile (the next one retries it): its reason comes back for the status.
async fn carry_out(
    ctx: &Context,
    group: &Group<'_>,
    access: &Access,
    pods: &[Option<Arc<Pod>>],
    action: &Disruption,
) -> Result<Option<String>, Error> {
    match action {
        Disruption::DeletePod { member, uid } => {
            let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &group.namespace);
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            let deleting = api_call(
                ctx,
                format!("delete pod {member}"),
                pods_api.delete(member, &params),
            )
            .await;
            match deleting {
                Ok(_) => Ok(None),
                // Gone already, or replaced (the uid precondition failed):
                // either way that pod is not running any more.
                Err(Error::Api {
                    source: kube::Error::Api(status),
                    ..
                }) if status.code == 404 || status.code == 409 => Ok(None),
                Err(err) => Err(err),
            }
        }
        Disruption::Transfer { from, to } => {
            let pod = pods.iter().flatten().find(|pod| pod.name_any() == *from);
            let Some(address) = member_address(
                group,
                pod.map(|p| p.as_ref()),
                ctx.settings.member_http_port,
            ) else {
                return Ok(Some(format!("the leader {from} has no pod address")));
            };
            match poll::transfer(access, &address, to, ctx.settings.transfer_timeout_ms).await {
                Ok(transferred) => {
                    tracing::info!(group = %group.name, from = %from, to = %transferred.leader_id, term = transferred.term, "leadership transferred");
                    Ok(None)
                }
                Err(reason) => Ok(Some(format!(
                    "transfer of leadership from {from} to {to} failed, retrying: {reason}"
                ))),
            }
        }
    }
}

/// Makes a membership step's admin call on the member it concerns: the
/// leader, or for a transfer the leader about to be removed.
async fn change_members(
    ctx: &Context,
    group: &Group<'_>,
    access: &Access,
    pods: &[Option<Arc<Pod>>],
    scaling: &ScaleExecution,
    call: &membership::Change,
) -> Result<(), String> {
    let Some(leader) = &scaling.leader else {
        return Err("no leader to ask".to_string());
    };
    let pod = pods.iter().flatten().find(|pod| pod.name_any() == *leader);
    let Some(address) = member_address(
        group,
        pod.map(|p| p.as_ref()),
        ctx.settings.member_http_port,
    ) else {
        return Err(format!("the leader {leader} has no pod address"));
    };
    scale::call(
        group,
        access,
        &address,
        call,
        ctx.settings.transfer_timeout_ms,
    )
    .await?;
    tracing::info!(group = %group.name, ?call, "membership step committed");
    Ok(())
}

/// Writes why a step failed (it is retried) into the Progressing condition.
async fn write_step_failure(
    ctx: &Context,
    group: &Group<'_>,
    mut status: DLedgerGroupStatus,
    (reason, failure): (&str, String),
    now: &str,
    generation: Option<i64>,
) -> Result<DLedgerGroupStatus, Error> {
    tracing::warn!(group = %group.name, reason, failure = %failure, "step failed");
    let verdict = Verdict {
        status: true,
        reason: reason.to_string(),
        message: failure,
    };
    let previous = status.conditions.clone();
    upgrade::set_condition(
        &mut status,
        "Progressing",
        &verdict,
        &previous,
        now,
        generation,
    );
    write_status(ctx, group, &status).await?;
    Ok(status)
}

async fn write_status(
    ctx: &Context,
    group: &Group<'_>,
    status: &DLedgerGroupStatus,
) -> Result<(), Error> {
    let groups: Api<DLedgerGroup> = Api::namespaced(ctx.client.clone(), &group.namespace);
    let patch = serde_json::json!({
        "apiVersion": "dledger.io/v1alpha1",
        "kind": "DLedgerGroup",
        "status": status,
    });
    let params = PatchParams::apply(MANAGED_BY).force();
    api_call(
        ctx,
        format!("write status of {}", group.name),
        groups.patch_status(&group.name, &params, &Patch::Apply(&patch)),
    )
    .await?;
    Ok(())
}

/// The member's address once its pod has an IP.
fn member_address(group: &Group<'_>, pod: Option<&Pod>, port: u16) -> Option<Address> {
    let pod = pod?;
    let ip = pod.status.as_ref()?.pod_ip.as_ref()?;
    let at = if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    };
    let host = format!("{}:{port}", specs::tls::member_host(group, &pod.name_any()));
    Some(Address { at, host })
}

/// What the decisions need from a pod.
pub fn pod_facts(pod: &Pod) -> PodFacts {
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
    let waiting = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|containers| containers.iter().find(|c| c.name == "replica"))
        .and_then(|c| c.state.as_ref())
        .and_then(|state| state.waiting.as_ref());
    PodFacts {
        ready,
        role_label: pod.labels().get(ROLE_LABEL).cloned(),
        revision: pod.labels().get("controller-revision-hash").cloned(),
        waiting_reason: waiting.and_then(|w| w.reason.clone()),
        waiting_message: waiting.and_then(|w| w.message.clone()),
        uid: pod.metadata.uid.clone(),
        deleting: pod.metadata.deletion_timestamp.is_some(),
        // Set against the previous poll by the reconcile.
        restarts_rising: false,
    }
}

/// The replica container's restart count.
fn restart_count(pod: &Pod) -> Option<i32> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == "replica")
        .map(|c| c.restart_count)
}

async fn publish(ctx: &Context, group: &DLedgerGroup, warning: bool, reason: &str, note: String) {
    tracing::info!(group = %group.name_any(), reason, note = %note, "event");
    let Some(reporter) = &ctx.reporter else {
        return;
    };
    // A recorder of its own for each Event: kube's Recorder folds Events of
    // one reason into a series that keeps the first note, so a second
    // member replaced (or any second notice of a kind) would be reported
    // with the first one's sentence. Notices are edge-triggered by the
    // decisions, so there is no flood to fold.
    let recorder = Recorder::new(ctx.client.clone(), reporter.clone());
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.to_string(),
        note: Some(note),
        action: "Reconcile".to_string(),
        secondary: None,
    };
    // An Event that cannot be written is logged, never a failed reconcile.
    let reference = group.object_ref(&());
    let publishing = recorder.publish(&event, &reference);
    match tokio::time::timeout(
        Duration::from_millis(ctx.settings.api_timeout_ms),
        publishing,
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            tracing::warn!(group = %group.name_any(), reason, error = %err, "could not publish event")
        }
        Err(_) => {
            tracing::warn!(group = %group.name_any(), reason, "publishing an event timed out")
        }
    }
}

/// After a failed reconcile: count it, log it, try again soon.
pub fn error_policy(group: Arc<DLedgerGroup>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .errors
        .with_label_values(&[error.metric_label()])
        .inc();
    tracing::warn!(group = %group.name_any(), namespace = ?group.namespace(), error = %error, "reconcile failed");
    Action::requeue(Duration::from_millis(ctx.settings.error_requeue_ms))
}

/// The watches of the managed children (one label selector for all).
fn managed() -> watcher::Config {
    watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"))
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    metrics: Metrics,
    settings: Settings,
    reporter: Reporter,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let groups: Api<DLedgerGroup> = Api::all(client.clone());
    let (group_store, group_writer) = reflector::store();
    let (sts_store, sts_writer) = reflector::store();
    let (svc_store, svc_writer) = reflector::store();
    let (pdb_store, pdb_writer) = reflector::store();
    let (pod_store, pod_writer) = reflector::store();
    let (configmap_store, configmap_writer) = reflector::store();
    let (secret_store, secret_writer) = reflector::store();
    let (policy_store, policy_writer) = reflector::store();

    // Status writes must not trigger reconciles: only spec and annotation
    // changes do (the pause, approval and restart annotations), and the timer.
    let group_stream =
        reflector::reflector(group_writer, watcher(groups, watcher::Config::default()))
            .default_backoff()
            .applied_objects()
            .predicate_filter(
                predicates::generation.combine(predicates::annotations),
                Default::default(),
            );
    let sts_stream = reflector::reflector(
        sts_writer,
        watcher(Api::<StatefulSet>::all(client.clone()), managed()),
    )
    .default_backoff()
    .touched_objects();
    let svc_stream = reflector::reflector(
        svc_writer,
        watcher(Api::<Service>::all(client.clone()), managed()),
    )
    .default_backoff()
    .touched_objects();
    let pdb_stream = reflector::reflector(
        pdb_writer,
        watcher(Api::<PodDisruptionBudget>::all(client.clone()), managed()),
    )
    .default_backoff()
    .touched_objects();
    let pod_stream = reflector::reflector(
        pod_writer,
        watcher(Api::<Pod>::all(client.clone()), managed()),
    )
    .default_backoff()
    .touched_objects();
    let configmap_stream = reflector::reflector(
        configmap_writer,
        watcher(Api::<ConfigMap>::all(client.clone()), managed()),
    )
    .default_backoff()
    .touched_objects();
    let secret_stream = reflector::reflector(
        secret_writer,
        watcher(Api::<Secret>::all(client.clone()), managed()),
    )
    .default_backoff()
    .touched_objects();
    let policy_stream = reflector::reflector(
        policy_writer,
        watcher(Api::<NetworkPolicy>::all(client.clone()), managed()),
    )
    .default_backoff()
    .touched_objects();

    let stores = Stores {
        statefulsets: sts_store,
        services: svc_store,
        pdbs: pdb_store,
        pods: pod_store,
        configmaps: configmap_store,
        secrets: secret_store,
        network_policies: policy_store,
    };
    let reporter = Some(reporter);
    let ctx = Arc::new(Context::new(client, reporter, metrics, settings, stores));
    Controller::for_stream(group_stream, group_store)
        .owns_stream(sts_stream)
        .owns_stream(svc_stream)
        .owns_stream(pdb_stream)
        .owns_stream(configmap_stream)
        .owns_stream(secret_stream)
        .owns_stream(policy_stream)
        .watches_stream(pod_stream, |pod: Pod| {
            let namespace = pod.namespace()?;
            let instance = pod.labels().get(INSTANCE_LABEL)?.clone();
            Some(ObjectRef::<DLedgerGroup>::new(&instance).within(&namespace))
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(error = %err, "controller");
            }
        })
        .await;
}

#[cfg(test)]
mod tests;
