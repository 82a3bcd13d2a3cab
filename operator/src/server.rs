//! The operator's own HTTP server: `/metrics`, `/healthz`, `/readyz`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use crate::metrics::Metrics;

/// What the handlers read.
#[derive(Clone)]
pub struct ServerState {
    /// The metrics to render.
    pub metrics: Metrics,
    /// Set once the API client works; cleared at shutdown.
    pub ready: Arc<AtomicBool>,
}

/// The routes.
pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(state): State<ServerState>) -> ([(&'static str, &'static str); 1], String) {
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn readyz(State(state): State<ServerState>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get_status(router: Router, path: &str) -> (StatusCode, String) {
        let response = router
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn readyz_follows_the_flag_and_metrics_render() {
        let state = ServerState {
            metrics: Metrics::new().unwrap(),
            ready: Arc::new(AtomicBool::new(false)),
        };
        state.metrics.reconciles.with_label_values(&["ok"]).inc();
        assert_eq!(
            get_status(router(state.clone()), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            get_status(router(state.clone()), "/healthz").await.0,
            StatusCode::OK
        );
        state.ready.store(true, Ordering::SeqCst);
        assert_eq!(
            get_status(router(state.clone()), "/readyz").await.0,
            StatusCode::OK
        );
        let (status, body) = get_status(router(state), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("dledger_operator_reconciles_total"));
    }
}
