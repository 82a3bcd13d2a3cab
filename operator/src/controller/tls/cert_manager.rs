//! Certificates from cert-manager (`spec.tls.issuerRef`): the operator
//! asks for one `Certificate` per possible member, one for applications and
//! one for itself, copies the members' into `<name>-tls` whenever
//! cert-manager has written new ones (the pods mount the same Secret
//! whoever issues), and reads its own from `<name>-operator-cert`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};

use super::{access, apply, tls_error, watched, Access};
use crate::controller::{api_call, Context, Error};
use crate::crd::IssuerRef;
use crate::specs::tls as spec;
use crate::specs::{Group, MANAGED_BY};

/// With `spec.tls.issuerRef`: cert-manager issues and renews; the operator
/// asks for the certificates, copies the members' into `<name>-tls` (the
/// Secret the pods mount, whoever issues) whenever cert-manager has
/// written new ones, and reads its own from `<name>-operator-cert`.
pub(super) async fn ensure(
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
