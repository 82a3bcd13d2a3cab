//! A small blocking HTTP client for a replica's status and admin endpoints,
//! used by the CLI and the local cluster (and, later, by the operator).

use std::net::SocketAddr;
use std::time::Duration;

use crate::api::{AddMember, ErrorBody, Members, Status, Transferred};

/// How many `307`s to the leader a membership change follows before it
/// gives up (leadership moving twice during one call is already rare).
pub const REDIRECTS_MAX: usize = 3;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The replica could not be reached or did not answer in time.
    #[error("{url}: {reason}")]
    Unreachable {
        /// What was called.
        url: String,
        /// The transport's error.
        reason: String,
    },
    /// The replica answered with an error.
    #[error("{url}: HTTP {status}: {reason}")]
    Refused {
        /// What was called.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The replica's reason.
        reason: String,
    },
}

/// What an admin client proves itself with, when the replicas require it.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    /// HTTPS, trusting this CA and presenting this certificate.
    pub tls: Option<ClientTls>,
    /// A bearer token (`Authorization: Bearer`).
    pub token: Option<String>,
}

/// The PEM files' contents an HTTPS admin client uses.
#[derive(Clone, Debug)]
pub struct ClientTls {
    /// The CA the replicas' certificates chain to.
    pub ca_pem: Vec<u8>,
    /// This client's certificate chain and key (a certificate naming one
    /// of the replicas' `--admin-names` for admin calls).
    pub cert_and_key_pem: Option<(Vec<u8>, Vec<u8>)>,
}

impl ClientTls {
    /// The contents of the CA file and, if given, a certificate and key
    /// file; an error names the file that could not be read.
    pub fn read(
        ca: &std::path::Path,
        cert_and_key: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Result<ClientTls, String> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|err| format!("reading {}: {err}", path.display()))
        };
        Ok(ClientTls {
            ca_pem: read(ca)?,
            cert_and_key_pem: match cert_and_key {
                Some((cert, key)) => Some((read(cert)?, read(key)?)),
                None => None,
            },
        })
    }
}

/// A client for one replica's HTTP address (`host:port`).
#[derive(Clone)]
pub struct AdminClient {
    agent: ureq::Agent,
    base: String,
    authorization: Option<String>,
}

impl AdminClient {
    /// A client for `address` whose calls give up after `timeout`, over
    /// plain HTTP without credentials.
    pub fn new(address: &str, timeout: Duration) -> AdminClient {
        AdminClient::build(address, timeout, None, None, None)
    }

    /// As [`AdminClient::new`], with `credentials` (HTTPS when they hold
    /// TLS); an error when the PEM contents are unusable.
    pub fn with_credentials(
        address: &str,
        timeout: Duration,
        credentials: &Credentials,
    ) -> Result<AdminClient, AdminError> {
        AdminClient::with_parts(address, None, timeout, credentials)
    }

    /// As [`AdminClient::with_credentials`] for a member known by its
    /// name and its address: requests name `address` (`host:port`, the
    /// name its certificate carries) and connect to `connect_to`. The
    /// operator knows a pod's IP from the API, while its certificate
    /// names the pod's DNS names, which may not resolve where the
    /// operator runs.
    pub fn for_member(
        address: &str,
        connect_to: SocketAddr,
        timeout: Duration,
        credentials: &Credentials,
    ) -> Result<AdminClient, AdminError> {
        AdminClient::with_parts(address, Some(connect_to), timeout, credentials)
    }

    fn with_parts(
        address: &str,
        connect_to: Option<SocketAddr>,
        timeout: Duration,
        credentials: &Credentials,
    ) -> Result<AdminClient, AdminError> {
        let tls = credentials
            .tls
            .as_ref()
            .map(|tls| {
                tls_config(tls).map_err(|reason| AdminError::Unreachable {
                    url: address.to_string(),
                    reason,
                })
            })
            .transpose()?;
        Ok(AdminClient::build(
            address,
            timeout,
            tls,
            credentials.token.as_deref(),
            connect_to,
        ))
    }

    fn build(
        address: &str,
        timeout: Duration,
        tls: Option<ureq::tls::TlsConfig>,
        token: Option<&str>,
        connect_to: Option<SocketAddr>,
    ) -> AdminClient {
        let https = tls.is_some();
        let mut config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            // ureq refuses to follow a 307 for POST or DELETE (an error,
            // not the answer); the membership calls follow it themselves.
            .max_redirects(0);
        if let Some(tls) = tls {
            config = config.tls_config(tls);
        }
        let agent: ureq::Agent = match connect_to {
            None => config.build().into(),
            Some(at) => ureq::Agent::with_parts(
                config.build(),
                ureq::unversioned::transport::DefaultConnector::new(),
                FixedAddress(at),
            ),
        };
        let address = address.trim_end_matches('/');
        let base = if address.starts_with("http://") || address.starts_with("https://") {
            address.to_string()
        } else if https {
            format!("https://{address}")
        } else {
            format!("http://{address}")
        };
        AdminClient {
            agent,
            base,
            authorization: token.map(|token| format!("Bearer {token}")),
        }
    }

    fn get(&self, url: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        let request = self.agent.get(url);
        match &self.authorization {
            Some(value) => request.header("authorization", value),
            None => request,
        }
    }

    fn post(&self, url: &str) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
        let request = self.agent.post(url);
        match &self.authorization {
            Some(value) => request.header("authorization", value),
            None => request,
        }
    }

    fn delete(&self, url: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
        let request = self.agent.delete(url);
        match &self.authorization {
            Some(value) => request.header("authorization", value),
            None => request,
        }
    }

    /// `GET /status`.
    pub fn status(&self) -> Result<Status, AdminError> {
        let url = format!("{}/status", self.base);
        let response = self.get(&url).call();
        Self::json(url, response)
    }

    /// `POST /admin/transfer-leadership[?to=id]`.
    pub fn transfer_leadership(&self, to: Option<&str>) -> Result<Transferred, AdminError> {
        let url = match to {
            Some(to) => format!("{}/admin/transfer-leadership?to={to}", self.base),
            None => format!("{}/admin/transfer-leadership", self.base),
        };
        let response = self.post(&url).send_empty();
        Self::json(url, response)
    }

    /// `GET /admin/members`: the configuration in force on this member.
    pub fn members(&self) -> Result<Members, AdminError> {
        let url = format!("{}/admin/members", self.base);
        let response = self.get(&url).call();
        Self::json(url, response)
    }

    /// `POST /admin/members`: adds a learner (on the leader, following
    /// redirects to it); the new configuration once committed.
    pub fn add_member(&self, add: &AddMember) -> Result<Members, AdminError> {
        let body = serde_json::to_vec(add).map_err(|err| AdminError::Unreachable {
            url: format!("{}/admin/members", self.base),
            reason: format!("encoding the request: {err}"),
        })?;
        self.change(Verb::Post, "/admin/members", &body)
    }

    /// `POST /admin/members/{id}/promote`: makes a caught-up learner a
    /// voter; the new configuration once committed.
    pub fn promote_member(&self, id: &str) -> Result<Members, AdminError> {
        let path = format!("/admin/members/{}/promote", escape_segment(id));
        self.change(Verb::Post, &path, &[])
    }

    /// `DELETE /admin/members/{id}`: removes a member; the new
    /// configuration once committed.
    pub fn remove_member(&self, id: &str) -> Result<Members, AdminError> {
        let path = format!("/admin/members/{}", escape_segment(id));
        self.change(Verb::Delete, &path, &[])
    }

    /// Sends a change to `path` on this member, then again (same method,
    /// same body) wherever a `307` points, up to [`REDIRECTS_MAX`] times.
    fn change(&self, verb: Verb, path: &str, body: &[u8]) -> Result<Members, AdminError> {
        let mut url = format!("{}{path}", self.base);
        for _ in 0..=REDIRECTS_MAX {
            let response = match verb {
                Verb::Post => self
                    .post(&url)
                    .header("content-type", "application/json")
                    .send(body),
                Verb::Delete => self.delete(&url).call(),
            };
            let redirect = match &response {
                Ok(answer) if answer.status().as_u16() == 307 => Some(
                    answer
                        .headers()
                        .get("location")
                        .and_then(|value| value.to_str().ok())
                        .map(|location| absolute(&url, location)),
                ),
                _ => None,
            };
            match redirect {
                None => return Self::json(url, response),
                Some(Some(location)) => url = location,
                Some(None) => {
                    return Err(AdminError::Refused {
                        url,
                        status: 307,
                        reason: "redirected without a readable Location".into(),
                    })
                }
            }
        }
        Err(AdminError::Refused {
            url,
            status: 307,
            reason: format!(
                "still redirected after {REDIRECTS_MAX} redirects; is leadership moving?"
            ),
        })
    }

    fn json<T: serde::de::DeserializeOwned>(
        url: String,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, AdminError> {
        let mut response = response.map_err(|err| AdminError::Unreachable {
            url: url.clone(),
            reason: err.to_string(),
        })?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|err| AdminError::Unreachable {
                url: url.clone(),
                reason: err.to_string(),
            })?;
        if !(200..300).contains(&status) {
            let reason = serde_json::from_str::<ErrorBody>(&body)
                .map(|error| error.reason)
                .unwrap_or(body);
            return Err(AdminError::Refused {
                url,
                status,
                reason,
            });
        }
        serde_json::from_str(&body).map_err(|err| AdminError::Unreachable {
            url,
            reason: format!("unreadable answer: {err}"),
        })
    }
}

/// Resolves every host to one address (see [`AdminClient::for_member`]).
// ureq's resolver API is outside its semver promise; Cargo.lock pins it.
#[derive(Debug)]
struct FixedAddress(SocketAddr);

impl ureq::unversioned::resolver::Resolver for FixedAddress {
    fn resolve(
        &self,
        _uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        _timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let mut addresses = self.empty();
        addresses.push(self.0);
        Ok(addresses)
    }
}

fn tls_config(tls: &ClientTls) -> Result<ureq::tls::TlsConfig, String> {
    use ureq::tls::{parse_pem, ClientCert, PemItem, RootCerts, TlsConfig};
    let mut roots = Vec::new();
    for item in parse_pem(&tls.ca_pem) {
        if let PemItem::Certificate(cert) = item.map_err(|err| format!("the CA: {err}"))? {
            roots.push(cert);
        }
    }
    if roots.is_empty() {
        return Err("the CA holds no certificate".into());
    }
    let mut builder = TlsConfig::builder().root_certs(RootCerts::new_with_certs(&roots));
    if let Some((cert_pem, key_pem)) = &tls.cert_and_key_pem {
        let mut chain = Vec::new();
        for item in parse_pem(cert_pem) {
            if let PemItem::Certificate(cert) =
                item.map_err(|err| format!("the certificate: {err}"))?
            {
                chain.push(cert);
            }
        }
        if chain.is_empty() {
            return Err("the client certificate file holds no certificate".into());
        }
        let key = ureq::tls::PrivateKey::from_pem(key_pem)
            .map_err(|err| format!("the client key: {err}"))?;
        builder = builder.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
    }
    Ok(builder.build())
}

/// The methods a membership change is sent with.
#[derive(Clone, Copy)]
enum Verb {
    Post,
    Delete,
}

/// `location` as an absolute URL: as it is when it names a scheme, else
/// on the host of `url` (our servers send absolute ones; others may not).
fn absolute(url: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_string();
    }
    let after_scheme = url.find("://").map_or(0, |at| at + 3);
    let host_end = url[after_scheme..]
        .find('/')
        .map_or(url.len(), |at| after_scheme + at);
    let separator = if location.starts_with('/') { "" } else { "/" };
    format!("{}{separator}{location}", &url[..host_end])
}

/// `segment` escaped for one path segment: every byte but the unreserved
/// ones (RFC 3986) as `%XX`, so a name with `/`, `?` or a space still
/// names one member.
fn escape_segment(segment: &str) -> String {
    let mut escaped = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            escaped.push(char::from(byte));
        } else {
            escaped.push_str(&format!("%{byte:02X}"));
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;

    use super::*;
    use crate::api::MemberAddress;

    /// What a canned server was sent: the request line and the body.
    type Seen = (String, Vec<u8>);

    /// Serves `answers` in order, one connection each, on `listener`;
    /// each request is reported on the channel.
    fn serve(listener: TcpListener, answers: Vec<String>) -> mpsc::Receiver<Seen> {
        let (seen, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for answer in answers {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                let mut reader = BufReader::new(stream);
                let mut request_line = String::new();
                let _ = reader.read_line(&mut request_line);
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(value) = lower.strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let _ = seen.send((request_line.trim_end().to_string(), body));
                let _ = reader.get_mut().write_all(answer.as_bytes());
            }
        });
        receiver
    }

    fn listener() -> (TcpListener, String) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        (listener, address)
    }

    fn answer(status: &str, extra_header: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra_header}\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    fn redirect(to: &str) -> String {
        answer(
            "307 Temporary Redirect",
            &format!("Location: {to}\r\n"),
            r#"{"error":"not_leader","reason":"not the leader; the leader is b"}"#,
        )
    }

    fn configuration() -> Members {
        Members {
            index: 7,
            committed: true,
            voters: vec![MemberAddress {
                id: "a".into(),
                address: "a:20911".into(),
                http_address: "a:8080".into(),
                incarnation: 0,
            }],
            learners: vec![],
        }
    }

    fn received(seen: &mpsc::Receiver<Seen>) -> Seen {
        seen.recv_timeout(Duration::from_secs(5))
            .expect("a request within 5 s")
    }

    #[test]
    fn a_change_follows_the_redirect_with_its_method_and_body() {
        let (leader, leader_address) = listener();
        let (follower, follower_address) = listener();
        let ok = answer(
            "200 OK",
            "",
            &serde_json::to_string(&configuration()).unwrap(),
        );
        let at_leader = serve(leader, vec![ok.clone(); 3]);
        let at_follower = serve(
            follower,
            vec![
                redirect(&format!("http://{leader_address}/admin/members")),
                // A relative Location is taken on the same host.
                redirect("/admin/members/x%2Fy"),
                ok,
            ],
        );
        let client = AdminClient::new(&follower_address, Duration::from_secs(5));
        let add = AddMember {
            id: "d".into(),
            address: "d:20911".into(),
            http_address: None,
            incarnation: None,
        };
        assert_eq!(client.add_member(&add).unwrap(), configuration());
        let (line, body) = received(&at_follower);
        assert_eq!(line, "POST /admin/members HTTP/1.1");
        assert_eq!(serde_json::from_slice::<AddMember>(&body).unwrap(), add);
        let (line, body) = received(&at_leader);
        assert_eq!(line, "POST /admin/members HTTP/1.1");
        assert_eq!(serde_json::from_slice::<AddMember>(&body).unwrap(), add);
        // A DELETE stays a DELETE, and a name is one escaped segment.
        assert_eq!(client.remove_member("x/y").unwrap(), configuration());
        for _ in 0..2 {
            let (line, _) = received(&at_follower);
            assert_eq!(line, "DELETE /admin/members/x%2Fy HTTP/1.1");
        }
        let client = AdminClient::new(&leader_address, Duration::from_secs(5));
        let members = client.promote_member("d").unwrap();
        assert_eq!(members.index, 7);
        assert_eq!(
            received(&at_leader).0,
            "POST /admin/members/d/promote HTTP/1.1"
        );
        assert_eq!(client.members().unwrap(), configuration());
        assert_eq!(received(&at_leader).0, "GET /admin/members HTTP/1.1");
    }

    #[test]
    fn refusals_name_the_status_and_the_servers_reason() {
        let (server, address) = listener();
        let refused = answer(
            "409 Conflict",
            "",
            r#"{"error":"refused","reason":"d is not caught up"}"#,
        );
        let _seen = serve(
            server,
            vec![
                refused,
                "HTTP/1.1 307 Temporary Redirect\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .into(),
            ],
        );
        let client = AdminClient::new(&address, Duration::from_secs(5));
        match client.promote_member("d") {
            Err(AdminError::Refused { status, reason, .. }) => {
                assert_eq!((status, reason.as_str()), (409, "d is not caught up"));
            }
            other => panic!("{other:?}"),
        }
        match client.remove_member("d") {
            Err(AdminError::Refused { status, reason, .. }) => {
                assert_eq!(status, 307);
                assert!(reason.contains("Location"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn redirects_are_followed_a_bounded_number_of_times() {
        let (server, address) = listener();
        let again = redirect(&format!("http://{address}/admin/members/d/promote"));
        let seen = serve(server, vec![again; REDIRECTS_MAX + 2]);
        let client = AdminClient::new(&address, Duration::from_secs(5));
        match client.promote_member("d") {
            Err(AdminError::Refused { status, reason, .. }) => {
                assert_eq!(status, 307);
                assert!(reason.contains("redirects"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let asked = seen.try_iter().count();
        assert_eq!(asked, REDIRECTS_MAX + 1);
    }

    #[test]
    fn locations_and_segments() {
        assert_eq!(absolute("http://a:1/x/y", "http://b:2/z"), "http://b:2/z");
        assert_eq!(absolute("http://a:1/x/y", "/z"), "http://a:1/z");
        assert_eq!(absolute("http://a:1", "z"), "http://a:1/z");
        assert_eq!(escape_segment("orders-0.a_b~"), "orders-0.a_b~");
        assert_eq!(escape_segment("a/b c?é"), "a%2Fb%20c%3F%C3%A9");
    }

    /// The operator's way in: HTTPS to a pod's IP, the certificate checked
    /// against the pod's DNS name (which need not resolve here).
    #[cfg(feature = "engine")]
    #[tokio::test(flavor = "multi_thread")]
    async fn a_member_is_verified_by_its_name_while_reached_at_its_address() {
        use crate::certs::Ca;
        use crate::net::tls::{Tls, TlsFiles};
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = Ca::new("orders", 1).unwrap();
        let member_name = "orders-0.orders-peers.shop.svc";
        let (cert, key) = ca
            .issue(&["orders-0".into(), member_name.into()], 1)
            .unwrap()
            .write(dir.path(), "orders-0")
            .unwrap();
        let ca_file = dir.path().join("ca.crt");
        std::fs::write(&ca_file, ca.cert_pem()).unwrap();
        let tls = Tls::load(TlsFiles {
            cert,
            key,
            ca: ca_file,
        })
        .unwrap();
        let body = r#"{"group":"orders","id":"orders-0","version":"0.1.0","role":"leader","term":2,"leaderId":"orders-0","firstIndex":1,"lastIndex":5,"lastTerm":2,"commitIndex":5,"peers":[]}"#;
        let router = axum::Router::new().route(
            "/status",
            axum::routing::get(
                move || async move { ([("content-type", "application/json")], body) },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        tokio::spawn(crate::http_serve::serve(
            listener,
            router,
            Some(tls),
            std::future::pending(),
        ));
        let operator = ca.issue(&["dledger-operator".into()], 1).unwrap();
        let credentials = Credentials {
            tls: Some(ClientTls {
                ca_pem: ca.cert_pem().as_bytes().to_vec(),
                cert_and_key_pem: Some((
                    operator.cert_pem.into_bytes(),
                    operator.key_pem.into_bytes(),
                )),
            }),
            token: None,
        };
        let ask = move |host: &str| {
            let host = format!("{host}:{}", at.port());
            let credentials = credentials.clone();
            std::thread::spawn(move || {
                AdminClient::for_member(&host, at, Duration::from_secs(5), &credentials)
                    .and_then(|client| client.status())
            })
            .join()
            .unwrap()
        };
        let status = ask(member_name).unwrap();
        assert_eq!(status.id, "orders-0");
        let wrong = ask("orders-1.orders-peers.shop.svc")
            .unwrap_err()
            .to_string();
        assert!(wrong.contains("orders-1.orders-peers.shop.svc"), "{wrong}");
    }
}
