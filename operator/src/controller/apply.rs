//! The children, applied by server-side apply with one field manager, and
//! put back when someone edits or deletes them. A child is applied when the
//! group's generation or its restart annotation changed, or when the watched
//! copy no longer looks like what the last apply returned.

use std::fmt::Debug;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{api_call, Context, Error};
use crate::specs::{self, Group, MANAGED_BY};

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
    /// The restart annotation it was applied for (annotations do not bump
    /// the generation, yet this one changes the pod template).
    pub restarted_at: Option<String>,
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

/// Applies every child that needs it.
pub async fn ensure_children(
    ctx: &Context,
    group: &Group<'_>,
    generation: Option<i64>,
) -> Result<Outcome, Error> {
    let mut outcome = Outcome::default();
    let sts = ensure(
        ctx,
        group,
        generation,
        specs::statefulset(group),
        &ctx.stores.statefulsets,
        true,
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
            generation,
            service,
            &ctx.stores.services,
            false,
            &mut outcome,
        )
        .await?;
    }
    ensure(
        ctx,
        group,
        generation,
        specs::pod_disruption_budget(group),
        &ctx.stores.pdbs,
        true,
        &mut outcome,
    )
    .await?;
    Ok(outcome)
}

async fn ensure<K>(
    ctx: &Context,
    group: &Group<'_>,
    generation: Option<i64>,
    desired: K,
    store: &Store<K>,
    by_generation: bool,
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
    let observed = store
        .get(&ObjectRef::new(&name).within(&group.namespace))
        .map(|object| Fingerprint::of(object.meta(), by_generation));
    let recorded = ctx.applied_record(&key);
    let fresh = recorded
        .as_ref()
        .is_some_and(|r| r.generation == generation && r.restarted_at == group.restarted_at);
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
            restarted_at: group.restarted_at.clone(),
            fingerprint,
        },
    );
    Ok(Some(applied))
}
