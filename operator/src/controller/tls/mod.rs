//! The group's certificates, by whoever issues them: the operator's own CA
//! ([`own_ca`]: made once, a certificate per possible member and one for
//! applications, issued again when [`specs::tls::renewal`] says so, and the
//! operator's admin certificate kept in memory only) or cert-manager
//! ([`cert_manager`]). Either way the pods mount `<name>-tls`, and this
//! module gives the reconcile its way to reach the members.
//!
//! [`specs::tls::renewal`]: crate::specs::tls::renewal

mod cert_manager;
mod own_ca;

use std::net::SocketAddr;
use std::time::Duration;

use dledger_replica::admin_client::{AdminClient, ClientTls, Credentials};
use dledger_replica::certs::Issued;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;

use super::poll::Address;
use super::{api_call, Context, Error};
use crate::crd::DLedgerGroup;
use crate::specs::{Group, MANAGED_BY};

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

/// Makes sure the group's certificates exist and are fresh; how to reach
/// its members.
pub async fn ensure(
    ctx: &Context,
    resource: &DLedgerGroup,
    group: &Group<'_>,
) -> Result<Access, Error> {
    let tls = &group.spec.tls;
    if !tls.enabled {
        return Ok(Access::default());
    }
    match &tls.issuer_ref {
        Some(issuer) => cert_manager::ensure(ctx, group, issuer).await,
        None => own_ca::ensure(ctx, resource, group).await,
    }
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

fn tls_error(group: &Group<'_>, reason: impl ToString) -> Error {
    Error::Tls {
        group: format!("{}/{}", group.namespace, group.name),
        reason: reason.to_string(),
    }
}
