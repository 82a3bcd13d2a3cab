//! The children, applied by server-side apply with one field manager, and
//! put back when someone edits or deletes them. A child is applied when the
//! group's generation or the builders' other inputs changed (the restart
//! annotation, the StatefulSet's replicas, the join ConfigMap), or when the
//! watched copy no longer looks like what the last apply returned.

use std::fmt::Debug;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{api_call, Context, Error};
use crate::specs::{self, Group, Join, MANAGED_BY};

/// What identifies a child's state we care about: a recreated object has a
/// new uid; a changed spec a new generation (or, without one, a new
/// resourceVersion); labels are compared because metadata edits do not bump
/// the generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    uid: Option<String>,
    version: Option<String>,
    labels: Option<std::collections::BTreeMap<String, String>>,
}

impl Fingerprint {
    fn of(meta: &ObjectMeta, by_generation: bool) -> Fingerprint {
        Fingerprint {
            uid: meta.uid.clone(),
            version: if by_generation {
                meta.generation.map(|g| g.to_string())
            } else {
                meta.resource_version.clone()
            },
            labels: meta.labels.clone(),
        }
    }
}

/// The record of the last apply of one child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The group generation it was applied for.
    pub generation: Option<i64>,
    /// The builder's inputs besides the spec: the restart annotation
    /// (annotations do not bump the generation, yet this one changes the pod
    /// template), the StatefulSet's replicas, the join ConfigMap's contents.
    pub inputs: String,
    /// What the apply returned.
    pub fingerprint: Fingerprint,
}

/// What applying the children did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Children that had been edited or deleted by hand and were put back ("Kind/name").
    pub repaired: Vec<String>,
    /// The StatefulSet as the API holds it now (for its revisions).
    pub statefulset: Option<StatefulSet>,
}

/// What the children are built from besides the resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inputs<'a> {
    /// The StatefulSet's replicas (the membership planner's).
    pub statefulset_replicas: u32,
    /// What the join ConfigMap says.
    pub join: &'a Join,
}

/// Applies every child that needs it; the join ConfigMap first, since the
/// pods read it at start.
pub async fn ensure_children(
    ctx: &Context,
    group: &Group<'_>,
    generation: Option<i64>,
    inputs: &Inputs<'_>,
) -> Result<Outcome, Error> {
    let mut outcome = Outcome::default();
    let fingerprint = format!(
        "{:?}/{}/{:?}",
        group.restarted_at, inputs.statefulset_replicas, inputs.join
    );
    let child = |by_generation| Child {
        generation,
        inputs: &fingerprint,
        by_generation,
    };
    ensure(
        ctx,
        group,
        child(false),
        specs::join_config_map(group, inputs.join),
        &ctx.stores.configmaps,
        &mut outcome,
    )
    .await?;
    let sts = ensure(
        ctx,
        group,
        child(true),
        specs::statefulset(group, inputs.statefulset_replicas),
        &ctx.stores.statefulsets,
        &mut outcome,
    )
    .await?;
    outcome.statefulset = sts;
    for service in [
        specs::peers_service(group),
        specs::client_service(group),
        specs::leader_service(group),
    ] {
        ensure(
            ctx,
            group,
            child(false),
            service,
            &ctx.stores.services,
            &mut outcome,
        )
        .await?;
    }
    ensure(
        ctx,
        group,
        child(true),
        specs::pod_disruption_budget(group),
        &ctx.stores.pdbs,
        &mut outcome,
    )
    .await?;
    if group.spec.network_policy.enabled {
        let policy = specs::network_policy(group, ctx.settings.operator_namespace.as_deref());
        ensure(
            ctx,
            group,
            child(true),
            policy,
            &ctx.stores.network_policies,
            &mut outcome,
        )
        .await?;
    } else {
        remove_network_policy(ctx, group).await?;
    }
    Ok(outcome)
}

/// Deletes the group's NetworkPolicy once `spec.networkPolicy.enabled` is
/// turned off (only one this operator made: it carries the group's
/// controller reference).
async fn remove_network_policy(ctx: &Context, group: &Group<'_>) -> Result<(), Error> {
    let owned = ctx
        .stores
        .network_policies
        .get(&ObjectRef::new(&group.name).within(&group.namespace))
        .is_some_and(|policy| {
            policy
                .owner_references()
                .iter()
                .any(|owner| owner.uid == group.owner.uid)
        });
    if !owned {
        return Ok(());
    }
    let api: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), &group.namespace);
    let deleted = api_call(
        ctx,
        format!("delete NetworkPolicy {}", group.name),
        api.delete(&group.name, &DeleteParams::default()),
    )
    .await;
    match deleted {
        Ok(_) => Ok(()),
        Err(Error::Api {
            source: kube::Error::Api(status),
            ..
        }) if status.code == 404 => Ok(()),
        Err(err) => Err(err),
    }
}

/// How one child is recognised as applied already.
#[derive(Clone, Copy)]
struct Child<'a> {
    generation: Option<i64>,
    inputs: &'a str,
    /// Changes show in its generation (else in its resourceVersion).
    by_generation: bool,
}

async fn ensure<K>(
    ctx: &Context,
    group: &Group<'_>,
    child: Child<'_>,
    desired: K,
    store: &Store<K>,
    outcome: &mut Outcome,
) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let name = desired.meta().name.clone().unwrap_or_default();
    let kind = K::kind(&()).to_string();
    let key = format!("{kind}/{}/{name}", group.namespace);
    let Child {
        generation,
        inputs,
        by_generation,
    } = child;
    let observed = store
        .get(&ObjectRef::new(&name).within(&group.namespace))
        .map(|object| Fingerprint::of(object.meta(), by_generation));
    let recorded = ctx.applied_record(&key);
    let fresh = recorded
        .as_ref()
        .is_some_and(|r| r.generation == generation && r.inputs == inputs);
    if fresh && observed.as_ref() == recorded.as_ref().map(|r| &r.fingerprint) {
        return Ok(store
            .get(&ObjectRef::new(&name).within(&group.namespace))
            .map(|o| (*o).clone()));
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &group.namespace);
    let params = PatchParams::apply(MANAGED_BY).force();
    let applied = api_call(
        ctx,
        format!("apply {kind} {name}"),
        api.patch(&name, &params, &Patch::Apply(&desired)),
    )
    .await?;
    let fingerprint = Fingerprint::of(applied.meta(), by_generation);
    // A repair: the spec did not change, yet the apply changed the object
    // (edited by hand) or found it recreated (deleted by hand).
    if let Some(recorded) = recorded.filter(|_| fresh) {
        let recreated = fingerprint.uid != recorded.fingerprint.uid;
        // Changed since our last apply, and not merely a watch that lags or
        // an edit of fields that are not ours (which the apply leaves alone).
        let reverted =
            fingerprint != recorded.fingerprint && observed.as_ref() != Some(&fingerprint);
        if recreated || reverted {
            outcome.repaired.push(format!("{kind}/{name}"));
        }
    }
    ctx.record_applied(
        key,
        Applied {
            generation,
            inputs: inputs.to_string(),
            fingerprint,
        },
    );
    Ok(Some(applied))
}
