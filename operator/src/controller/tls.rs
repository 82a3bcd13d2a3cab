//! The group's certificates: its CA, made once; a certificate per possible
//! member and one for applications, issued again when
//! [`specs::tls::renewal`] says so; and the operator's own admin
//! certificate, kept in memory only (no Secret holds the admin right).
//!
//! The watched Secrets decide whether anything is to be done; a certificate
//! is issued only after an authoritative read agrees, so a watch that lags
//! behind this operator's last write never makes it issue twice. The CA is
//! created, never applied over: losing a CA would cut every member off.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use dledger_replica::admin_client::{AdminClient, ClientTls, Credentials};
use dledger_replica::certs::{read_certificate, Ca, Issued};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::runtime::reflector::ObjectRef;

use super::poll::Address;
use super::{api_call, publish, Context, Error};
use crate::crd::{DLedgerGroup, IssuerRef};
use crate::specs::tls::{self as spec, Held, Pair, Renewal};
use crate::specs::{Group, MANAGED_BY};

const DAY_S: i64 = 86_400;

/// How the operator reaches the members of one group.
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// Its certificate and the group's CA; `None` when the group runs
    /// plaintext.
    pub credentials: Option<Credentials>,
    /// Why it cannot reach them yet (its certificate is not issued).
    pub pending: Option<String>,
}

impl Access {
    /// A client for the member at `address`: HTTPS verified against its
    /// DNS name while connecting to its pod IP, or plain HTTP.
    pub fn client(&self, address: &Address, timeout: Duration) -> Result<AdminClient, String> {
        if let Some(pending) = &self.pending {
            return Err(pending.clone());
        }
        let Some(credentials) = &self.credentials else {
            return Ok(AdminClient::new(&address.at, timeout));
        };
        let at: SocketAddr = address
            .at
            .parse()
            .map_err(|err| format!("pod address {}: {err}", address.at))?;
        AdminClient::for_member(&address.host, at, timeout, credentials)
            .map_err(|err| err.to_string())
    }
}

/// The operator's certificate for one group, and the CA it was issued by.
#[derive(Clone)]
pub(super) struct OwnCertificate {
    pub(super) ca_pem: String,
    issued: Issued,
}

/// Makes sure the group's CA and certificates exist and are fresh; how to
/// reach its members.
pub async fn ensure(
    ctx: &Context,
    resource: &DLedgerGroup,
    group: &Group<'_>,
) -> Result<Access, Error> {
    let tls = &group.spec.tls;
    if !tls.enabled {
        return Ok(Access::default());
    }
    if let Some(issuer) = &tls.issuer_ref {
        return with_cert_manager(ctx, group, issuer).await;
    }
    let now_s = Timestamp::now().as_second();
    let days = i64::from(tls.certificate_days);
    let renew_before_s = i64::from(tls.renew_before_days) * DAY_S;
    let ca = ca(ctx, resource, group).await?;
    let ca_pem = ca.cert_pem().to_string();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &group.namespace);

    // Members: every ordinal a group can have, in one Secret.
    let wanted: Vec<(String, Vec<String>)> = (0..spec::MAX_MEMBERS)
        .map(|ordinal| {
            let pod = format!("{}-{ordinal}", group.name);
            let names = spec::member_certificate_names(group, &pod);
            (pod, names)
        })
        .collect();
    let members_name = spec::members_secret_name(group);
    let stale = |secret: Option<&Secret>| -> Vec<(String, Renewal)> {
        wanted
            .iter()
            .filter_map(|(pod, names)| {
                let held = held(secret, &format!("{pod}.crt"), &format!("{pod}.key"));
                spec::renewal(held, names, &ca_pem, now_s, renew_before_s)
                    .map(|why| (pod.clone(), why))
            })
            .collect()
    };
    if !stale(watched(ctx, group, &members_name).as_deref()).is_empty() {
        let current = read(ctx, &secrets, &members_name).await?;
        let renewals = stale(current.as_ref());
        if !renewals.is_empty() {
            let mut pairs: BTreeMap<String, Pair> = wanted
                .iter()
                .filter_map(|(pod, _)| {
                    let secret = current.as_ref()?;
                    Some((
                        pod.clone(),
                        Pair {
                            cert_pem: spec::secret_text(secret, &format!("{pod}.crt"))?,
                            key_pem: spec::secret_text(secret, &format!("{pod}.key"))?,
                        },
                    ))
                })
                .collect();
            for (pod, _) in &renewals {
                let names = &wanted
                    .iter()
                    .find(|(p, _)| p == pod)
                    .map(|(_, names)| names.clone())
                    .unwrap_or_default();
                pairs.insert(pod.clone(), pair(issue(group, &ca, names, days)?));
            }
            apply(ctx, &secrets, spec::members_secret(group, &ca_pem, &pairs)).await?;
            announce(ctx, resource, &members_name, &renewals).await;
        }
    }

    // Applications.
    let client_name = spec::client_secret_name(group);
    let client_names = vec![spec::client_name(group)];
    let client_stale = |secret: Option<&Secret>| {
        let held = held(secret, spec::CLIENT_CERT_KEY, spec::CLIENT_KEY_KEY);
        spec::renewal(held, &client_names, &ca_pem, now_s, renew_before_s)
    };
    if client_stale(watched(ctx, group, &client_name).as_deref()).is_some() {
        let current = read(ctx, &secrets, &client_name).await?;
        if let Some(why) = client_stale(current.as_ref()) {
            let issued = pair(issue(group, &ca, &client_names, days)?);
            apply(ctx, &secrets, spec::client_secret(group, &ca_pem, &issued)).await?;
            announce(
                ctx,
                resource,
                &client_name,
                &[(client_names[0].clone(), why)],
            )
            .await;
        }
    }

    let own = own_certificate(ctx, group, &ca, now_s, renew_before_s, days)?;
    Ok(access(own.ca_pem, own.issued.cert_pem, own.issued.key_pem))
}

fn access(ca_pem: String, cert_pem: String, key_pem: String) -> Access {
    Access {
        credentials: Some(Credentials {
            tls: Some(ClientTls {
                ca_pem: ca_pem.into_bytes(),
                cert_and_key_pem: Some((cert_pem.into_bytes(), key_pem.into_bytes())),
            }),
            token: None,
        }),
        pending: None,
    }
}

/// With `spec.tls.issuerRef`: cert-manager issues and renews; the operator
/// asks for the certificates, copies the members' into `<name>-tls` (the
/// Secret the pods mount, whoever issues) whenever cert-manager has
/// written new ones, and reads its own from `<name>-operator-cert`.
async fn with_cert_manager(
    ctx: &Context,
    group: &Group<'_>,
    issuer: &IssuerRef,
) -> Result<Access, Error> {
    let mut wanted: Vec<(String, Vec<String>)> = (0..spec::MAX_MEMBERS)
        .map(|ordinal| {
            let pod = format!("{}-{ordinal}", group.name);
            let names = spec::member_certificate_names(group, &pod);
            (spec::member_certificate_secret_name(&pod), names)
        })
        .collect();
    wanted.push((
        spec::client_secret_name(group),
        vec![spec::client_name(group)],
    ));
    let own_name = spec::operator_certificate_secret_name(group);
    wanted.push((own_name.clone(), vec![spec::OPERATOR_NAME.to_string()]));
    let kind = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "cert-manager.io",
        "v1",
        "Certificate",
    ));
    let certificates: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &group.namespace, &kind);
    for (name, names) in &wanted {
        let desired = spec::certificate(group, issuer, name, names);
        let key = format!("Certificate/{}/{name}", group.namespace);
        let text = desired.to_string();
        if ctx.certificate_applied(&key).as_deref() == Some(text.as_str()) {
            continue;
        }
        let params = PatchParams::apply(MANAGED_BY).force();
        let applied = api_call(
            ctx,
            format!("apply Certificate {name}"),
            certificates.patch(name, &params, &Patch::Apply(&desired)),
        )
        .await;
        match applied {
            Ok(_) => ctx.remember_certificate_applied(key, text),
            Err(Error::Api {
                source: kube::Error::Api(status),
                ..
            }) if status.code == 404 => {
                return Err(tls_error(
                    group,
                    "spec.tls.issuerRef needs cert-manager, and the API server does not know its Certificate kind: install cert-manager, or create the group without issuerRef",
                ))
            }
            Err(err) => return Err(err),
        }
    }

    let issued: BTreeMap<String, Secret> = (0..spec::MAX_MEMBERS)
        .filter_map(|ordinal| {
            let pod = format!("{}-{ordinal}", group.name);
            let secret = watched(ctx, group, &spec::member_certificate_secret_name(&pod))?;
            Some((pod, (*secret).clone()))
        })
        .collect();
    if let Some(assembled) = spec::assembled_members_secret(group, &issued) {
        let current = watched(ctx, group, &spec::members_secret_name(group));
        if current.as_ref().and_then(|secret| secret.data.as_ref()) != assembled.data.as_ref() {
            let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &group.namespace);
            apply(ctx, &secrets, assembled).await?;
        }
    }

    let own = watched(ctx, group, &own_name).and_then(|secret| {
        Some(access(
            spec::secret_text(&secret, spec::CA_CERT_KEY)?,
            spec::secret_text(&secret, spec::CLIENT_CERT_KEY)?,
            spec::secret_text(&secret, spec::CLIENT_KEY_KEY)?,
        ))
    });
    Ok(own.unwrap_or_else(|| Access {
        credentials: None,
        pending: Some(format!(
            "waiting for cert-manager to issue the operator's certificate (Secret {own_name})"
        )),
    }))
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

fn watched(ctx: &Context, group: &Group<'_>, name: &str) -> Option<std::sync::Arc<Secret>> {
    ctx.stores
        .secrets
        .get(&ObjectRef::new(name).within(&group.namespace))
}

async fn read(ctx: &Context, secrets: &Api<Secret>, name: &str) -> Result<Option<Secret>, Error> {
    api_call(ctx, format!("read Secret {name}"), secrets.get_opt(name)).await
}

async fn apply(ctx: &Context, secrets: &Api<Secret>, secret: Secret) -> Result<(), Error> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let params = PatchParams::apply(MANAGED_BY).force();
    api_call(
        ctx,
        format!("apply Secret {name}"),
        secrets.patch(&name, &params, &Patch::Apply(&secret)),
    )
    .await?;
    Ok(())
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

fn tls_error(group: &Group<'_>, reason: impl ToString) -> Error {
    Error::Tls {
        group: format!("{}/{}", group.namespace, group.name),
        reason: reason.to_string(),
    }
}
