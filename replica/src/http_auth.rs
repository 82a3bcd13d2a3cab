//! Who may call what on the HTTP API: the rights each path needs and the
//! middleware that checks a request's credentials ([`crate::auth`])
//! before anything else is done with it.
//!
//! With [`Auth::open`] (no TLS, no token file) the router has no such
//! layer and everything is as before. Otherwise the probes are always
//! open, `/metrics` is open or needs `read` (`Auth::metrics_open`),
//! `/admin/...` needs `admin`, other reads (`GET`, `HEAD`) need `read` and
//! any other method needs `write`. A path the API does not have needs
//! `read` like any other, so a stranger learns nothing from 404s.
//!
//! Credentials are the client certificate the TLS handshake verified
//! ([`PeerCertificate`], put in each request's extensions by
//! [`crate::http_serve::serve`]; absent on plain HTTP) and an
//! `Authorization: Bearer <token>` header.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use rustls::pki_types::CertificateDer;

use crate::auth::{Auth, Refusal, Right};

/// The client certificate the TLS handshake of a request's connection
/// verified against the CA (`None` when the client presented none). Put
/// in every request's extensions on HTTPS; absent on plain HTTP.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerCertificate(pub Option<Arc<CertificateDer<'static>>>);

/// The `WWW-Authenticate` header of a 401.
pub const WWW_AUTHENTICATE: &str = "Bearer realm=\"dledger\"";

/// The right `method` on `path` needs, or `None` when it is open to
/// everyone (the probes, and `/metrics` when `metrics_open`).
pub fn needed_right(method: &Method, path: &str, metrics_open: bool) -> Option<Right> {
    match path {
        "/healthz" | "/readyz" => return None,
        "/metrics" if metrics_open => return None,
        _ => {}
    }
    if path == "/admin" || path.starts_with("/admin/") {
        Some(Right::Admin)
    } else if method == Method::GET || method == Method::HEAD {
        Some(Right::Read)
    } else {
        Some(Right::Write)
    }
}

/// The bearer token of `headers`: `Ok(None)` without an `Authorization`
/// header, an error (a reason, never the token) when it is not exactly
/// one `Bearer <token>`.
pub fn bearer_token(headers: &HeaderMap) -> Result<Option<&[u8]>, String> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err("more than one Authorization header".into());
    }
    let malformed = || "malformed Authorization header: expected `Bearer <token>`".to_string();
    let value = value.as_bytes();
    let split = value
        .iter()
        .position(|byte| *byte == b' ')
        .ok_or_else(malformed)?;
    let (scheme, token) = value.split_at(split);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(malformed());
    }
    let token = token.trim_ascii();
    if token.is_empty() || token.iter().any(|byte| byte.is_ascii_whitespace()) {
        return Err(malformed());
    }
    Ok(Some(token))
}

/// Checks `request` against `auth` and runs it, or answers 401 or 403
/// without running it (its body unread, no request slot taken).
pub async fn require(auth: Auth, request: Request, next: Next) -> Response {
    let Some(needed) = needed_right(request.method(), request.uri().path(), auth.metrics_open)
    else {
        return next.run(request).await;
    };
    let token = match bearer_token(request.headers()) {
        Ok(token) => token,
        Err(reason) => return refused(Refusal::Unauthenticated(reason)),
    };
    let certificate = request
        .extensions()
        .get::<PeerCertificate>()
        .and_then(|PeerCertificate(certificate)| certificate.as_deref());
    match auth.check(certificate, token, needed) {
        Ok(()) => next.run(request).await,
        Err(refusal) => refused(refusal),
    }
}

/// The answer to a refused request: 401 with `WWW-Authenticate`, or 403.
pub fn refused(refusal: Refusal) -> Response {
    match refusal {
        Refusal::Unauthenticated(reason) => {
            let mut response =
                crate::http::error(StatusCode::UNAUTHORIZED, "unauthenticated", reason);
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(WWW_AUTHENTICATE),
            );
            response
        }
        Refusal::Forbidden(reason) => {
            crate::http::error(StatusCode::FORBIDDEN, "forbidden", reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use axum::body::Body;
    use axum::http::Request;
    use axum::Router;
    use rustls::pki_types::pem::PemObject;
    use tower::ServiceExt;

    use super::*;
    use crate::engine::Engine;
    use crate::http::tests::FakeEngine;
    use crate::http::{router_with_limits, Limits};
    use crate::net::budget::ClientBytes;

    const READ: &str = "rrrrrrrrrrrrrrrrrrrr";
    const WRITE: &str = "wwwwwwwwwwwwwwwwwwww";
    const ADMIN: &str = "aaaaaaaaaaaaaaaaaaaa";

    fn token_file(dir: &tempfile::TempDir) -> PathBuf {
        let file = dir.path().join("tokens");
        std::fs::write(
            &file,
            format!("# rights\nread {READ}\nwrite {WRITE}\nadmin {ADMIN}\n"),
        )
        .unwrap();
        file
    }

    fn auth_with_tokens(dir: &tempfile::TempDir, metrics_open: bool) -> Auth {
        Auth::required(
            vec!["dledger-operator".into()],
            Some(token_file(dir)),
            metrics_open,
        )
        .unwrap()
    }

    fn guarded(engine: Arc<FakeEngine>, auth: Auth) -> Router {
        router_with_limits(
            engine,
            Limits {
                auth,
                ..Limits::default()
            },
        )
    }

    struct Answer {
        status: StatusCode,
        headers: HeaderMap,
        body: serde_json::Value,
    }

    async fn send(
        router: &Router,
        method: &str,
        uri: &str,
        authorization: Option<&str>,
        body: &'static [u8],
    ) -> Answer {
        send_with(router, method, uri, authorization, None, body).await
    }

    async fn send_with(
        router: &Router,
        method: &str,
        uri: &str,
        authorization: Option<&str>,
        certificate: Option<PeerCertificate>,
        body: &'static [u8],
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(authorization) = authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        if let Some(certificate) = certificate {
            request = request.extension(certificate);
        }
        let request = request
            .header(header::CONTENT_LENGTH, body.len())
            .body(Body::from(body))
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Answer {
            status,
            headers,
            body,
        }
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    fn assert_unauthenticated(answer: &Answer, what: &str) {
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(
            answer.headers[header::WWW_AUTHENTICATE],
            "Bearer realm=\"dledger\"",
            "{what}"
        );
        assert_eq!(answer.body["error"], "unauthenticated", "{what}");
        assert!(answer.body["reason"].is_string(), "{what}");
    }

    fn assert_forbidden(answer: &Answer, what: &str) {
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{what}");
        assert_eq!(answer.body["error"], "forbidden", "{what}");
    }

    #[test]
    fn paths_need_the_rights_documented() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(needed_right(&get, "/healthz", false), None);
        assert_eq!(needed_right(&get, "/readyz", false), None);
        assert_eq!(needed_right(&get, "/metrics", true), None);
        assert_eq!(needed_right(&get, "/metrics", false), Some(Right::Read));
        assert_eq!(needed_right(&get, "/status", true), Some(Right::Read));
        assert_eq!(needed_right(&get, "/v1/entries", true), Some(Right::Read));
        assert_eq!(needed_right(&get, "/v1/entries/3", true), Some(Right::Read));
        assert_eq!(
            needed_right(&get, "/v1/consumers/orders", true),
            Some(Right::Read)
        );
        assert_eq!(needed_right(&post, "/v1/entries", true), Some(Right::Write));
        assert_eq!(
            needed_right(&Method::PUT, "/v1/consumers/orders/offset", true),
            Some(Right::Write)
        );
        assert_eq!(
            needed_right(&post, "/admin/transfer-leadership", true),
            Some(Right::Admin)
        );
        assert_eq!(
            needed_right(&get, "/admin/members", true),
            Some(Right::Admin)
        );
        assert_eq!(
            needed_right(&Method::DELETE, "/admin/members/b", true),
            Some(Right::Admin)
        );
        assert_eq!(needed_right(&get, "/nowhere", true), Some(Right::Read));
    }

    #[test]
    fn a_bearer_token_is_read_and_anything_else_is_malformed() {
        let headers = |values: &[&str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            }
            headers
        };
        assert_eq!(bearer_token(&headers(&[])), Ok(None));
        assert_eq!(
            bearer_token(&headers(&["Bearer abc"])),
            Ok(Some(&b"abc"[..]))
        );
        assert_eq!(
            bearer_token(&headers(&["bearer   abc "])),
            Ok(Some(&b"abc"[..]))
        );
        for bad in [
            "Basic dXNlcjpwYXNz",
            "Bearer",
            "Bearer ",
            "Bearer a b",
            "abc",
        ] {
            assert!(bearer_token(&headers(&[bad])).is_err(), "{bad:?}");
        }
        assert!(bearer_token(&headers(&["Bearer a", "Bearer b"])).is_err());
    }

    #[tokio::test]
    async fn tokens_give_their_rights_and_strangers_get_401() {
        let dir = tempfile::tempdir().unwrap();
        let engine = FakeEngine::leader();
        let router = guarded(engine.clone(), auth_with_tokens(&dir, true));

        // Nobody: the probes only.
        for probe in ["/healthz", "/readyz", "/metrics"] {
            let answer = send(&router, "GET", probe, None, b"").await;
            assert_eq!(answer.status, StatusCode::OK, "{probe}");
        }
        for (method, uri) in [
            ("GET", "/status"),
            ("GET", "/v1/entries?from=1"),
            ("GET", "/v1/entries/1"),
            ("GET", "/v1/consumers"),
            ("GET", "/v1/consumers/orders"),
            ("POST", "/v1/entries"),
            ("PUT", "/v1/consumers/orders/offset"),
            ("POST", "/admin/transfer-leadership"),
            ("GET", "/admin/members"),
            ("GET", "/no/such/path"),
        ] {
            let answer = send(&router, method, uri, None, b"x").await;
            assert_unauthenticated(&answer, &format!("{method} {uri}"));
        }

        // A read token reads, and may not write.
        let read = bearer(READ);
        let answer = send(&router, "GET", "/status", Some(&read), b"").await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body["role"], "leader");
        let answer = send(&router, "GET", "/no/such/path", Some(&read), b"").await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
        let answer = send(&router, "POST", "/v1/entries", Some(&read), b"x").await;
        assert_forbidden(&answer, "read token appending");
        assert_eq!(engine.status().last_index, 0, "a refused append was made");

        // A write token appends and commits offsets, and may not administer.
        let write = bearer(WRITE);
        let answer = send(&router, "POST", "/v1/entries", Some(&write), b"x").await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body["index"], 1);
        let answer = send(
            &router,
            "PUT",
            "/v1/consumers/orders/offset",
            Some(&write),
            b"{\"offset\":2}",
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        let answer = send(&router, "GET", "/v1/entries/1", Some(&write), b"").await;
        assert_eq!(answer.status, StatusCode::OK);
        let answer = send(
            &router,
            "POST",
            "/admin/transfer-leadership",
            Some(&write),
            b"",
        )
        .await;
        assert_forbidden(&answer, "write token transferring leadership");

        // An admin token administers.
        let answer = send(&router, "GET", "/admin/members", Some(&bearer(ADMIN)), b"").await;
        assert_eq!(answer.status, StatusCode::OK);

        // Unknown or malformed: 401, nothing appended.
        let before = engine.status().last_index;
        let unknown = bearer("uuuuuuuuuuuuuuuuuuuu");
        let answer = send(&router, "POST", "/v1/entries", Some(&unknown), b"x").await;
        assert_unauthenticated(&answer, "unknown token");
        let answer = send(&router, "GET", "/status", Some(&unknown), b"").await;
        assert_unauthenticated(&answer, "unknown token reading");
        let answer = send(&router, "POST", "/v1/entries", Some(WRITE), b"x").await;
        assert_unauthenticated(&answer, "a token without its scheme");
        let answer = send(&router, "POST", "/v1/entries", Some("Basic d3d3"), b"x").await;
        assert_unauthenticated(&answer, "basic authentication");
        assert_eq!(engine.status().last_index, before);
    }

    #[tokio::test]
    async fn metrics_are_open_or_need_read_as_configured() {
        let dir = tempfile::tempdir().unwrap();
        let closed = guarded(FakeEngine::leader(), auth_with_tokens(&dir, false));
        let answer = send(&closed, "GET", "/metrics", None, b"").await;
        assert_unauthenticated(&answer, "closed metrics");
        let answer = send(&closed, "GET", "/metrics", Some(&bearer(READ)), b"").await;
        assert_eq!(answer.status, StatusCode::OK);
        // The probes stay open either way.
        let answer = send(&closed, "GET", "/healthz", None, b"").await;
        assert_eq!(answer.status, StatusCode::OK);

        let open = guarded(FakeEngine::leader(), auth_with_tokens(&dir, true));
        let answer = send(&open, "GET", "/metrics", None, b"").await;
        assert_eq!(answer.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn certificates_in_the_request_give_write_or_admin() {
        let (ca, _) = crate::certs::Ca::new("orders", 30).unwrap();
        let certificate = |name: &str| {
            let pem = ca.issue(&[name.to_string()], 30).unwrap().cert_pem;
            let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
            PeerCertificate(Some(Arc::new(der)))
        };
        let engine = FakeEngine::leader();
        let auth = Auth::required(vec!["dledger-operator".into()], None, true).unwrap();
        let router = guarded(engine.clone(), auth);
        let app = certificate("billing");
        let operator = certificate("dledger-operator");

        let answer = send_with(
            &router,
            "POST",
            "/v1/entries",
            None,
            Some(app.clone()),
            b"x",
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);
        let answer = send_with(
            &router,
            "GET",
            "/admin/members",
            None,
            Some(app.clone()),
            b"",
        )
        .await;
        assert_forbidden(&answer, "application certificate administering");
        let answer = send_with(&router, "GET", "/admin/members", None, Some(operator), b"").await;
        assert_eq!(answer.status, StatusCode::OK);
        // HTTPS without a client certificate is no credential.
        let answer = send_with(
            &router,
            "POST",
            "/v1/entries",
            None,
            Some(PeerCertificate(None)),
            b"x",
        )
        .await;
        assert_unauthenticated(&answer, "no certificate");
        assert_eq!(engine.status().last_index, 1);
    }

    /// A stranger neither takes a request slot nor waits for the client
    /// bytes budget: it is refused before either.
    #[tokio::test]
    async fn strangers_are_refused_before_the_limits_and_the_body() {
        let dir = tempfile::tempdir().unwrap();
        let budget = ClientBytes::new(8);
        let full = router_with_limits(
            FakeEngine::leader(),
            Limits {
                max_requests_in_flight: 0,
                auth: auth_with_tokens(&dir, true),
                ..Limits::default()
            },
        );
        let answer = send(&full, "POST", "/v1/entries", None, b"x").await;
        assert_unauthenticated(&answer, "past the in-flight limit");
        let answer = send(&full, "POST", "/v1/entries", Some(&bearer(WRITE)), b"x").await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "the limit");

        let engine = FakeEngine::leader();
        let waiting = router_with_limits(
            engine.clone(),
            Limits {
                client_bytes: budget.clone(),
                auth: auth_with_tokens(&dir, true),
                ..Limits::default()
            },
        );
        let _held = budget.acquire(8).await.unwrap();
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            send(&waiting, "POST", "/v1/entries", None, b"hello"),
        )
        .await
        .expect("a stranger waited for the client bytes budget");
        assert_unauthenticated(&answer, "budget held");
        assert_eq!(engine.status().last_index, 0);
    }

    #[tokio::test]
    async fn an_open_auth_changes_nothing() {
        let router = guarded(FakeEngine::leader(), Auth::open());
        let answer = send(&router, "POST", "/v1/entries", None, b"x").await;
        assert_eq!(answer.status, StatusCode::OK);
        let answer = send(&router, "POST", "/admin/transfer-leadership", None, b"").await;
        assert_eq!(answer.status, StatusCode::OK);
        // Not even a malformed header is looked at.
        let answer = send(&router, "GET", "/status", Some("Basic d3d3"), b"").await;
        assert_eq!(answer.status, StatusCode::OK);
    }
}
