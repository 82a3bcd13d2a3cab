//! Leader election on a `coordination.k8s.io/v1` Lease, so two operator
//! replicas never act together: the controller runs only while this process
//! holds the Lease, and the process stops when it can no longer renew it.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Client;

/// Where the Lease lives and who we are.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// The operator's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This process (its pod name).
    pub identity: String,
    /// How long a holder that stopped renewing keeps the Lease.
    pub lease_duration_s: i32,
    /// How often the holder renews it (well inside the duration).
    pub renew_every_ms: u64,
}

/// What to do with the Lease as it stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// There is none: create it, held by us.
    Create,
    /// We hold it: renew it.
    Renew,
    /// Its holder stopped renewing (or released it): take it.
    TakeOver,
    /// Someone else holds it: wait.
    Wait,
}

/// The decision, given the Lease's spec (if any), our identity and the time.
pub fn step(spec: Option<&LeaseSpec>, identity: &str, now_ms: i64) -> Step {
    let Some(spec) = spec else {
        return Step::Create;
    };
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == identity => Step::Renew,
        None | Some("") => Step::TakeOver,
        Some(_) => {
            let renewed_ms = spec
                .renew_time
                .as_ref()
                .or(spec.acquire_time.as_ref())
                .map(|time| time.0.as_millisecond());
            let duration_ms = i64::from(spec.lease_duration_seconds.unwrap_or(15)) * 1000;
            match renewed_ms {
                Some(renewed_ms) if now_ms - renewed_ms <= duration_ms => Step::Wait,
                _ => Step::TakeOver,
            }
        }
    }
}

/// Why the Lease could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The API failed.
    #[error("lease {name}: {source}")]
    Api {
        /// The Lease.
        name: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// No renewal succeeded within the lease duration.
    #[error("lease {0}: not renewed within its duration; leadership lost")]
    Lost(String),
}

fn held_spec(
    settings: &LeaseSettings,
    now: Timestamp,
    previous: Option<&LeaseSpec>,
    take_over: bool,
) -> LeaseSpec {
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(settings.identity.clone()),
        lease_duration_seconds: Some(settings.lease_duration_s),
        acquire_time: if take_over {
            Some(MicroTime(now))
        } else {
            previous
                .and_then(|p| p.acquire_time.clone())
                .or(Some(MicroTime(now)))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if take_over {
            transitions + 1
        } else {
            transitions
        }),
        ..LeaseSpec::default()
    }
}

/// One attempt: `Ok(true)` when we hold the Lease afterwards.
pub async fn try_hold(api: &Api<Lease>, settings: &LeaseSettings) -> Result<bool, LeaseError> {
    let api_error = |source| LeaseError::Api {
        name: settings.name.clone(),
        source,
    };
    let current = api.get_opt(&settings.name).await.map_err(api_error)?;
    let now = Timestamp::now();
    let spec = current.as_ref().and_then(|lease| lease.spec.as_ref());
    let result = match step(spec, &settings.identity, now.as_millisecond()) {
        Step::Wait => return Ok(false),
        Step::Create => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(settings.name.clone()),
                    namespace: Some(settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(held_spec(settings, now, None, false)),
            };
            api.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        step @ (Step::Renew | Step::TakeOver) => {
            let Some(mut lease) = current.clone() else {
                return Ok(false);
            };
            lease.spec = Some(held_spec(settings, now, spec, step == Step::TakeOver));
            // The resourceVersion in `lease` makes this a compare-and-swap.
            api.replace(&settings.name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
    };
    match result {
        Ok(()) => Ok(true),
        // Someone else wrote first: they hold it.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(source) => Err(api_error(source)),
    }
}

/// Waits until this process holds the Lease.
pub async fn acquire(client: &Client, settings: &LeaseSettings) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &settings.namespace);
    loop {
        match try_hold(&api, settings).await {
            Ok(true) => {
                tracing::info!(lease = %settings.name, identity = %settings.identity, "leading");
                return;
            }
            Ok(false) => tracing::debug!(lease = %settings.name, "another replica leads"),
            Err(err) => tracing::warn!(error = %err, "lease"),
        }
        tokio::time::sleep(Duration::from_millis(settings.renew_every_ms)).await;
    }
}

/// Renews the Lease until a renewal has not succeeded for a whole lease
/// duration (or someone else took it); then returns why.
pub async fn hold(client: &Client, settings: &LeaseSettings) -> LeaseError {
    let api: Api<Lease> = Api::namespaced(client.clone(), &settings.namespace);
    // Give up a little before the others may take over.
    let deadline = Duration::from_secs(settings.lease_duration_s.max(2) as u64 - 1);
    let mut last_renewed = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(settings.renew_every_ms)).await;
        match try_hold(&api, settings).await {
            Ok(true) => last_renewed = tokio::time::Instant::now(),
            Ok(false) => return LeaseError::Lost(settings.name.clone()),
            Err(err) => tracing::warn!(error = %err, "lease renewal failed"),
        }
        if last_renewed.elapsed() >= deadline {
            return LeaseError::Lost(settings.name.clone());
        }
    }
}

/// Gives the Lease up at shutdown so a standby takes over at once.
pub async fn release(client: &Client, settings: &LeaseSettings) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &settings.namespace);
    let Ok(Some(mut lease)) = api.get_opt(&settings.name).await else {
        return;
    };
    let holds = lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        == Some(settings.identity.as_str());
    if !holds {
        return;
    }
    if let Some(spec) = lease.spec.as_mut() {
        spec.holder_identity = None;
    }
    if let Err(err) = api
        .replace(&settings.name, &PostParams::default(), &lease)
        .await
    {
        tracing::warn!(error = %err, "could not release the lease");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed_ms: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(Timestamp::from_millisecond(renewed_ms).unwrap())),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn no_lease_is_created_ours_is_renewed() {
        assert_eq!(step(None, "a", 0), Step::Create);
        assert_eq!(step(Some(&spec(Some("a"), 0)), "a", 100_000), Step::Renew);
    }

    #[test]
    fn a_live_holder_is_waited_for_a_silent_one_replaced() {
        let lease = spec(Some("b"), 1_000_000);
        assert_eq!(step(Some(&lease), "a", 1_000_000 + 14_999), Step::Wait);
        assert_eq!(step(Some(&lease), "a", 1_000_000 + 15_000), Step::Wait);
        assert_eq!(step(Some(&lease), "a", 1_000_000 + 15_001), Step::TakeOver);
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        assert_eq!(
            step(Some(&spec(None, 1_000_000)), "a", 1_000_001),
            Step::TakeOver
        );
        assert_eq!(
            step(Some(&spec(Some(""), 1_000_000)), "a", 1_000_001),
            Step::TakeOver
        );
    }

    #[test]
    fn taking_over_counts_a_transition() {
        let settings = LeaseSettings {
            namespace: "ops".into(),
            name: "dledger-operator".into(),
            identity: "a".into(),
            lease_duration_s: 15,
            renew_every_ms: 2000,
        };
        let mut before = spec(Some("b"), 0);
        before.lease_transitions = Some(3);
        let now = Timestamp::from_millisecond(50_000).unwrap();
        let taken = held_spec(&settings, now, Some(&before), true);
        assert_eq!(taken.lease_transitions, Some(4));
        assert_eq!(taken.holder_identity.as_deref(), Some("a"));
        let renewed = held_spec(&settings, now, Some(&taken), false);
        assert_eq!(renewed.lease_transitions, Some(4));
    }
}
