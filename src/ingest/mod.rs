//! The Alertmanager webhook: authenticate, parse, store, then acknowledge.
//!
//! `POST /api/v1/alerts` answers 2xx only after the delivery and its alerts are
//! committed (in a batch with whatever other writes arrived meanwhile, see
//! [`crate::store::writer`]), so an acknowledged alert survives a crash; new incidents are then handed
//! to whatever decides (the engine) through [`IncidentSink`], so this stage knows
//! nothing of rules, policy or the cluster. Re-sends are stored as deliveries too (the
//! audit trail shows each one) but fold into their existing incident.

pub mod auth;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use serde::Serialize;

use crate::alert::AlertStatus;
use crate::alert::Delivery;
use crate::http::{HttpError, Refusal};
use crate::store::Store;
use crate::telemetry::Metrics;
pub use auth::WebhookAuth;

/// Receives the ids of incidents seen firing for the first time.
pub trait IncidentSink: Send + Sync {
    /// Must not block: the webhook calls it before answering.
    fn submit(&self, incident_ids: Vec<String>);
}

/// What the webhook needs.
#[derive(Clone)]
pub struct IngestState {
    pub store: Store,
    /// Where new incidents go once their delivery is committed (the engine's queue).
    pub sink: Arc<dyn IncidentSink>,
    pub auth: Arc<WebhookAuth>,
    /// Where the webhook counts its answers and the alerts it took.
    pub metrics: Arc<Metrics>,
}

/// The webhook's answer: what was stored.
#[derive(Debug, Serialize)]
pub struct Ack {
    pub delivery_id: String,
    pub alerts: usize,
    pub new_incidents: usize,
    pub repeated: usize,
    pub resolved: usize,
}

/// The webhook routes, with authentication and a body size limit, counted and (when
/// refused) logged.
pub fn router(state: IngestState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/api/v1/alerts", post(receive))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .route_layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Counts every answer by code, and logs every refused delivery at WARN with its reason
/// and the peer: Alertmanager does not retry a 4xx, so a wrong token or a payload salve
/// cannot read loses alerts, and the operator must be able to see it.
async fn observe(
    State(state): State<IngestState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    state.metrics.webhook_answered(status.as_u16());
    if status.is_client_error() || status.is_server_error() {
        let reason = response
            .extensions()
            .get::<Refusal>()
            .map(|r| r.0.clone())
            // axum's own refusals (a body over the limit, a wrong content type).
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("refused").to_owned());
        tracing::warn!(%peer, status = status.as_u16(), %reason, "webhook delivery refused");
    }
    response
}

async fn authenticate(
    State(state): State<IngestState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    match state.auth.check(&headers) {
        Ok(()) => next.run(request).await,
        Err(why) => {
            let mut refused = HttpError::Unauthorized.into_response();
            refused
                .extensions_mut()
                .insert(Refusal(format!("authentication failed: {why}")));
            refused
        }
    }
}

async fn receive(State(state): State<IngestState>, body: Bytes) -> Result<Json<Ack>, HttpError> {
    let delivery = Delivery::parse(&body).map_err(|e| HttpError::BadRequest(e.to_string()))?;
    if delivery.truncated_alerts > 0 {
        tracing::warn!(
            group = %delivery.group_key,
            truncated = delivery.truncated_alerts,
            "Alertmanager left alerts out of this group (max_alerts); set max_alerts: 0 for salve's receiver"
        );
    }
    let alerts = delivery.alerts.len();
    let firing = delivery
        .alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Firing)
        .count();
    let stored = state
        .store
        .within_wait(state.store.record_delivery_handing_on(
            delivery,
            Utc::now(),
            state.sink.clone(),
        ))
        .await
        .inspect_err(|_| state.metrics.database_error("write"))?;
    state.metrics.alerts_received(firing, alerts - firing);
    let ack = Ack {
        delivery_id: stored.delivery_id,
        alerts,
        new_incidents: stored.to_decide.len(),
        repeated: stored.repeated,
        resolved: stored.resolved,
    };
    Ok(Json(ack))
}
