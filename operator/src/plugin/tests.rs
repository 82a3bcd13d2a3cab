//! The commands against a mocked API server (tower-test, as in
//! `controller/tests.rs`): the exact requests, the patch bodies, and the
//! refusals that send nothing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::TimeZone;
use http::{Method, Request, Response};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};

use super::cli::{Command, GroupArgs, Output, StatusArgs, SwitchoverArgs, UpgradeCommand};
use super::commands::{run, Session};
use super::patches::tests::{group, waiting_for_approval};
use super::Error;
use crate::crd::{DLedgerGroup, SwitchoverStatus};

#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

type Responder = Box<dyn Fn(&Seen, usize) -> (u16, Value) + Send + Sync>;

fn start(respond: Responder) -> (Session, Arc<Mutex<Vec<Seen>>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().clone();
            let path = request.uri().path().to_string();
            let query = request.uri().query().unwrap_or_default().to_string();
            let content_type = request
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let bytes = request.into_body().collect_bytes().await.unwrap();
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let request = Seen {
                method,
                path,
                query,
                content_type,
                body,
            };
            let count = {
                let mut seen = record.lock().unwrap();
                seen.push(request.clone());
                seen.len()
            };
            let (code, body) = respond(&request, count);
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap(),
            );
        }
    });
    let session = Session {
        client: Client::new(service, "shop"),
        default_namespace: "shop".into(),
        wait_poll: Duration::from_millis(5),
    };
    (session, seen)
}

fn as_json(group: &DLedgerGroup) -> Value {
    let mut value = serde_json::to_value(group).unwrap();
    value["apiVersion"] = "dledger.io/v1alpha1".into();
    value["kind"] = "DLedgerGroup".into();
    value
}

fn not_found() -> (u16, Value) {
    (
        404,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "dledgergroups.dledger.io \"orders\" not found", "reason": "NotFound", "code": 404}),
    )
}

/// Answers every GET with `group` and every PATCH with it too.
fn serving(group: DLedgerGroup) -> Responder {
    Box::new(move |_, _| (200, as_json(&group)))
}

fn args(namespace: Option<&str>) -> GroupArgs {
    GroupArgs {
        group: "orders".into(),
        namespace: namespace.map(String::from),
    }
}

async fn run_command(session: &Session, command: Command) -> (Result<(), Error>, String) {
    let now = chrono::Utc.with_ymd_and_hms(2026, 12, 2, 22, 5, 9).unwrap();
    let mut out = Vec::new();
    let result = run(session, command, now, &mut out).await;
    (result, String::from_utf8(out).unwrap())
}

fn lines(seen: &Arc<Mutex<Vec<Seen>>>) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect()
}

const GROUP_PATH: &str = "/apis/dledger.io/v1alpha1/namespaces/shop/dledgergroups/orders";

#[tokio::test]
async fn status_reads_the_group_and_prints_the_table() {
    let (session, seen) = start(serving(group()));
    let command = Command::Status(StatusArgs {
        target: args(None),
        output: Output::Table,
    });
    let (result, out) = run_command(&session, command).await;
    result.unwrap();
    assert_eq!(lines(&seen), [format!("GET {GROUP_PATH}")]);
    assert!(
        out.contains("Leader:      orders-0 (term 7, commit 100)"),
        "{out}"
    );
    assert!(out.contains("\norders-2   follower"), "{out}");
}

#[tokio::test]
async fn status_of_an_unreported_group_lists_its_pods_by_label() {
    let mut unreported = group();
    unreported.status = None;
    let group_json = as_json(&unreported);
    let (session, seen) = start(Box::new(move |request, _| {
        if request.path.ends_with("/pods") {
            (
                200,
                json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [
                    {"metadata": {"name": "orders-0"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
                ]}),
            )
        } else {
            (200, group_json.clone())
        }
    }));
    let command = Command::Status(StatusArgs {
        target: args(Some("shop")),
        output: Output::Json,
    });
    let (result, out) = run_command(&session, command).await;
    result.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[1].path, "/api/v1/namespaces/shop/pods");
    assert!(
        seen[1]
            .query
            .contains("labelSelector=app.kubernetes.io%2Finstance%3Dorders%2Capp.kubernetes.io%2Fname%3Ddledger"),
        "{}",
        seen[1].query
    );
    let value: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(value["members"][0]["name"], "orders-0");
    assert_eq!(value["members"][0]["ready"], true);
}

#[tokio::test]
async fn an_unknown_group_is_one_clear_error() {
    let (session, seen) = start(Box::new(|_, _| not_found()));
    let (result, _) = run_command(&session, Command::Restart(args(Some("other")))).await;
    assert_eq!(
        result.unwrap_err().to_string(),
        "DLedgerGroup orders not found in namespace other"
    );
    assert_eq!(
        lines(&seen),
        ["GET /apis/dledger.io/v1alpha1/namespaces/other/dledgergroups/orders"]
    );
}

#[tokio::test]
async fn an_api_failure_is_reported_with_its_message() {
    let (session, _) = start(Box::new(|request, _| {
        if request.method == Method::PATCH {
            (
                403,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "forbidden: cannot patch", "reason": "Forbidden", "code": 403}),
            )
        } else {
            (200, as_json(&group()))
        }
    }));
    let (result, _) = run_command(&session, Command::Restart(args(None))).await;
    let err = result.unwrap_err().to_string();
    assert!(
        err.starts_with("Kubernetes API: forbidden: cannot patch"),
        "{err}"
    );
}

#[tokio::test]
async fn restart_stamps_the_annotation_with_a_merge_patch() {
    let (session, seen) = start(serving(group()));
    let (result, out) = run_command(&session, Command::Restart(args(None))).await;
    result.unwrap();
    assert_eq!(
        lines(&seen),
        [format!("GET {GROUP_PATH}"), format!("PATCH {GROUP_PATH}")]
    );
    let patch = seen.lock().unwrap()[1].clone();
    assert_eq!(patch.content_type, "application/merge-patch+json");
    assert!(
        patch.query.contains("fieldManager=kubectl-dledger"),
        "{}",
        patch.query
    );
    assert_eq!(
        patch.body,
        json!({"metadata": {"annotations": {"dledger.io/restarted-at": "2026-12-02T22:05:09Z"}}})
    );
    assert!(out.contains("followers first, the leader last"), "{out}");
}

#[tokio::test]
async fn switchover_without_to_picks_the_most_caught_up_follower() {
    let (session, seen) = start(serving(group()));
    let command = Command::Switchover(SwitchoverArgs {
        target: args(None),
        to: None,
        wait: None,
    });
    let (result, out) = run_command(&session, command).await;
    result.unwrap();
    let patch = seen.lock().unwrap()[1].clone();
    assert_eq!(
        patch.body,
        json!({"spec": {"switchover": {"target": "orders-2"}}})
    );
    assert!(out.contains("orders-0 -> orders-2"), "{out}");
}

#[tokio::test]
async fn switchover_to_a_bad_member_sends_nothing() {
    let (session, seen) = start(serving(group()));
    let command = Command::Switchover(SwitchoverArgs {
        target: args(None),
        to: Some("orders-5".into()),
        wait: None,
    });
    let (result, _) = run_command(&session, command).await;
    assert!(matches!(result, Err(Error::UnknownMember { .. })));
    assert_eq!(lines(&seen), [format!("GET {GROUP_PATH}")]);
}

#[tokio::test]
async fn switchover_wait_returns_once_the_target_leads() {
    let mut done = group();
    let status = done.status.as_mut().unwrap();
    status.leader = Some("orders-1".into());
    status.term = 8;
    status.switchover = Some(SwitchoverStatus {
        target: "orders-1".into(),
        current: Some("orders-0".into()),
        requested_at: "2026-12-02T22:05:09Z".into(),
        completed_at: Some("2026-12-02T22:05:10Z".into()),
    });
    let (before, after) = (as_json(&group()), as_json(&done));
    // GET, PATCH, GET (not yet), GET (done).
    let (session, seen) = start(Box::new(move |_, count| {
        if count >= 4 {
            (200, after.clone())
        } else {
            (200, before.clone())
        }
    }));
    let command = Command::Switchover(SwitchoverArgs {
        target: args(None),
        to: Some("orders-1".into()),
        wait: Some(Duration::from_secs(5)),
    });
    let (result, out) = run_command(&session, command).await;
    result.unwrap();
    assert_eq!(seen.lock().unwrap().len(), 4);
    assert!(out.contains("orders-1 leads orders (term 8)"), "{out}");
}

#[tokio::test]
async fn switchover_wait_times_out_with_a_clear_error() {
    let (session, _) = start(serving(group()));
    let command = Command::Switchover(SwitchoverArgs {
        target: args(None),
        to: Some("orders-1".into()),
        wait: Some(Duration::from_millis(50)),
    });
    let (result, _) = run_command(&session, command).await;
    let err = result.unwrap_err().to_string();
    assert!(
        err.starts_with("orders-1 does not lead orders after"),
        "{err}"
    );
    assert!(err.contains("(leader: orders-0)"), "{err}");
}

#[tokio::test]
async fn pause_and_resume_set_and_remove_the_annotation() {
    let (session, seen) = start(serving(group()));
    let (result, _) = run_command(
        &session,
        Command::Upgrade(UpgradeCommand::Pause(args(None))),
    )
    .await;
    result.unwrap();
    assert_eq!(
        seen.lock().unwrap()[1].body,
        json!({"metadata": {"annotations": {"dledger.io/upgrade-pause": "true"}}})
    );
    // Resume of a group that is not paused writes nothing.
    let (result, out) = run_command(
        &session,
        Command::Upgrade(UpgradeCommand::Resume(args(None))),
    )
    .await;
    result.unwrap();
    assert!(out.contains("not paused already"), "{out}");
    assert_eq!(seen.lock().unwrap().len(), 3);

    let mut paused = group();
    paused
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("dledger.io/upgrade-pause".into(), "true".into());
    let (session, seen) = start(serving(paused));
    let (result, _) = run_command(
        &session,
        Command::Upgrade(UpgradeCommand::Resume(args(None))),
    )
    .await;
    result.unwrap();
    assert_eq!(
        seen.lock().unwrap()[1].body,
        json!({"metadata": {"annotations": {"dledger.io/upgrade-pause": null}}})
    );
}

#[tokio::test]
async fn proceed_approves_the_leader_only_when_an_upgrade_waits() {
    let (session, seen) = start(serving(group()));
    let (result, _) = run_command(
        &session,
        Command::Upgrade(UpgradeCommand::Proceed(args(None))),
    )
    .await;
    assert_eq!(
        result.unwrap_err().to_string(),
        "no upgrade of orders is waiting for approval (see kubectl dledger status orders)"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);

    let mut waiting = group();
    waiting_for_approval(&mut waiting);
    let (session, seen) = start(serving(waiting.clone()));
    let (result, _) = run_command(
        &session,
        Command::Upgrade(UpgradeCommand::Proceed(args(None))),
    )
    .await;
    result.unwrap();
    assert_eq!(
        seen.lock().unwrap()[1].body,
        json!({"metadata": {"annotations": {"dledger.io/upgrade-approve": "orders-0"}}})
    );

    waiting.status.as_mut().unwrap().leader = None;
    let (session, seen) = start(serving(waiting));
    let (result, _) = run_command(
        &session,
        Command::Upgrade(UpgradeCommand::Proceed(args(None))),
    )
    .await;
    assert!(matches!(result, Err(Error::NoLeader { .. })));
    assert_eq!(seen.lock().unwrap().len(), 1);
}
