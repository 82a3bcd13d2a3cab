//! The operator's own CA per group: made once in `<name>-ca` (created,
//! never applied over: losing a CA would cut every member off), the
//! members' and applications' certificates it signs, and the operator's
//! admin certificate, kept in memory only (no Secret holds the admin
//! right).

use std::collections::BTreeMap;

use dledger_replica::certs::{read_certificate, Ca, Issued};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

use super::{access, apply, read, tls_error, watched, Access, OwnCertificate};
use crate::controller::{api_call, publish, Context, Error};
use crate::crd::DLedgerGroup;
use crate::specs::tls::{self as spec, Held, Pair, Renewal};
use crate::specs::Group;

const DAY_S: i64 = 86_400;

/// The operator's own CA: makes sure it and the certificates it signs
/// exist and are fresh; the operator's credentials for the group.
pub(super) async fn ensure(
    ctx: &Context,
    resource: &DLedgerGroup,
    group: &Group<'_>,
) -> Result<Access, Error> {
    let tls = &group.spec.tls;
    let now_s = Timestamp::now().as_second();
    let days = i64::from(tls.certificate_days);
    let renew_before_s = i64::from(tls.renew_before_days) * DAY_S;
    let ca = ca(ctx, resource, group).await?;
    let ca_pem = ca.cert_pem().to_string();
    let due = |held, names: &[String]| spec::renewal(held, names, &ca_pem, now_s, renew_before_s);

    // Members: every ordinal a group can have, in one Secret; those not
    // due keep their certificate.
    let wanted: Vec<(String, Vec<String>)> = (0..spec::MAX_MEMBERS)
        .map(|ordinal| {
            let pod = format!("{}-{ordinal}", group.name);
            let names = spec::member_certificate_names(group, &pod);
            (pod, names)
        })
        .collect();
    let members_due = |secret: Option<&Secret>| -> Vec<(String, Renewal)> {
        wanted
            .iter()
            .filter_map(|(pod, names)| {
                let held = held(secret, &format!("{pod}.crt"), &format!("{pod}.key"));
                due(held, names).map(|why| (pod.clone(), why))
            })
            .collect()
    };
    renew(
        ctx,
        resource,
        group,
        spec::members_secret_name(group),
        members_due,
        |current, renewals| {
            let mut pairs: BTreeMap<String, Pair> = wanted
                .iter()
                .filter_map(|(pod, _)| {
                    let secret = current?;
                    Some((
                        pod.clone(),
                        Pair {
                            cert_pem: spec::secret_text(secret, &format!("{pod}.crt"))?,
                            key_pem: spec::secret_text(secret, &format!("{pod}.key"))?,
                        },
                    ))
                })
                .collect();
            for (pod, names) in wanted
                .iter()
                .filter(|(pod, _)| renewals.iter().any(|(p, _)| p == pod))
            {
                pairs.insert(pod.clone(), pair(issue(group, &ca, names, days)?));
            }
            Ok(spec::members_secret(group, &ca_pem, &pairs))
        },
    )
    .await?;

    // Applications.
    let client_names = vec![spec::client_name(group)];
    let client_due = |secret: Option<&Secret>| -> Vec<(String, Renewal)> {
        let held = held(secret, spec::CLIENT_CERT_KEY, spec::CLIENT_KEY_KEY);
        due(held, &client_names)
            .map(|why| (client_names[0].clone(), why))
            .into_iter()
            .collect()
    };
    renew(
        ctx,
        resource,
        group,
        spec::client_secret_name(group),
        client_due,
        |_, _| {
            let issued = pair(issue(group, &ca, &client_names, days)?);
            Ok(spec::client_secret(group, &ca_pem, &issued))
        },
    )
    .await?;

    let own = own_certificate(ctx, group, &ca, now_s, renew_before_s, days)?;
    Ok(access(own.ca_pem, own.issued.cert_pem, own.issued.key_pem))
}

/// Issues Secret `name` again through `build` when `due` finds
/// certificates in it to issue: first in the watched copy, then in an
/// authoritative read (a watch behind this operator's last write must not
/// make it issue twice).
async fn renew(
    ctx: &Context,
    resource: &DLedgerGroup,
    group: &Group<'_>,
    name: String,
    due: impl Fn(Option<&Secret>) -> Vec<(String, Renewal)>,
    build: impl FnOnce(Option<&Secret>, &[(String, Renewal)]) -> Result<Secret, Error>,
) -> Result<(), Error> {
    if due(watched(ctx, group, &name).as_deref()).is_empty() {
        return Ok(());
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &group.namespace);
    let current = read(ctx, &secrets, &name).await?;
    let renewals = due(current.as_ref());
    if renewals.is_empty() {
        return Ok(());
    }
    apply(ctx, &secrets, build(current.as_ref(), &renewals)?).await?;
    announce(ctx, resource, &name, &renewals).await;
    Ok(())
}

/// The group's CA: from `<name>-ca`, or made and created there.
async fn ca(ctx: &Context, resource: &DLedgerGroup, group: &Group<'_>) -> Result<Ca, Error> {
    let name = spec::ca_secret_name(group);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &group.namespace);
    let existing = match watched(ctx, group, &name) {
        Some(secret) => Some((*secret).clone()),
        None => read(ctx, &secrets, &name).await?,
    };
    if let Some(secret) = existing {
        return ca_of(group, &secret);
    }
    let (ca, issued) = Ca::new(&group.name, spec::CA_DAYS).map_err(|err| tls_error(group, err))?;
    let secret = spec::ca_secret(group, &pair(issued));
    let created = api_call(
        ctx,
        format!("create Secret {name}"),
        secrets.create(&PostParams::default(), &secret),
    )
    .await;
    match created {
        Ok(_) => {
            publish(
                ctx,
                resource,
                false,
                "CertificateAuthorityCreated",
                format!("Secret {name} holds the group's new CA"),
            )
            .await;
            Ok(ca)
        }
        // Made meanwhile (another operator replica, or a watch behind):
        // that one is the group's CA.
        Err(Error::Api {
            source: kube::Error::Api(status),
            ..
        }) if status.code == 409 => match read(ctx, &secrets, &name).await? {
            Some(secret) => ca_of(group, &secret),
            None => Err(tls_error(
                group,
                format!("Secret {name} exists and cannot be read"),
            )),
        },
        Err(err) => Err(err),
    }
}

fn ca_of(group: &Group<'_>, secret: &Secret) -> Result<Ca, Error> {
    let name = spec::ca_secret_name(group);
    let (Some(cert), Some(key)) = (
        spec::secret_text(secret, spec::CA_CERT_KEY),
        spec::secret_text(secret, spec::CA_KEY_KEY),
    ) else {
        return Err(tls_error(
            group,
            format!("Secret {name} lacks {} or {}; restore it, or delete it to have a new CA made (every member then reloads new certificates)", spec::CA_CERT_KEY, spec::CA_KEY_KEY),
        ));
    };
    Ca::from_pem(&cert, &key).map_err(|err| tls_error(group, format!("Secret {name}: {err}")))
}

/// The operator's admin certificate for the group, issued again with the
/// group's CA or near its end.
fn own_certificate(
    ctx: &Context,
    group: &Group<'_>,
    ca: &Ca,
    now_s: i64,
    renew_before_s: i64,
    days: i64,
) -> Result<OwnCertificate, Error> {
    let key = format!("{}/{}", group.namespace, group.name);
    let names = vec![spec::OPERATOR_NAME.to_string()];
    let kept = ctx.own_certificate(&key);
    let held = Ok(kept.as_ref().map(|own| Held {
        names: names.clone(),
        not_after_s: own.issued.not_after.unix_timestamp(),
        ca_pem: own.ca_pem.clone(),
    }));
    if let (None, Some(own)) = (
        spec::renewal(held, &names, ca.cert_pem(), now_s, renew_before_s),
        kept,
    ) {
        return Ok(own);
    }
    let own = OwnCertificate {
        ca_pem: ca.cert_pem().to_string(),
        issued: issue(group, ca, &names, days)?,
    };
    ctx.remember_own_certificate(key, own.clone());
    Ok(own)
}

/// What `secret` holds under `cert_key` and `key_key`, as the renewal rule
/// reads it.
fn held(secret: Option<&Secret>, cert_key: &str, key_key: &str) -> Result<Option<Held>, String> {
    let Some(secret) = secret else {
        return Ok(None);
    };
    let Some(cert) = spec::secret_text(secret, cert_key) else {
        return Ok(None);
    };
    if spec::secret_text(secret, key_key).is_none() {
        return Err(format!("{key_key} is missing"));
    }
    let facts = read_certificate(&cert).map_err(|err| err.to_string())?;
    Ok(Some(Held {
        names: facts.names,
        not_after_s: facts.not_after.unix_timestamp(),
        ca_pem: spec::secret_text(secret, spec::CA_CERT_KEY).unwrap_or_default(),
    }))
}

async fn announce(
    ctx: &Context,
    resource: &DLedgerGroup,
    secret: &str,
    renewals: &[(String, Renewal)],
) {
    let what: Vec<String> = renewals
        .iter()
        .map(|(name, why)| format!("{name} ({why})"))
        .collect();
    tracing::info!(secret, issued = ?what, "certificates issued");
    publish(
        ctx,
        resource,
        false,
        "CertificatesIssued",
        format!("Secret {secret}: issued {}", what.join(", ")),
    )
    .await;
}

fn issue(group: &Group<'_>, ca: &Ca, names: &[String], days: i64) -> Result<Issued, Error> {
    ca.issue(names, days).map_err(|err| tls_error(group, err))
}

fn pair(issued: Issued) -> Pair {
    Pair {
        cert_pem: issued.cert_pem,
        key_pem: issued.key_pem,
    }
}
