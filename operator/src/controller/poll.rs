//! Every member's `/status`, asked concurrently with a short timeout. A
//! member that does not answer in time is reported as silent, never guessed.
//! Also the one admin call the operator makes: a leadership transfer.

use std::time::Duration;

use dledger_replica::api::{Status, Transferred};

use super::tls::Access;

/// What asking one member gave.
// One per member per reconcile, most of them answers: boxing the status
// would save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Polled {
    /// It answered.
    Answered(Status),
    /// It did not: no address yet, refused, timed out or unreadable.
    Silent(String),
}

/// Where a member's HTTP server is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    /// `podIP:port`, where the operator connects.
    pub at: String,
    /// `<pod>.<name>-peers.<namespace>.svc:port`, the name its certificate
    /// carries (the operator may run where cluster DNS does not).
    pub host: String,
}

/// One member to ask: its name and HTTP address, if it has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The member id (pod name).
    pub name: String,
    /// Where its HTTP server listens; `None` while the pod has no IP.
    pub address: Option<Address>,
}

/// Asks every target at once; each answer is in by `timeout_ms` or counted silent.
pub async fn poll_members(
    targets: &[Target],
    access: &Access,
    timeout_ms: u64,
) -> Vec<(String, Polled)> {
    let timeout = Duration::from_millis(timeout_ms);
    let asks = targets.iter().map(|target| async move {
        let polled = match &target.address {
            None => Polled::Silent("the pod has no IP address yet".to_string()),
            Some(address) => ask(access, address, timeout).await,
        };
        (target.name.clone(), polled)
    });
    futures::future::join_all(asks).await
}

async fn ask(access: &Access, address: &Address, timeout: Duration) -> Polled {
    let client = match access.client(address, timeout) {
        Ok(client) => client,
        Err(reason) => return Polled::Silent(reason),
    };
    let call = tokio::task::spawn_blocking(move || client.status());
    // The client has its own deadline; this one also covers a blocked thread pool.
    match tokio::time::timeout(timeout + Duration::from_millis(100), call).await {
        Ok(Ok(Ok(status))) => Polled::Answered(status),
        Ok(Ok(Err(err))) => Polled::Silent(err.to_string()),
        Ok(Err(join)) => Polled::Silent(format!("status call failed: {join}")),
        Err(_) => Polled::Silent(format!("no answer within {} ms", timeout.as_millis())),
    }
}

/// `POST /admin/transfer-leadership?to=<to_member_id>` on the leader at
/// `leader`. The replica answers once a new leader is elected (or with its
/// reason), so `timeout_ms` must exceed the replica's own bound on a
/// transfer (5 s). The error is a sentence for the `Progressing` condition.
pub async fn transfer(
    access: &Access,
    leader: &Address,
    to_member_id: &str,
    timeout_ms: u64,
) -> Result<Transferred, String> {
    let timeout = Duration::from_millis(timeout_ms);
    let client = access.client(leader, timeout)?;
    let to = to_member_id.to_string();
    let call = tokio::task::spawn_blocking(move || client.transfer_leadership(Some(&to)));
    match tokio::time::timeout(timeout + Duration::from_millis(100), call).await {
        Ok(Ok(Ok(transferred))) => Ok(transferred),
        Ok(Ok(Err(err))) => Err(err.to_string()),
        Ok(Err(join)) => Err(format!("transfer call failed: {join}")),
        Err(_) => Err(format!("no answer within {timeout_ms} ms")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dledger_replica::api::Role;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::Instant;

    fn status_json(id: &str) -> String {
        serde_json::to_string(&Status {
            group: "orders".into(),
            id: id.into(),
            version: "0.1.0".into(),
            role: Role::Follower,
            term: 3,
            leader_id: Some("orders-0".into()),
            first_index: 1,
            last_index: 10,
            last_term: 3,
            commit_index: 10,
            peers: vec![],
            leader_commit_index: None,
            lag: 0,
            configuration: None,
            incarnation: 0,
            group_id: String::new(),
            certificate_not_after_s: None,
        })
        .unwrap()
    }

    /// A fake member on loopback: answers `/status` with `body`, once per connection.
    fn answering_member(body: String) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut buffer = [0u8; 1024];
                let _ = stream.read(&mut buffer);
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes());
            }
        });
        address
    }

    /// A fake member that accepts connections and never answers.
    /// A plaintext member's address (the name matters only with TLS).
    fn at(address: String) -> Address {
        Address {
            host: address.clone(),
            at: address,
        }
    }

    fn hanging_member() -> (String, TcpListener) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        (listener.local_addr().unwrap().to_string(), listener)
    }

    #[tokio::test]
    async fn answers_and_silences_are_reported_per_member() {
        let good = answering_member(status_json("orders-1"));
        let (hanging, _keep_open) = hanging_member();
        let targets = vec![
            Target {
                name: "orders-0".into(),
                address: None,
            },
            Target {
                name: "orders-1".into(),
                address: Some(at(good)),
            },
            Target {
                name: "orders-2".into(),
                address: Some(at(hanging)),
            },
        ];
        let started = Instant::now();
        let polled = poll_members(&targets, &Access::default(), 300).await;
        let elapsed_ms = started.elapsed().as_millis();
        assert!(
            elapsed_ms < 2000,
            "a hanging member held the poll for {elapsed_ms} ms"
        );
        assert_eq!(polled.len(), 3);
        assert!(matches!(&polled[0].1, Polled::Silent(reason) if reason.contains("no IP")));
        match &polled[1].1 {
            Polled::Answered(status) => assert_eq!(status.id, "orders-1"),
            other => panic!("expected an answer, got {other:?}"),
        }
        assert!(matches!(&polled[2].1, Polled::Silent(_)), "{:?}", polled[2]);
    }

    #[tokio::test]
    async fn a_refused_connection_is_silent() {
        // Bind and drop: nothing listens on that port any more.
        let address = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        let polled = poll_members(
            &[Target {
                name: "a".into(),
                address: Some(at(address)),
            }],
            &Access::default(),
            300,
        )
        .await;
        assert!(matches!(&polled[0].1, Polled::Silent(_)));
    }

    #[tokio::test]
    async fn an_unreadable_answer_is_silent() {
        let address = answering_member("{\"not\": \"a status\"}".into());
        let polled = poll_members(
            &[Target {
                name: "a".into(),
                address: Some(at(address)),
            }],
            &Access::default(),
            500,
        )
        .await;
        assert!(
            matches!(&polled[0].1, Polled::Silent(reason) if reason.contains("unreadable")),
            "{polled:?}"
        );
    }

    /// A fake leader: answers one request with `status` and `body`, and
    /// hands back the request line it got.
    fn one_answer(
        status: &'static str,
        body: &'static str,
    ) -> (String, std::sync::mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (sent, got) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let mut buffer = [0u8; 2048];
            let read = stream.read(&mut buffer).unwrap_or(0);
            let request = String::from_utf8_lossy(&buffer[..read]).to_string();
            let _ = sent.send(request.lines().next().unwrap_or_default().to_string());
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        });
        (address, got)
    }

    #[tokio::test]
    async fn transfer_posts_to_the_admin_route_with_the_member_id() {
        let (address, got) = one_answer("200 OK", r#"{"leaderId":"orders-1","term":8}"#);
        let transferred = transfer(&Access::default(), &at(address), "orders-1", 2000)
            .await
            .unwrap();
        assert_eq!(transferred.leader_id, "orders-1");
        assert_eq!(transferred.term, 8);
        assert_eq!(
            got.recv().unwrap(),
            "POST /admin/transfer-leadership?to=orders-1 HTTP/1.1"
        );
    }

    #[tokio::test]
    async fn a_refused_transfer_gives_the_replica_reason() {
        let (address, _got) = one_answer(
            "409 Conflict",
            r#"{"error":"not_leader","reason":"orders-0 is not the leader"}"#,
        );
        let err = transfer(&Access::default(), &at(address), "orders-1", 2000)
            .await
            .unwrap_err();
        assert!(
            err.contains("409") && err.contains("not the leader"),
            "{err}"
        );
    }
}
