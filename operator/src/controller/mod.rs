//! The reconcile loop: apply the children, poll the members, decide, then
//! write the role labels, the status and the Events. Deciding is pure
//! ([`decide`]); this module is the API plumbing around it.

pub mod apply;
pub mod decide;
pub mod poll;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::runtime::{predicates, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};

use self::apply::Applied;
use self::decide::{decide, Decision, Facts, Observed, PodFacts};
use self::poll::{poll_members, Target};
use crate::crd::{DLedgerGroup, DLedgerGroupStatus};
use crate::metrics::Metrics;
use crate::specs::{
    self, Group, GroupError, INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL, ROLE_LABEL,
};

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
}

impl Stores {
    /// Whether every watch has delivered its first full list, waiting at most `wait`.
    pub async fn synced(&self, wait: Duration) -> bool {
        let all = async {
            self.statefulsets.wait_until_ready().await.is_ok()
                && self.services.wait_until_ready().await.is_ok()
                && self.pdbs.wait_until_ready().await.is_ok()
                && self.pods.wait_until_ready().await.is_ok()
        };
        tokio::time::timeout(wait, all).await.unwrap_or(false)
    }
}

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Publishes Events; `None` in tests that do not look at Events.
    pub recorder: Option<Recorder>,
    /// The metrics.
    pub metrics: Metrics,
    /// The knobs.
    pub settings: Settings,
    /// The watched children.
    pub stores: Stores,
    applied: Mutex<HashMap<String, Applied>>,
    previous: Mutex<HashMap<String, DLedgerGroupStatus>>,
}

impl Context {
    /// A context over `client` and `stores`.
    pub fn new(
        client: Client,
        recorder: Option<Recorder>,
        metrics: Metrics,
        settings: Settings,
        stores: Stores,
    ) -> Context {
        Context {
            client,
            recorder,
            metrics,
            settings,
            stores,
            applied: Mutex::new(HashMap::new()),
            previous: Mutex::new(HashMap::new()),
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
    let outcome = apply::ensure_children(ctx, &group, generation).await?;
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

    let members = specs::member_names(&group);
    let pods: Vec<Option<Arc<Pod>>> = members
        .iter()
        .map(|name| {
            ctx.stores
                .pods
                .get(&ObjectRef::new(name).within(&group.namespace))
        })
        .collect();
    let targets: Vec<Target> = members
        .iter()
        .zip(&pods)
        .map(|(name, pod)| Target {
            name: name.clone(),
            address: member_address(pod.as_deref(), ctx.settings.member_http_port),
        })
        .collect();
    let polled = poll_members(&targets, ctx.settings.poll_timeout_ms).await;
    let observed: Vec<Observed> = polled
        .into_iter()
        .zip(&pods)
        .map(|((name, polled), pod)| Observed {
            name,
            pod: pod.as_deref().map(pod_facts),
            polled,
        })
        .collect();

    let previous = ctx.previous_status(&key, resource);
    let now = Timestamp::now().to_string();
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
        status,
        labels,
        notices,
    } = decide(&facts, &observed);

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
    }
    for notice in notices {
        publish(ctx, resource, notice.warning, &notice.reason, notice.note).await;
    }
    ctx.metrics
        .observe_group(&group.namespace, &group.name, &status);
    let settled = status.leader.is_some() && status.members.iter().all(|m| m.answering);
    ctx.remember_status(key, status);
    let requeue_ms = if settled {
        ctx.settings.requeue_settled_ms
    } else {
        ctx.settings.requeue_unsettled_ms
    };
    Ok(Action::requeue(Duration::from_millis(requeue_ms)))
}

/// `podIP:port` once the pod has an address.
fn member_address(pod: Option<&Pod>, port: u16) -> Option<String> {
    let ip = pod?.status.as_ref()?.pod_ip.as_ref()?;
    if ip.contains(':') {
        Some(format!("[{ip}]:{port}"))
    } else {
        Some(format!("{ip}:{port}"))
    }
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
    }
}

async fn publish(ctx: &Context, group: &DLedgerGroup, warning: bool, reason: &str, note: String) {
    tracing::info!(group = %group.name_any(), reason, note = %note, "event");
    let Some(recorder) = &ctx.recorder else {
        return;
    };
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

    // Status writes must not trigger reconciles: only spec changes do (and the timer).
    let group_stream =
        reflector::reflector(group_writer, watcher(groups, watcher::Config::default()))
            .default_backoff()
            .applied_objects()
            .predicate_filter(predicates::generation, Default::default());
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

    let stores = Stores {
        statefulsets: sts_store,
        services: svc_store,
        pdbs: pdb_store,
        pods: pod_store,
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let ctx = Arc::new(Context::new(
        client,
        Some(recorder),
        metrics,
        settings,
        stores,
    ));
    Controller::for_stream(group_stream, group_store)
        .owns_stream(sts_stream)
        .owns_stream(svc_stream)
        .owns_stream(pdb_stream)
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
