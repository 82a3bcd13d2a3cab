//! Reconcile against a mocked API server (tower-test, as kube-rs's
//! controller-rs does): the exact requests, their bodies, and the error paths.

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::{Method, Request, Response};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodCondition, PodStatus, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::client::Body;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use kube::Client;
use serde_json::{json, Value};

use super::*;
use crate::specs::fixtures;

/// The fixture group without TLS: the fake members below answer plain
/// HTTP. The certificates have their own scenario.
fn plaintext() -> DLedgerGroup {
    let mut group = fixtures::minimal();
    group.spec.tls.enabled = false;
    group
}

fn plaintext_group(spec: Value) -> DLedgerGroup {
    let mut group = fixtures::group(spec);
    group.spec.tls.enabled = false;
    group
}

/// One request the operator made.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    path: String,
    body: Value,
}

/// How the fake API server answers a request: a status and a body, or never.
type Responder = Box<dyn Fn(&Seen) -> Option<(u16, Value)> + Send + Sync>;

struct FakeApi {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeApi {
    fn start(respond: Responder) -> (Client, FakeApi) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            // Requests left unanswered stay here so the client waits on them.
            let mut hanging = Vec::new();
            while let Some((request, send)) = handle.next_request().await {
                let method = request.method().clone();
                let path = request.uri().path().to_string();
                let bytes = request.into_body().collect_bytes().await.unwrap();
                let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let request = Seen { method, path, body };
                record.lock().unwrap().push(request.clone());
                match respond(&request) {
                    Some((code, body)) => send.send_response(
                        Response::builder()
                            .status(code)
                            .body(Body::from(serde_json::to_vec(&body).unwrap()))
                            .unwrap(),
                    ),
                    None => hanging.push(send),
                }
            }
        });
        (Client::new(service, "default"), FakeApi { seen })
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// What a healthy API server answers: the applied object back, with the
/// metadata the server adds.
fn echo(request: &Seen) -> Option<(u16, Value)> {
    let mut body = request.body.clone();
    if request.method == Method::PATCH && body.is_object() {
        let name = request
            .path
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let name = if name == "status" {
            "orders".to_string()
        } else {
            name
        };
        body["metadata"]["name"] = name.clone().into();
        body["metadata"]["namespace"] = "shop".into();
        body["metadata"]["uid"] = format!("uid-{name}").into();
        body["metadata"]["generation"] = 1.into();
        body["metadata"]["resourceVersion"] = "1".into();
        if request.path.contains("/pods/") {
            body["apiVersion"] = "v1".into();
            body["kind"] = "Pod".into();
        }
        if request.path.ends_with("/status") {
            body["spec"] = json!({"replicas": 3, "image": "i", "storage": {"size": "1Gi"}});
        }
    }
    Some((200, body))
}

fn refusal(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": format!("{reason} (fake)"), "reason": reason, "code": code})
}

struct Writers {
    statefulsets: Writer<StatefulSet>,
    pods: Writer<Pod>,
    _services: Writer<Service>,
    _pdbs: Writer<PodDisruptionBudget>,
    _configmaps: Writer<ConfigMap>,
    secrets: Writer<Secret>,
    network_policies: Writer<NetworkPolicy>,
}

/// Stores as the watches fill them: `listed` once (empty unless a test adds
/// objects through the writers), or not yet.
fn stores(listed: bool) -> (Stores, Writers) {
    let (statefulsets, mut sts_writer) = reflector::store();
    let (services, mut svc_writer) = reflector::store();
    let (pdbs, mut pdb_writer) = reflector::store();
    let (pods, mut pod_writer) = reflector::store();
    let (configmaps, mut configmap_writer) = reflector::store();
    let (secrets, mut secret_writer) = reflector::store();
    let (network_policies, mut policy_writer) = reflector::store();
    if listed {
        policy_writer.apply_watcher_event(&watcher::Event::InitDone);
        configmap_writer.apply_watcher_event(&watcher::Event::InitDone);
        secret_writer.apply_watcher_event(&watcher::Event::InitDone);
        sts_writer.apply_watcher_event(&watcher::Event::InitDone);
        svc_writer.apply_watcher_event(&watcher::Event::InitDone);
        pdb_writer.apply_watcher_event(&watcher::Event::InitDone);
        pod_writer.apply_watcher_event(&watcher::Event::InitDone);
    }
    let stores = Stores {
        statefulsets,
        services,
        pdbs,
        pods,
        configmaps,
        secrets,
        network_policies,
    };
    let writers = Writers {
        statefulsets: sts_writer,
        pods: pod_writer,
        _services: svc_writer,
        _pdbs: pdb_writer,
        _configmaps: configmap_writer,
        secrets: secret_writer,
        network_policies: policy_writer,
    };
    (stores, writers)
}

/// A context whose watches have listed once.
fn context(client: Client, settings: Settings) -> (Arc<Context>, Writers) {
    let (stores, writers) = stores(true);
    let ctx = Context::new(client, None, Metrics::new().unwrap(), settings, stores);
    (Arc::new(ctx), writers)
}

#[tokio::test]
async fn nothing_is_decided_before_the_watches_have_listed() {
    let (client, api) = FakeApi::start(Box::new(echo));
    let (stores, _writers) = stores(false);
    let settings = Settings {
        api_timeout_ms: 100,
        ..Settings::default()
    };
    let ctx = Arc::new(Context::new(
        client,
        None,
        Metrics::new().unwrap(),
        settings,
        stores,
    ));
    let action = reconcile(Arc::new(plaintext()), ctx).await.unwrap();
    assert_eq!(
        action,
        Action::requeue(Duration::from_millis(
            Settings::default().requeue_unsettled_ms
        ))
    );
    assert!(api.seen().is_empty(), "{:?}", kinds(&api.seen()));
}

fn kinds(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect()
}

#[tokio::test]
async fn a_new_group_gets_its_children_then_its_status() {
    let (client, api) = FakeApi::start(Box::new(echo));
    let (ctx, _writers) = context(client, Settings::default());
    let action = reconcile(Arc::new(plaintext()), ctx.clone()).await.unwrap();
    assert_eq!(
        action,
        Action::requeue(Duration::from_millis(
            Settings::default().requeue_unsettled_ms
        ))
    );
    let seen = api.seen();
    assert_eq!(
        kinds(&seen),
        [
            "PATCH /api/v1/namespaces/shop/configmaps/orders-join",
            "PATCH /apis/apps/v1/namespaces/shop/statefulsets/orders",
            "PATCH /api/v1/namespaces/shop/services/orders-peers",
            "PATCH /api/v1/namespaces/shop/services/orders",
            "PATCH /api/v1/namespaces/shop/services/orders-leader",
            "PATCH /apis/policy/v1/namespaces/shop/poddisruptionbudgets/orders",
            "PATCH /apis/dledger.io/v1alpha1/namespaces/shop/dledgergroups/orders/status",
        ]
    );
    // A new group: its members bootstrap it from the list of spec.replicas
    // pods, which the pods read from the ConfigMap applied before them.
    assert_eq!(seen[0].body["data"]["DLEDGER_INITIAL_STATE"], "new");
    assert_eq!(
        seen[0].body["data"]["DLEDGER_PEERS"]
            .as_str()
            .unwrap()
            .split(',')
            .count(),
        3
    );
    assert_eq!(seen[1].body["spec"]["updateStrategy"]["type"], "OnDelete");
    assert_eq!(seen[1].body["spec"]["replicas"], 3);
    assert_eq!(
        seen[1].body["metadata"]["ownerReferences"][0]["uid"],
        "uid-1"
    );
    let status = &seen[6].body["status"];
    assert_eq!(status["phase"], "Creating");
    assert_eq!(status["observedGeneration"], 2);
    assert_eq!(status["members"].as_array().unwrap().len(), 3);
    assert_eq!(status["members"][0]["answering"], false);
    assert_eq!(ctx.metrics.reconciles.with_label_values(&["ok"]).get(), 1);
}

#[tokio::test]
async fn a_second_reconcile_applies_nothing_unchanged() {
    let (client, api) = FakeApi::start(Box::new(echo));
    let (ctx, mut writers) = context(client, Settings::default());
    let group = Arc::new(plaintext());
    reconcile(group.clone(), ctx.clone()).await.unwrap();
    // The watch delivers what the apply returned.
    let applied: StatefulSet = serde_json::from_value(api.seen()[1].body.clone()).unwrap();
    let mut applied = applied;
    applied.metadata.uid = Some("uid-orders".into());
    applied.metadata.generation = Some(1);
    applied.metadata.resource_version = Some("1".into());
    applied.metadata.name = Some("orders".into());
    applied.metadata.namespace = Some("shop".into());
    writers
        .statefulsets
        .apply_watcher_event(&watcher::Event::Apply(applied));
    let before = api.seen().len();
    reconcile(group, ctx).await.unwrap();
    let again = kinds(&api.seen()[before..]);
    assert!(
        !again.iter().any(|k| k.contains("statefulsets")),
        "the unchanged StatefulSet was applied again: {again:?}"
    );
    // The status did not change either, so nothing is written.
    assert!(!again.iter().any(|k| k.ends_with("/status")), "{again:?}");
}

#[tokio::test]
async fn a_conflict_fails_the_reconcile_and_stops_there() {
    let (client, api) = FakeApi::start(Box::new(|request: &Seen| {
        if request.path.contains("statefulsets") {
            Some((409, refusal(409, "Conflict")))
        } else {
            echo(request)
        }
    }));
    let (ctx, _writers) = context(client, Settings::default());
    let group = Arc::new(plaintext());
    let err = reconcile(group.clone(), ctx.clone()).await.unwrap_err();
    assert_eq!(err.metric_label(), "conflict");
    assert!(
        err.to_string().contains("apply StatefulSet orders"),
        "{err}"
    );
    assert_eq!(api.seen().len(), 2, "nothing after the refused apply");
    let action = error_policy(group, &err, ctx.clone());
    assert_eq!(
        action,
        Action::requeue(Duration::from_millis(Settings::default().error_requeue_ms))
    );
    assert_eq!(ctx.metrics.errors.with_label_values(&["conflict"]).get(), 1);
    assert_eq!(
        ctx.metrics.reconciles.with_label_values(&["error"]).get(),
        1
    );
}

#[tokio::test]
async fn a_server_error_on_the_status_write_is_reported() {
    let (client, api) = FakeApi::start(Box::new(|request: &Seen| {
        if request.path.ends_with("/status") {
            Some((503, refusal(503, "ServiceUnavailable")))
        } else {
            echo(request)
        }
    }));
    let (ctx, _writers) = context(client, Settings::default());
    let err = reconcile(Arc::new(plaintext()), ctx).await.unwrap_err();
    assert_eq!(err.metric_label(), "server_error");
    assert!(err.to_string().contains("write status of orders"), "{err}");
    assert_eq!(api.seen().len(), 7);
}

#[tokio::test]
async fn an_api_server_that_does_not_answer_times_out() {
    let (client, api) = FakeApi::start(Box::new(|request: &Seen| {
        if request.path.contains("services/orders-leader") {
            None
        } else {
            echo(request)
        }
    }));
    let settings = Settings {
        api_timeout_ms: 300,
        ..Settings::default()
    };
    let (ctx, _writers) = context(client, settings);
    let started = Instant::now();
    let err = reconcile(Arc::new(plaintext()), ctx).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(err.metric_label(), "timeout");
    assert!(
        err.to_string().contains("apply Service orders-leader"),
        "{err}"
    );
    assert_eq!(api.seen().len(), 5);
}

fn member_pod(name: &str, ip: &str, role: Option<&str>) -> Pod {
    let mut pod = Pod::default();
    pod.metadata.name = Some(name.into());
    pod.metadata.namespace = Some("shop".into());
    let mut labels = specs::common_labels("orders");
    labels.insert("controller-revision-hash".into(), "rev-1".into());
    if let Some(role) = role {
        labels.insert(ROLE_LABEL.into(), role.into());
    }
    pod.metadata.labels = Some(labels);
    pod.status = Some(PodStatus {
        pod_ip: Some(ip.into()),
        conditions: Some(vec![PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            ..PodCondition::default()
        }]),
        ..PodStatus::default()
    });
    pod
}

/// A fake member answering `/status` on `address` for every connection.
fn answering_member(listener: TcpListener, id: &'static str, role: &'static str) {
    use std::io::{Read, Write};
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buffer = [0u8; 1024];
            let _ = stream.read(&mut buffer);
            let leader = if role == "leader" {
                json!(id)
            } else {
                json!("orders-0")
            };
            let body = json!({
                "group": "orders", "id": id, "version": "0.1.0", "role": role, "term": 4, "leaderId": leader,
                "firstIndex": 1, "lastIndex": 50, "lastTerm": 4, "commitIndex": 50, "peers": []
            })
            .to_string();
            let response = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
            let _ = stream.write_all(response.as_bytes());
        }
    });
}

#[tokio::test]
async fn a_member_that_hangs_is_reported_silent_and_the_others_labelled() {
    // Three loopback addresses, one port: members 0 and 1 answer, 2 hangs.
    let first = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = first.local_addr().unwrap().port();
    let second = TcpListener::bind(("127.0.0.2", port)).unwrap();
    let _hanging = TcpListener::bind(("127.0.0.3", port)).unwrap();
    answering_member(first, "orders-0", "leader");
    answering_member(second, "orders-1", "follower");

    let (client, api) = FakeApi::start(Box::new(echo));
    let settings = Settings {
        member_http_port: port,
        poll_timeout_ms: 300,
        ..Settings::default()
    };
    let (ctx, mut writers) = context(client, settings);
    for (name, ip, role) in [
        ("orders-0", "127.0.0.1", None),
        ("orders-1", "127.0.0.2", Some("leader")),
        ("orders-2", "127.0.0.3", Some("follower")),
    ] {
        writers
            .pods
            .apply_watcher_event(&watcher::Event::Apply(member_pod(name, ip, role)));
    }
    let started = Instant::now();
    reconcile(Arc::new(plaintext()), ctx.clone()).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the hanging member held the reconcile"
    );
    let seen = api.seen();
    let labels: Vec<(String, Value)> = seen
        .iter()
        .filter(|s| s.path.contains("/pods/"))
        .map(|s| {
            (
                s.path.rsplit('/').next().unwrap().to_string(),
                s.body["metadata"]["labels"][ROLE_LABEL].clone(),
            )
        })
        .collect();
    assert_eq!(
        labels,
        [
            ("orders-0".to_string(), json!("leader")),
            ("orders-1".to_string(), json!("follower")),
            ("orders-2".to_string(), json!("unknown")),
        ]
    );
    let status = &seen.last().unwrap().body["status"];
    assert_eq!(status["leader"], "orders-0");
    assert_eq!(status["term"], 4);
    assert_eq!(status["commitIndex"], 50);
    assert_eq!(status["members"][2]["answering"], false);
    let degraded = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Degraded")
        .unwrap();
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "MemberNotAnswering");
    let rendered = ctx.metrics.render();
    assert!(
        rendered.contains(
            r#"dledger_group_member_answering{group="orders",member="orders-2",namespace="shop"} 0"#
        ),
        "{rendered}"
    );
}

/// The builders' inputs of a new three-member group.
fn inputs(group: &Group<'_>) -> apply::Inputs<'static> {
    let join = Join::desired(group, None, false, false, 3);
    apply::Inputs {
        statefulset_replicas: 3,
        join: Box::leak(Box::new(join)),
    }
}

#[tokio::test]
async fn a_child_edited_or_deleted_by_hand_is_put_back_and_counted() {
    let applies = Arc::new(Mutex::new(0));
    let count = applies.clone();
    let (client, api) = FakeApi::start(Box::new(move |request: &Seen| {
        let mut answer = echo(request)?;
        if request.path.contains("statefulsets") {
            // Created at generation 1; the hand edit makes it 2, our apply 3.
            let mut count = count.lock().unwrap();
            *count += 1;
            answer.1["metadata"]["generation"] = if *count == 1 { 1 } else { 3 }.into();
        }
        Some(answer)
    }));
    let (ctx, mut writers) = context(client, Settings::default());
    let group = plaintext();
    let identity = Group::of(&group).unwrap();
    apply::ensure_children(
        &ctx,
        &identity,
        group.metadata.generation,
        &inputs(&identity),
    )
    .await
    .unwrap();
    let mut edited = specs::statefulset(&identity, 3);
    edited.metadata.uid = Some("uid-orders".into());
    edited.metadata.generation = Some(2);
    writers
        .statefulsets
        .apply_watcher_event(&watcher::Event::Apply(edited));
    let outcome = apply::ensure_children(
        &ctx,
        &identity,
        group.metadata.generation,
        &inputs(&identity),
    )
    .await
    .unwrap();
    assert_eq!(outcome.repaired, ["StatefulSet/orders"]);
    // Nothing changed since: nothing to repair, nothing applied.
    let mut current = specs::statefulset(&identity, 3);
    current.metadata.uid = Some("uid-orders".into());
    current.metadata.generation = Some(3);
    writers
        .statefulsets
        .apply_watcher_event(&watcher::Event::Apply(current));
    let before = api.seen().len();
    let outcome = apply::ensure_children(
        &ctx,
        &identity,
        group.metadata.generation,
        &inputs(&identity),
    )
    .await
    .unwrap();
    assert!(outcome.repaired.is_empty());
    assert!(!kinds(&api.seen()[before..])
        .iter()
        .any(|k| k.contains("statefulsets")));
}

#[tokio::test]
async fn a_deleted_child_comes_back_as_a_repair_but_a_lagging_watch_is_not_one() {
    let recreated = Arc::new(Mutex::new(false));
    let flag = recreated.clone();
    let (client, _api) = FakeApi::start(Box::new(move |request: &Seen| {
        let mut answer = echo(request)?;
        if request.path.ends_with("/services/orders") && *flag.lock().unwrap() {
            answer.1["metadata"]["uid"] = "uid-new".into();
        }
        Some(answer)
    }));
    let (ctx, _writers) = context(client, Settings::default());
    let group = plaintext();
    let identity = Group::of(&group).unwrap();
    apply::ensure_children(
        &ctx,
        &identity,
        group.metadata.generation,
        &inputs(&identity),
    )
    .await
    .unwrap();
    // The watch has not delivered anything yet: the same objects come back.
    let outcome = apply::ensure_children(
        &ctx,
        &identity,
        group.metadata.generation,
        &inputs(&identity),
    )
    .await
    .unwrap();
    assert!(outcome.repaired.is_empty(), "{:?}", outcome.repaired);
    // The client Service was deleted by hand: the apply creates a new one.
    *recreated.lock().unwrap() = true;
    let outcome = apply::ensure_children(
        &ctx,
        &identity,
        group.metadata.generation,
        &inputs(&identity),
    )
    .await
    .unwrap();
    assert_eq!(outcome.repaired, ["Service/orders"]);
}

#[tokio::test]
async fn a_group_without_uid_is_an_error_before_any_request() {
    let (client, api) = FakeApi::start(Box::new(echo));
    let (ctx, _writers) = context(client, Settings::default());
    let mut group = plaintext();
    group.metadata.uid = None;
    let err = reconcile(Arc::new(group), ctx).await.unwrap_err();
    assert_eq!(err.metric_label(), "incomplete_resource");
    assert!(api.seen().is_empty());
}

/// Three members answering on loopback (orders-0 leads), their pods on
/// `rev-1` with uids, and an API server whose StatefulSet is on `rev-2`.
async fn outdated_group(respond: Responder) -> (Arc<Context>, FakeApi, Writers) {
    let first = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = first.local_addr().unwrap().port();
    let second = TcpListener::bind(("127.0.0.2", port)).unwrap();
    let third = TcpListener::bind(("127.0.0.3", port)).unwrap();
    answering_member(first, "orders-0", "leader");
    answering_member(second, "orders-1", "follower");
    answering_member(third, "orders-2", "follower");
    let (client, api) = FakeApi::start(respond);
    let settings = Settings {
        member_http_port: port,
        poll_timeout_ms: 500,
        ..Settings::default()
    };
    let (ctx, mut writers) = context(client, settings);
    for (name, ip, role) in [
        ("orders-0", "127.0.0.1", "leader"),
        ("orders-1", "127.0.0.2", "follower"),
        ("orders-2", "127.0.0.3", "follower"),
    ] {
        let mut pod = member_pod(name, ip, Some(role));
        pod.metadata.uid = Some(format!("uid-{name}"));
        writers
            .pods
            .apply_watcher_event(&watcher::Event::Apply(pod));
    }
    (ctx, api, writers)
}

/// `echo`, with the StatefulSet on a new update revision and a deleted pod
/// answered as the API does (the object, now terminating).
fn upgrading(request: &Seen) -> Option<(u16, Value)> {
    if request.method == Method::DELETE {
        let name = request.path.rsplit('/').next().unwrap_or_default();
        return Some((
            200,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": name, "namespace": "shop", "uid": format!("uid-{name}"),
                "deletionTimestamp": "2026-12-02T22:00:00Z"}}),
        ));
    }
    let mut answer = echo(request)?;
    if request.path.contains("statefulsets") {
        answer.1["status"] = json!({"replicas": 3, "currentRevision": "rev-1", "updateRevision": "rev-2", "observedGeneration": 1});
    }
    Some(answer)
}

#[tokio::test]
async fn an_upgrade_records_its_step_then_deletes_exactly_one_outdated_follower() {
    let (ctx, api, _writers) = outdated_group(Box::new(upgrading)).await;
    let action = reconcile(Arc::new(plaintext()), ctx.clone()).await.unwrap();
    // The sooner of the settled poll and the in-progress bound.
    let settings = Settings::default();
    let expected_ms = settings
        .requeue_settled_ms
        .min(settings.requeue_in_progress_ms);
    assert_eq!(action, Action::requeue(Duration::from_millis(expected_ms)));
    let seen = api.seen();
    let deletes: Vec<&Seen> = seen.iter().filter(|s| s.method == Method::DELETE).collect();
    assert_eq!(deletes.len(), 1, "{:?}", kinds(&seen));
    // Both followers are as far along; the lower ordinal goes first, never the leader.
    assert_eq!(deletes[0].path, "/api/v1/namespaces/shop/pods/orders-1");
    assert_eq!(deletes[0].body["preconditions"]["uid"], "uid-orders-1");
    let status_write = seen
        .iter()
        .position(|s| s.path.ends_with("/status"))
        .expect("a status write");
    let delete_at = seen
        .iter()
        .position(|s| s.method == Method::DELETE)
        .unwrap();
    assert!(
        status_write < delete_at,
        "status.upgrade is written before the delete"
    );
    let status = &seen[status_write].body["status"];
    assert_eq!(status["upgrade"]["step"], "restart-member");
    assert_eq!(status["upgrade"]["member"], "orders-1");
    assert_eq!(status["upgrade"]["commitIndexAtDeletion"], 50);
    assert_eq!(status["upgrade"]["podUid"], "uid-orders-1");
    let progressing = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .unwrap();
    assert_eq!(progressing["reason"], "UpgradeRestartingMember");
}

#[tokio::test]
async fn a_pod_already_replaced_is_not_an_error() {
    let (ctx, api, _writers) = outdated_group(Box::new(|request: &Seen| {
        if request.method == Method::DELETE {
            Some((409, refusal(409, "Conflict")))
        } else {
            upgrading(request)
        }
    }))
    .await;
    reconcile(Arc::new(plaintext()), ctx).await.unwrap();
    let deletes = api
        .seen()
        .iter()
        .filter(|s| s.method == Method::DELETE)
        .count();
    assert_eq!(deletes, 1);
}

#[tokio::test]
async fn the_pause_annotation_holds_the_upgrade_without_a_delete() {
    let (ctx, api, _writers) = outdated_group(Box::new(upgrading)).await;
    let mut group = plaintext();
    group.metadata.annotations = Some(
        [(upgrade::PAUSE_ANNOTATION.to_string(), "true".to_string())]
            .into_iter()
            .collect(),
    );
    reconcile(Arc::new(group), ctx).await.unwrap();
    let seen = api.seen();
    assert!(
        !seen.iter().any(|s| s.method == Method::DELETE),
        "{:?}",
        kinds(&seen)
    );
    let status = &seen
        .iter()
        .find(|s| s.path.ends_with("/status"))
        .unwrap()
        .body["status"];
    assert!(status.get("upgrade").is_none());
    let progressing = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .unwrap();
    assert_eq!(progressing["reason"], "UpgradePaused");
}

#[tokio::test]
async fn an_update_revision_the_statefulset_controller_has_not_caught_up_with_deletes_nothing() {
    let (ctx, api, _writers) = outdated_group(Box::new(|request: &Seen| {
        let mut answer = upgrading(request)?;
        if request.path.contains("statefulsets") {
            // Just applied (generation 1), last seen by its controller at 0.
            answer.1["status"]["observedGeneration"] = 0.into();
        }
        Some(answer)
    }))
    .await;
    reconcile(Arc::new(plaintext()), ctx).await.unwrap();
    let seen = api.seen();
    assert!(
        !seen.iter().any(|s| s.method == Method::DELETE),
        "{:?}",
        kinds(&seen)
    );
}

#[test]
fn the_upgrade_goes_before_the_switchover_and_its_trouble_hides_the_polls() {
    let mut status = DLedgerGroupStatus::default();
    let mut notices = vec![
        Notice {
            warning: true,
            reason: "ImageNotStarting".into(),
            note: "orders-2: CrashLoopBackOff".into(),
        },
        Notice {
            warning: false,
            reason: "LeaderElected".into(),
            note: "orders-0 leads".into(),
        },
    ];
    let execution = Execution {
        action: Some(Disruption::DeletePod {
            member: "orders-1".into(),
            uid: "u".into(),
        }),
        degraded: Some(Verdict {
            status: true,
            reason: "UpgradeStepTimedOut".into(),
            message: "orders-2 stuck".into(),
        }),
        ..Execution::default()
    };
    let switching = SwitchoverExecution {
        action: Some(Disruption::Transfer {
            from: "orders-0".into(),
            to: "orders-1".into(),
        }),
        ..SwitchoverExecution::default()
    };
    let action = fold_executions(
        &mut status,
        &mut notices,
        execution,
        switching,
        &[],
        "2026-12-02T22:00:00Z",
        Some(2),
    );
    assert!(matches!(action, Some(Disruption::DeletePod { .. })));
    assert_eq!(status.phase.as_deref(), Some("Degraded"));
    assert_eq!(status.conditions[0].reason, "UpgradeStepTimedOut");
    let reasons: Vec<&str> = notices.iter().map(|n| n.reason.as_str()).collect();
    assert_eq!(reasons, ["LeaderElected"]);
}

/// A fake member on `listener` answering `/status` with `status`, and a
/// membership change with the configuration it was given; every request
/// line and body it got goes to `requests`.
fn scripted_member(listener: TcpListener, status: Value, requests: Requests) {
    use std::io::{Read, Write};
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            // Headers and body may come in separate writes: read both.
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            let (head, body) = loop {
                let read = stream.read(&mut buffer).unwrap_or(0);
                request.extend_from_slice(&buffer[..read]);
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|h| {
                            h.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= length || read == 0 {
                        break (head.to_string(), body.to_string());
                    }
                }
                if read == 0 {
                    break (text, String::new());
                }
            };
            let line = head.lines().next().unwrap_or_default().to_string();
            requests
                .lock()
                .unwrap()
                .push((line.clone(), body.to_string()));
            let answer = if line.starts_with("GET /status") {
                status.clone()
            } else {
                status["configuration"].clone()
            };
            let answer = answer.to_string();
            let response = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}", answer.len());
            let _ = stream.write_all(response.as_bytes());
        }
    });
}

/// What a fake member was asked: request line and body.
type Requests = Arc<Mutex<Vec<(String, String)>>>;

/// A `/status` of `id` in a group whose configuration is voters 0..3.
fn member_status(id: &str, role: &str, incarnation: u64) -> Value {
    let voter = |n: u32| json!({"id": format!("orders-{n}"), "address": format!("orders-{n}.orders-peers.shop.svc:20911"), "httpAddress": format!("orders-{n}.orders-peers.shop.svc:8080")});
    let peers: Vec<Value> = if role == "leader" {
        (1..3)
            .map(|n| json!({"id": format!("orders-{n}"), "matchIndex": 50, "lag": 0, "lastContactMs": 20}))
            .collect()
    } else {
        vec![]
    };
    json!({
        "group": "orders", "id": id, "version": "0.1.0", "role": role, "term": 4, "leaderId": "orders-0",
        "firstIndex": 1, "lastIndex": 50, "lastTerm": 4, "commitIndex": 50, "peers": peers,
        "incarnation": incarnation,
        "configuration": {"index": 7, "committed": true, "voters": [voter(0), voter(1), voter(2)], "learners": []}
    })
}

/// Members 0..3 of a formed group and, when `with_new_pod`, pod orders-3
/// (incarnation 0x77, not in the configuration yet), all answering on
/// loopback; the StatefulSet has 3 replicas on an outdated revision, and
/// the resource asks for 5.
async fn growing_group(with_new_pod: bool) -> (Arc<Context>, FakeApi, Requests) {
    let first = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = first.local_addr().unwrap().port();
    let leader_requests = Requests::default();
    let ignored = Requests::default();
    scripted_member(
        first,
        member_status("orders-0", "leader", 0),
        leader_requests.clone(),
    );
    let mut members = vec![
        (
            "orders-1",
            "127.0.0.2",
            member_status("orders-1", "follower", 0),
        ),
        (
            "orders-2",
            "127.0.0.3",
            member_status("orders-2", "follower", 0),
        ),
    ];
    if with_new_pod {
        let mut status = member_status("orders-3", "learner", 0x77);
        status["configuration"] =
            json!({"index": 0, "committed": false, "voters": [], "learners": []});
        members.push(("orders-3", "127.0.0.4", status));
    }
    for (_, ip, status) in &members {
        let listener = TcpListener::bind((*ip, port)).unwrap();
        scripted_member(listener, status.clone(), ignored.clone());
    }
    let (client, api) = FakeApi::start(Box::new(upgrading));
    let settings = Settings {
        member_http_port: port,
        poll_timeout_ms: 500,
        ..Settings::default()
    };
    let (ctx, mut writers) = context(client, settings);
    let mut sts = specs::statefulset(&Group::of(&plaintext()).unwrap(), 3);
    sts.metadata.uid = Some("uid-orders".into());
    writers
        .statefulsets
        .apply_watcher_event(&watcher::Event::Apply(sts));
    let pods = std::iter::once(("orders-0", "127.0.0.1"))
        .chain(members.iter().map(|(name, ip, _)| (*name, *ip)));
    for (name, ip) in pods {
        let mut pod = member_pod(name, ip, None);
        pod.metadata.uid = Some(format!("uid-{name}"));
        writers
            .pods
            .apply_watcher_event(&watcher::Event::Apply(pod));
    }
    (ctx, api, leader_requests)
}

fn five_replicas() -> DLedgerGroup {
    plaintext_group(
        json!({"replicas": 5, "image": "localhost/dledger-replica:dev", "storage": {"size": "1Gi"}}),
    )
}

#[tokio::test]
async fn growth_scales_the_statefulset_first_and_holds_the_upgrade() {
    let (ctx, api, leader_requests) = growing_group(false).await;
    reconcile(Arc::new(five_replicas()), ctx).await.unwrap();
    let seen = api.seen();
    assert!(
        !seen.iter().any(|s| s.method == Method::DELETE),
        "an upgrade step while the membership changes: {:?}",
        kinds(&seen)
    );
    let join = seen.iter().find(|s| s.path.contains("configmaps")).unwrap();
    assert_eq!(join.body["data"]["DLEDGER_INITIAL_STATE"], "existing");
    let sts = seen
        .iter()
        .find(|s| s.path.contains("statefulsets"))
        .unwrap();
    assert_eq!(sts.body["spec"]["replicas"], 5);
    let status = &seen
        .iter()
        .find(|s| s.path.ends_with("/status"))
        .unwrap()
        .body["status"];
    assert!(status.get("upgrade").is_none());
    assert_eq!(
        status["configuration"]["voters"],
        json!(["orders-0", "orders-1", "orders-2"])
    );
    let progressing = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .unwrap();
    assert_eq!(progressing["reason"], "Scaling");
    assert!(
        progressing["message"]
            .as_str()
            .unwrap()
            .contains("orders-3"),
        "{progressing}"
    );
    let calls = leader_requests.lock().unwrap();
    assert!(
        calls
            .iter()
            .all(|(line, _)| line.starts_with("GET /status")),
        "{calls:?}"
    );
}

#[tokio::test]
async fn a_new_pod_is_added_on_the_leader_as_a_learner_of_its_incarnation() {
    let (ctx, _api, leader_requests) = growing_group(true).await;
    reconcile(Arc::new(five_replicas()), ctx).await.unwrap();
    let calls = leader_requests.lock().unwrap();
    let adds: Vec<&String> = calls
        .iter()
        .filter(|(line, _)| line.starts_with("POST /admin/members "))
        .map(|(_, body)| body)
        .collect();
    assert_eq!(adds.len(), 1, "{calls:?}");
    let body: Value = serde_json::from_str(adds[0]).unwrap();
    assert_eq!(body["id"], "orders-3");
    assert_eq!(body["address"], "orders-3.orders-peers.shop.svc:20911");
    assert_eq!(body["httpAddress"], "orders-3.orders-peers.shop.svc:8080");
    assert_eq!(body["incarnation"], 0x77);
}

/// A fake API server that keeps the Secrets it is sent (create and apply)
/// and answers reads of them, 404 for one it does not have; everything
/// else is echoed.
fn keeping_secrets() -> (Responder, Arc<Mutex<BTreeMap<String, Value>>>) {
    let kept: Arc<Mutex<BTreeMap<String, Value>>> = Arc::default();
    let store = kept.clone();
    let respond: Responder = Box::new(move |request: &Seen| {
        if !request.path.starts_with("/api/v1/namespaces/shop/secrets") {
            return echo(request);
        }
        let mut kept = store.lock().unwrap();
        let name = if request.method == Method::POST {
            request.body["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string()
        } else {
            request.path.rsplit('/').next().unwrap().to_string()
        };
        if request.method == Method::GET {
            return Some(match kept.get(&name) {
                Some(secret) => (200, secret.clone()),
                None => (404, refusal(404, "NotFound")),
            });
        }
        if request.method == Method::POST && kept.contains_key(&name) {
            return Some((409, refusal(409, "AlreadyExists")));
        }
        let mut secret = request.body.clone();
        secret["apiVersion"] = "v1".into();
        secret["kind"] = "Secret".into();
        secret["metadata"]["namespace"] = "shop".into();
        secret["metadata"]["uid"] = format!("uid-{name}").into();
        secret["metadata"]["resourceVersion"] = "1".into();
        kept.insert(name, secret.clone());
        Some((200, secret))
    });
    (respond, kept)
}

fn text_of(secret: &Secret, key: &str) -> String {
    crate::specs::tls::secret_text(secret, key).unwrap_or_else(|| panic!("no {key}"))
}

#[tokio::test]
async fn a_tls_group_gets_a_ca_once_and_certificates_renewed_only_when_due() {
    use dledger_replica::certs::{read_certificate, Ca};
    let (respond, kept) = keeping_secrets();
    let (client, api) = FakeApi::start(respond);
    let (ctx, mut writers) = context(client, Settings::default());
    let group = Arc::new(fixtures::minimal());
    reconcile(group.clone(), ctx.clone()).await.unwrap();
    let seen = kinds(&api.seen());
    assert_eq!(
        seen[..6],
        [
            "GET /api/v1/namespaces/shop/secrets/orders-ca",
            "POST /api/v1/namespaces/shop/secrets",
            "GET /api/v1/namespaces/shop/secrets/orders-tls",
            "PATCH /api/v1/namespaces/shop/secrets/orders-tls",
            "GET /api/v1/namespaces/shop/secrets/orders-client-tls",
            "PATCH /api/v1/namespaces/shop/secrets/orders-client-tls",
        ],
        "the certificates come before any child that mounts them: {seen:?}"
    );
    let secret = |name: &str| -> Secret {
        serde_json::from_value(kept.lock().unwrap()[name].clone()).unwrap()
    };
    let ca = secret("orders-ca");
    let ca_pem = text_of(&ca, "ca.crt");
    let members = secret("orders-tls");
    assert_eq!(text_of(&members, "ca.crt"), ca_pem);
    for ordinal in 0..7 {
        let pod = format!("orders-{ordinal}");
        let facts = read_certificate(&text_of(&members, &format!("{pod}.crt"))).unwrap();
        assert_eq!(facts.names[0], pod);
        assert!(facts
            .names
            .contains(&format!("{pod}.orders-peers.shop.svc")));
        assert!(!text_of(&members, &format!("{pod}.key")).is_empty());
    }
    let client = secret("orders-client-tls");
    assert_eq!(client.type_.as_deref(), Some("kubernetes.io/tls"));
    let facts = read_certificate(&text_of(&client, "tls.crt")).unwrap();
    assert_eq!(facts.names, ["orders-client"]);
    assert_eq!(
        ctx.own_certificate("shop/orders").map(|own| own.ca_pem),
        Some(ca_pem.clone()),
        "the operator's own certificate is issued by the group's CA"
    );

    // Watched now: nothing to issue, not even a read.
    for name in ["orders-ca", "orders-tls", "orders-client-tls"] {
        writers
            .secrets
            .apply_watcher_event(&watcher::Event::Apply(secret(name)));
    }
    let before = api.seen().len();
    reconcile(group.clone(), ctx.clone()).await.unwrap();
    let again = kinds(&api.seen()[before..]);
    assert!(
        again.iter().all(|request| !request.contains("/secrets")),
        "{again:?}"
    );

    // One member's certificate within the renewal window: it alone is
    // issued again, by the same CA.
    let authority = Ca::from_pem(&ca_pem, &text_of(&ca, "ca.key")).unwrap();
    let group_ref = Group::of(&group).unwrap();
    let names = crate::specs::tls::member_certificate_names(&group_ref, "orders-2");
    let short = authority.issue(&names, 10).unwrap();
    let mut expiring = members.clone();
    let data = expiring.data.as_mut().unwrap();
    data.insert(
        "orders-2.crt".into(),
        k8s_openapi::ByteString(short.cert_pem.clone().into_bytes()),
    );
    data.insert(
        "orders-2.key".into(),
        k8s_openapi::ByteString(short.key_pem.clone().into_bytes()),
    );
    kept.lock().unwrap().insert(
        "orders-tls".into(),
        serde_json::to_value(&expiring).unwrap(),
    );
    writers
        .secrets
        .apply_watcher_event(&watcher::Event::Apply(expiring));
    let before = api.seen().len();
    reconcile(group.clone(), ctx.clone()).await.unwrap();
    let renewed_requests: Vec<String> = kinds(&api.seen()[before..])
        .into_iter()
        .filter(|request| request.contains("/secrets"))
        .collect();
    assert_eq!(
        renewed_requests,
        [
            "GET /api/v1/namespaces/shop/secrets/orders-tls",
            "PATCH /api/v1/namespaces/shop/secrets/orders-tls",
        ]
    );
    let renewed = secret("orders-tls");
    let new_cert = text_of(&renewed, "orders-2.crt");
    assert_ne!(new_cert, short.cert_pem);
    let days_left = (read_certificate(&new_cert)
        .unwrap()
        .not_after
        .unix_timestamp()
        - Timestamp::now().as_second())
        / 86_400;
    assert!(days_left >= 89, "{days_left} days");
    assert_eq!(
        text_of(&renewed, "orders-1.crt"),
        text_of(&members, "orders-1.crt"),
        "a certificate not due is kept"
    );
    assert_eq!(text_of(&renewed, "ca.crt"), ca_pem);
}

#[tokio::test]
async fn an_unreadable_ca_secret_is_an_error_and_is_not_replaced() {
    let (respond, kept) = keeping_secrets();
    kept.lock().unwrap().insert(
        "orders-ca".into(),
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "orders-ca", "namespace": "shop"},
               "data": {"ca.crt": "bm90IGEgY2VydA=="}}),
    );
    let (client, api) = FakeApi::start(respond);
    let (ctx, _writers) = context(client, Settings::default());
    let err = reconcile(Arc::new(fixtures::minimal()), ctx.clone())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("orders-ca lacks ca.crt or ca.key"),
        "{err}"
    );
    assert_eq!(err.metric_label(), "tls");
    assert!(
        api.seen()
            .iter()
            .all(|request| request.method == Method::GET),
        "{:?}",
        kinds(&api.seen())
    );
}

fn cert_manager_group() -> DLedgerGroup {
    fixtures::group(json!({
        "replicas": 3, "image": "i", "storage": {"size": "1Gi"},
        "tls": {"issuerRef": {"name": "group-ca", "kind": "ClusterIssuer"}}
    }))
}

/// A Secret as cert-manager writes it for a Certificate, with the labels
/// its `secretTemplate` asks for.
fn issued_secret(name: &str, cert: &str) -> Secret {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": "shop", "resourceVersion": "5"},
        "data": {
            "tls.crt": base64(cert), "tls.key": base64(&format!("{cert}-key")), "ca.crt": base64("CA")
        }
    }))
    .unwrap()
}

fn base64(text: &str) -> String {
    serde_json::to_value(k8s_openapi::ByteString(text.as_bytes().to_vec()))
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn with_an_issuer_the_operator_asks_cert_manager_and_assembles_what_it_issued() {
    let (client, api) = FakeApi::start(Box::new(echo));
    let (ctx, mut writers) = context(client, Settings::default());
    let group = Arc::new(cert_manager_group());
    reconcile(group.clone(), ctx.clone()).await.unwrap();
    let seen = api.seen();
    let certificates: Vec<&Seen> = seen
        .iter()
        .filter(|s| {
            s.path
                .contains("/apis/cert-manager.io/v1/namespaces/shop/certificates/")
        })
        .collect();
    let names: Vec<&str> = certificates
        .iter()
        .map(|s| s.path.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "orders-0-cert",
            "orders-1-cert",
            "orders-2-cert",
            "orders-3-cert",
            "orders-4-cert",
            "orders-5-cert",
            "orders-6-cert",
            "orders-client-tls",
            "orders-operator-cert"
        ]
    );
    assert_eq!(
        certificates[8].body["spec"]["commonName"],
        "dledger-operator"
    );
    assert_eq!(
        certificates[8].body["spec"]["issuerRef"]["name"],
        "group-ca"
    );
    assert!(
        seen.iter().all(|s| !s.path.contains("/secrets")),
        "no CA of its own: {:?}",
        kinds(&seen)
    );

    // cert-manager wrote two members' and the operator's Secrets: the
    // members' are copied into the one the pods mount, once.
    for (name, cert) in [
        ("orders-0-cert", "C0"),
        ("orders-1-cert", "C1"),
        ("orders-operator-cert", "OP"),
    ] {
        writers
            .secrets
            .apply_watcher_event(&watcher::Event::Apply(issued_secret(name, cert)));
    }
    let before = api.seen().len();
    reconcile(group.clone(), ctx.clone()).await.unwrap();
    let later = api.seen()[before..].to_vec();
    assert!(
        later.iter().all(|s| !s.path.contains("cert-manager.io")),
        "Certificates applied again unchanged: {:?}",
        kinds(&later)
    );
    let assembled: Vec<&Seen> = later
        .iter()
        .filter(|s| s.path == "/api/v1/namespaces/shop/secrets/orders-tls")
        .collect();
    assert_eq!(assembled.len(), 1, "{:?}", kinds(&later));
    let secret: Secret = serde_json::from_value(assembled[0].body.clone()).unwrap();
    assert_eq!(text_of(&secret, "orders-1.crt"), "C1");
    assert_eq!(text_of(&secret, "orders-1.key"), "C1-key");
    assert_eq!(text_of(&secret, "ca.crt"), "CA");

    writers
        .secrets
        .apply_watcher_event(&watcher::Event::Apply(secret));
    let before = api.seen().len();
    reconcile(group, ctx).await.unwrap();
    assert!(
        api.seen()[before..]
            .iter()
            .all(|s| !s.path.contains("/secrets")),
        "{:?}",
        kinds(&api.seen()[before..])
    );
}

#[tokio::test]
async fn an_issuer_without_cert_manager_installed_is_said_plainly() {
    let (client, _api) = FakeApi::start(Box::new(|request: &Seen| {
        if request.path.contains("cert-manager.io") {
            Some((404, refusal(404, "NotFound")))
        } else {
            echo(request)
        }
    }));
    let (ctx, _writers) = context(client, Settings::default());
    let err = reconcile(Arc::new(cert_manager_group()), ctx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("install cert-manager"), "{err}");
}

#[tokio::test]
async fn a_network_policy_is_applied_when_asked_and_deleted_when_turned_off() {
    let (client, api) = FakeApi::start(Box::new(echo));
    let (ctx, mut writers) = context(client, Settings::default());
    let with_policy = plaintext_group(json!({
        "replicas": 3, "image": "i", "storage": {"size": "1Gi"},
        "networkPolicy": {"enabled": true}
    }));
    reconcile(Arc::new(with_policy), ctx.clone()).await.unwrap();
    let applied: Vec<Seen> = api
        .seen()
        .into_iter()
        .filter(|s| s.path.contains("networkpolicies"))
        .collect();
    assert_eq!(
        kinds(&applied),
        ["PATCH /apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/orders"]
    );
    let policy: NetworkPolicy = serde_json::from_value(applied[0].body.clone()).unwrap();

    // Turned off: the policy this group owns goes; one it does not own stays.
    let mut foreign = policy.clone();
    foreign.metadata.owner_references = None;
    writers
        .network_policies
        .apply_watcher_event(&watcher::Event::Apply(foreign));
    let before = api.seen().len();
    reconcile(Arc::new(plaintext()), ctx.clone()).await.unwrap();
    assert!(
        api.seen()[before..]
            .iter()
            .all(|s| !s.path.contains("networkpolicies")),
        "{:?}",
        kinds(&api.seen()[before..])
    );
    writers
        .network_policies
        .apply_watcher_event(&watcher::Event::Apply(policy));
    let before = api.seen().len();
    reconcile(Arc::new(plaintext()), ctx).await.unwrap();
    let deleted: Vec<String> = kinds(&api.seen()[before..])
        .into_iter()
        .filter(|k| k.contains("networkpolicies"))
        .collect();
    assert_eq!(
        deleted,
        ["DELETE /apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/orders"]
    );
}

#[tokio::test]
async fn two_notices_of_one_reason_are_two_events_with_their_own_notes() {
    let (client, api) = FakeApi::start(Box::new(echo));
    let (stores, _writers) = stores(false);
    let reporter = Reporter {
        controller: "dledger-operator".into(),
        instance: None,
    };
    let ctx = Context::new(
        client,
        Some(reporter),
        Metrics::new().unwrap(),
        Settings::default(),
        stores,
    );
    let group = plaintext();
    for member in ["orders-2", "orders-0"] {
        publish(
            &ctx,
            &group,
            false,
            "MemberReplaced",
            format!("{member} came back"),
        )
        .await;
    }
    let notes: Vec<(Method, Value)> = api
        .seen()
        .into_iter()
        .filter(|s| s.path.contains("/events"))
        .map(|s| (s.method, s.body["note"].clone()))
        .collect();
    assert_eq!(
        notes,
        [
            (Method::POST, json!("orders-2 came back")),
            (Method::POST, json!("orders-0 came back")),
        ],
        "the second would be folded into the first's series, with the first's note"
    );
}
