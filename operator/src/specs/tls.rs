//! The TLS Secrets of a group and what decides that a certificate is issued
//! again. The operator issues (the keys are random, so that part is in
//! `controller::tls`); here are the names each certificate must carry, the
//! Secrets as whole objects, and the renewal rule.
//!
//! - `<name>-ca` (`ca.crt`, `ca.key`): the group's CA, made once, never
//!   replaced by the operator.
//! - `<name>-tls` (`ca.crt`, `<pod>.crt`, `<pod>.key` for every ordinal a
//!   group can have): mounted into every member, which reads its own pair
//!   (`DLEDGER_TLS_CERT=/etc/dledger/tls/$(DLEDGER_ID).crt`).
//! - `<name>-client-tls` (`ca.crt`, `tls.crt`, `tls.key`): for applications;
//!   its certificate names `<name>-client` and has the write right.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;

use super::{common_labels, Group};
use crate::crd::IssuerRef;

/// The most members a group can have (`spec.replicas` is at most 7), so
/// the most member certificates: all are issued up front, so that a pod
/// added by scaling finds its certificate already mounted.
pub const MAX_MEMBERS: u32 = 7;
/// Where the member Secret is mounted.
pub const TLS_DIR: &str = "/etc/dledger/tls";
/// The CA's key and certificate in `<name>-ca`, and the CA certificate in
/// the other two Secrets.
pub const CA_CERT_KEY: &str = "ca.crt";
/// The CA's private key in `<name>-ca`.
pub const CA_KEY_KEY: &str = "ca.key";
/// The certificate and key of the client Secret (the `kubernetes.io/tls` keys).
pub const CLIENT_CERT_KEY: &str = "tls.crt";
/// See [`CLIENT_CERT_KEY`].
pub const CLIENT_KEY_KEY: &str = "tls.key";
/// How long the group's CA is valid, days. Replacing a CA under a running
/// group is not automated (every member would need both CAs for a while).
pub const CA_DAYS: i64 = 3650;
/// The name the operator's own certificate carries: the replicas'
/// `--admin-names` default, the one name with the admin right.
pub const OPERATOR_NAME: &str = "dledger-operator";

/// `<name>-ca`.
pub fn ca_secret_name(group: &Group<'_>) -> String {
    format!("{}-ca", group.name)
}

/// `<name>-tls`, mounted into the members.
pub fn members_secret_name(group: &Group<'_>) -> String {
    format!("{}-tls", group.name)
}

/// `<name>-client-tls`, for applications.
pub fn client_secret_name(group: &Group<'_>) -> String {
    format!("{}-client-tls", group.name)
}

/// The name of the client certificate (it has the write right).
pub fn client_name(group: &Group<'_>) -> String {
    format!("{}-client", group.name)
}

/// Every name member `pod` is reached at: its member id (what peers check),
/// its DNS names under the headless Service, the client Services (an
/// application verifies whichever member answers there), and loopback
/// (tools run inside the pod).
pub fn member_certificate_names(group: &Group<'_>, pod: &str) -> Vec<String> {
    let namespace = &group.namespace;
    let peers = group.peers_service_name();
    let mut names = vec![
        pod.to_string(),
        format!("{pod}.{peers}.{namespace}.svc"),
        format!("{pod}.{peers}.{namespace}.svc.cluster.local"),
    ];
    for service in [group.name.clone(), group.leader_service_name()] {
        names.push(service.clone());
        names.push(format!("{service}.{namespace}"));
        names.push(format!("{service}.{namespace}.svc"));
        names.push(format!("{service}.{namespace}.svc.cluster.local"));
    }
    names.push("localhost".to_string());
    names.push("127.0.0.1".to_string());
    names
}

/// The DNS name the operator addresses member `pod` by (and verifies its
/// certificate against) while connecting to the pod's IP.
pub fn member_host(group: &Group<'_>, pod: &str) -> String {
    format!(
        "{pod}.{}.{}.svc",
        group.peers_service_name(),
        group.namespace
    )
}

/// A certificate and key, PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

fn secret(group: &Group<'_>, name: String, type_: &str, data: BTreeMap<String, String>) -> Secret {
    Secret {
        metadata: group.child_meta(name),
        type_: Some(type_.into()),
        data: Some(
            data.into_iter()
                .map(|(key, value)| (key, ByteString(value.into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    }
}

/// `<name>-ca` holding `ca`.
pub fn ca_secret(group: &Group<'_>, ca: &Pair) -> Secret {
    secret(
        group,
        ca_secret_name(group),
        "Opaque",
        BTreeMap::from([
            (CA_CERT_KEY.to_string(), ca.cert_pem.clone()),
            (CA_KEY_KEY.to_string(), ca.key_pem.clone()),
        ]),
    )
}

/// `<name>-tls`: the CA certificate and each member's pair, by pod name.
pub fn members_secret(group: &Group<'_>, ca_pem: &str, members: &BTreeMap<String, Pair>) -> Secret {
    let mut data = BTreeMap::from([(CA_CERT_KEY.to_string(), ca_pem.to_string())]);
    for (pod, pair) in members {
        data.insert(format!("{pod}.crt"), pair.cert_pem.clone());
        data.insert(format!("{pod}.key"), pair.key_pem.clone());
    }
    secret(group, members_secret_name(group), "Opaque", data)
}

/// `<name>-client-tls`, a `kubernetes.io/tls` Secret with the CA besides.
pub fn client_secret(group: &Group<'_>, ca_pem: &str, client: &Pair) -> Secret {
    secret(
        group,
        client_secret_name(group),
        "kubernetes.io/tls",
        BTreeMap::from([
            (CA_CERT_KEY.to_string(), ca_pem.to_string()),
            (CLIENT_CERT_KEY.to_string(), client.cert_pem.clone()),
            (CLIENT_KEY_KEY.to_string(), client.key_pem.clone()),
        ]),
    )
}

/// With `spec.tls.issuerRef`: the Secret cert-manager writes member
/// `pod`'s certificate into (`<pod>-cert`), which the operator copies into
/// `<name>-tls` so the pods mount the same Secret whoever issues.
pub fn member_certificate_secret_name(pod: &str) -> String {
    format!("{pod}-cert")
}

/// With `spec.tls.issuerRef`: the Secret of the operator's own certificate.
pub fn operator_certificate_secret_name(group: &Group<'_>) -> String {
    format!("{}-operator-cert", group.name)
}

/// A cert-manager `Certificate` (`cert-manager.io/v1`) from `issuer` for
/// `names` (the first is the common name), into Secret `secret_name`
/// labelled as the group's (so the operator's watch sees it).
pub fn certificate(
    group: &Group<'_>,
    issuer: &IssuerRef,
    secret_name: &str,
    names: &[String],
) -> serde_json::Value {
    let (ips, dns): (Vec<&String>, Vec<&String>) = names
        .iter()
        .partition(|name| name.parse::<std::net::IpAddr>().is_ok());
    let tls = &group.spec.tls;
    serde_json::json!({
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": {
            "name": secret_name,
            "namespace": group.namespace,
            "labels": common_labels(&group.name),
            "ownerReferences": [group.owner],
        },
        "spec": {
            "secretName": secret_name,
            "secretTemplate": {"labels": common_labels(&group.name)},
            "commonName": names.first(),
            "dnsNames": dns,
            "ipAddresses": ips,
            "duration": format!("{}h", u64::from(tls.certificate_days) * 24),
            "renewBefore": format!("{}h", u64::from(tls.renew_before_days) * 24),
            "usages": ["digital signature", "key encipherment", "server auth", "client auth"],
            "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
            "issuerRef": {"name": issuer.name, "kind": issuer.kind.as_str(), "group": issuer.group},
        }
    })
}

/// `<name>-tls` assembled from what cert-manager wrote for each member
/// (`tls.crt`, `tls.key`, `ca.crt` in `<pod>-cert`); `None` until one is there.
pub fn assembled_members_secret(
    group: &Group<'_>,
    issued: &BTreeMap<String, Secret>,
) -> Option<Secret> {
    let mut ca_pem = None;
    let mut pairs = BTreeMap::new();
    for (pod, secret) in issued {
        let (Some(cert_pem), Some(key_pem)) = (
            secret_text(secret, CLIENT_CERT_KEY),
            secret_text(secret, CLIENT_KEY_KEY),
        ) else {
            continue;
        };
        ca_pem = ca_pem.or_else(|| secret_text(secret, CA_CERT_KEY));
        pairs.insert(pod.clone(), Pair { cert_pem, key_pem });
    }
    Some(members_secret(group, &ca_pem?, &pairs))
}

/// The text of `key` in `secret`, if it is there and UTF-8.
pub fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

/// Why a certificate is issued (again).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// There is none.
    Missing,
    /// What is there is not a readable certificate, or its key is missing.
    Unreadable(String),
    /// It was issued by another CA than the group's (the CA Secret changed).
    OtherCa,
    /// It lacks names it must carry (the Services or namespace differ).
    NamesChanged,
    /// It expires within the renewal window.
    Expiring {
        /// Its end of validity, Unix seconds.
        not_after_s: i64,
    },
}

impl std::fmt::Display for Renewal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Renewal::Missing => write!(f, "none yet"),
            Renewal::Unreadable(why) => write!(f, "unreadable ({why})"),
            Renewal::OtherCa => write!(f, "issued by another CA"),
            Renewal::NamesChanged => write!(f, "names changed"),
            Renewal::Expiring { not_after_s } => {
                let at = k8s_openapi::jiff::Timestamp::from_second(*not_after_s)
                    .map(|t| t.to_string())
                    .unwrap_or_else(|_| not_after_s.to_string());
                write!(f, "expires at {at}")
            }
        }
    }
}

/// What the holder of a certificate knows of it, as read from a Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// The names it carries.
    pub names: Vec<String>,
    /// Its end of validity, Unix seconds.
    pub not_after_s: i64,
    /// The CA certificate stored beside it.
    pub ca_pem: String,
}

/// Whether a certificate that should carry `wanted` names, under the CA
/// `ca_pem`, must be issued again at `now_s`, renewing `renew_before_s`
/// before its end.
pub fn renewal(
    held: Result<Option<Held>, String>,
    wanted: &[String],
    ca_pem: &str,
    now_s: i64,
    renew_before_s: i64,
) -> Option<Renewal> {
    let held = match held {
        Err(why) => return Some(Renewal::Unreadable(why)),
        Ok(None) => return Some(Renewal::Missing),
        Ok(Some(held)) => held,
    };
    if held.ca_pem.trim() != ca_pem.trim() {
        return Some(Renewal::OtherCa);
    }
    if !wanted.iter().all(|name| held.names.contains(name)) {
        return Some(Renewal::NamesChanged);
    }
    if held.not_after_s.saturating_sub(renew_before_s) <= now_s {
        return Some(Renewal::Expiring {
            not_after_s: held.not_after_s,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::specs::fixtures;

    fn held(names: &[&str], not_after_s: i64) -> Result<Option<Held>, String> {
        Ok(Some(Held {
            names: names.iter().map(|n| n.to_string()).collect(),
            not_after_s,
            ca_pem: "CA\n".into(),
        }))
    }

    #[test]
    fn a_member_certificate_names_the_member_its_dns_names_and_the_services() {
        let group = fixtures::minimal();
        let group = Group::of(&group).unwrap();
        let names = member_certificate_names(&group, "orders-1");
        assert_eq!(names[0], "orders-1", "peers check the member id");
        for name in [
            "orders-1.orders-peers.shop.svc",
            "orders-1.orders-peers.shop.svc.cluster.local",
            "orders.shop.svc.cluster.local",
            "orders",
            "orders-leader.shop.svc",
            "127.0.0.1",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} missing: {names:?}");
        }
        assert_eq!(member_host(&group, "orders-1"), names[1]);
    }

    #[test]
    fn the_secrets_carry_the_labels_owner_and_keys() {
        let group = fixtures::minimal();
        let group = Group::of(&group).unwrap();
        let pair = Pair {
            cert_pem: "C".into(),
            key_pem: "K".into(),
        };
        let members = members_secret(
            &group,
            "CA",
            &BTreeMap::from([("orders-0".to_string(), pair.clone())]),
        );
        assert_eq!(members.metadata.name.as_deref(), Some("orders-tls"));
        assert_eq!(
            members.metadata.owner_references.as_ref().unwrap()[0].uid,
            "uid-1"
        );
        assert_eq!(secret_text(&members, "ca.crt").as_deref(), Some("CA"));
        assert_eq!(secret_text(&members, "orders-0.crt").as_deref(), Some("C"));
        assert_eq!(secret_text(&members, "orders-0.key").as_deref(), Some("K"));
        let client = client_secret(&group, "CA", &pair);
        assert_eq!(client.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(secret_text(&client, "tls.key").as_deref(), Some("K"));
        let ca = ca_secret(&group, &pair);
        assert_eq!(ca.metadata.name.as_deref(), Some("orders-ca"));
        assert_eq!(secret_text(&ca, "ca.key").as_deref(), Some("K"));
    }

    #[test]
    fn cert_manager_certificates_name_the_issuer_and_members_are_assembled_into_one_secret() {
        let group = fixtures::group(serde_json::json!({
            "replicas": 3, "image": "i", "storage": {"size": "1Gi"},
            "tls": {"issuerRef": {"name": "group-ca", "kind": "ClusterIssuer"}}
        }));
        let group = Group::of(&group).unwrap();
        let issuer = group.spec.tls.issuer_ref.clone().unwrap();
        let names = member_certificate_names(&group, "orders-1");
        let certificate = certificate(&group, &issuer, "orders-1-cert", &names);
        let spec = &certificate["spec"];
        assert_eq!(spec["secretName"], "orders-1-cert");
        assert_eq!(spec["commonName"], "orders-1");
        assert_eq!(spec["ipAddresses"], serde_json::json!(["127.0.0.1"]));
        assert!(spec["dnsNames"]
            .as_array()
            .unwrap()
            .contains(&"orders-1.orders-peers.shop.svc".into()));
        assert_eq!(spec["duration"], "2160h");
        assert_eq!(spec["renewBefore"], "720h");
        assert_eq!(
            spec["issuerRef"],
            serde_json::json!({"name": "group-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"})
        );
        assert_eq!(
            spec["secretTemplate"]["labels"]["app.kubernetes.io/managed-by"],
            "dledger-operator"
        );
        assert_eq!(
            certificate["metadata"]["ownerReferences"][0]["uid"],
            "uid-1"
        );

        let written = |cert: &str| {
            secret(
                &group,
                "x".into(),
                "kubernetes.io/tls",
                BTreeMap::from([
                    ("tls.crt".to_string(), cert.to_string()),
                    ("tls.key".to_string(), format!("{cert}-key")),
                    ("ca.crt".to_string(), "CA".to_string()),
                ]),
            )
        };
        assert!(assembled_members_secret(&group, &BTreeMap::new()).is_none());
        let assembled = assembled_members_secret(
            &group,
            &BTreeMap::from([
                ("orders-0".to_string(), written("C0")),
                ("orders-2".to_string(), written("C2")),
            ]),
        )
        .unwrap();
        assert_eq!(assembled.metadata.name.as_deref(), Some("orders-tls"));
        assert_eq!(secret_text(&assembled, "ca.crt").as_deref(), Some("CA"));
        assert_eq!(
            secret_text(&assembled, "orders-2.key").as_deref(),
            Some("C2-key")
        );
        assert!(secret_text(&assembled, "orders-1.crt").is_none());
    }

    #[test]
    fn a_certificate_is_renewed_when_missing_foreign_misnamed_or_expiring() {
        let wanted = vec!["orders-0".to_string()];
        let day = 86_400;
        let renew = |held, now| renewal(held, &wanted, "CA", now, 30 * day);
        assert_eq!(renew(Ok(None), 0), Some(Renewal::Missing));
        assert!(matches!(
            renew(Err("bad pem".into()), 0),
            Some(Renewal::Unreadable(_))
        ));
        assert_eq!(renew(held(&["orders-0"], 90 * day), 0), None);
        assert_eq!(renew(held(&["orders-0"], 90 * day), 59 * day), None);
        assert_eq!(
            renew(held(&["orders-0"], 90 * day), 60 * day),
            Some(Renewal::Expiring {
                not_after_s: 90 * day
            })
        );
        assert_eq!(
            renew(held(&["orders-1"], 90 * day), 0),
            Some(Renewal::NamesChanged)
        );
        let mut other = held(&["orders-0"], 90 * day);
        if let Ok(Some(held)) = &mut other {
            held.ca_pem = "another CA".into();
        }
        assert_eq!(renew(other, 0), Some(Renewal::OtherCa));
    }
}
