//! The Alertmanager webhook: authenticate, parse, store, then acknowledge.
//!
//! `POST /api/v1/alerts` answers 2xx only after the delivery and its alerts are
//! committed (in a batch with whatever other writes arrived meanwhile, see
//! [`crate::store::writer`]), so an acknowledged alert survives a crash; new incidents are then handed
//! to whatever decides (the engine) through [`IncidentSink`], so this stage knows
//! nothing of rules, policy or the cluster. Re-sends are stored as deliveries too (the
//! audit trail shows each one) but fold into their existing incident.

pub mod auth;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use serde::Serialize;

use crate::alert::Delivery;
use crate::http::HttpError;
use crate::store::Store;
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

/// The webhook routes, with authentication and a body size limit.
pub fn router(state: IngestState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/api/v1/alerts", post(receive))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

async fn authenticate(
    State(state): State<IngestState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Result<Response, HttpError> {
    if state.auth.admits(&headers) {
        Ok(next.run(request).await)
    } else {
        Err(HttpError::Unauthorized)
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
    let stored = state
        .store
        .within_wait(state.store.record_delivery_handing_on(
            delivery,
            Utc::now(),
            state.sink.clone(),
        ))
        .await?;
    let ack = Ack {
        delivery_id: stored.delivery_id,
        alerts,
        new_incidents: stored.to_decide.len(),
        repeated: stored.repeated,
        resolved: stored.resolved,
    };
    Ok(Json(ack))
}
