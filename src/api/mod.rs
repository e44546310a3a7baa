//! The audit API and health endpoints.
//!
//! `GET /api/v1/remediations` lists what salve did, newest first, with the verdict
//! reasons; `GET /api/v1/remediations/{id}` adds the full timeline (rule match, every
//! Kubernetes call, the policy input and verdict, each state change). `/healthz` says
//! the process is alive; `/readyz` says it can take webhooks (the database answers).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::config::Secret;
use crate::http::HttpError;
use crate::reload::{ReloadReport, Reloader};
use crate::store::remediations::Cursor;
use crate::store::{RemediationRecord, Store, TimelineEvent};
use crate::telemetry::Metrics;

/// What the audit and admin API reads from.
#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    /// "live", "dry_run" or "offline", shown by `/readyz`.
    pub mode: &'static str,
    pub reloader: Arc<Reloader>,
    pub metrics: Arc<Metrics>,
    /// Required by admin endpoints; without it they answer loopback clients only.
    pub admin_token: Option<Arc<Secret>>,
}

/// Query parameters of the listing.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// Page size, 1..=500 (default 50).
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page.
    pub cursor: Option<String>,
}

/// One page of remediations.
#[derive(Debug, Serialize)]
pub struct Page {
    pub items: Vec<RemediationRecord>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    pub next: Option<String>,
}

/// One remediation with its timeline.
#[derive(Debug, Serialize)]
pub struct Detail {
    #[serde(flatten)]
    pub remediation: RemediationRecord,
    pub timeline: Vec<TimelineEvent>,
}

/// The audit and health routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/remediations", get(list))
        .route("/api/v1/remediations/{id}", get(show))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/-/reload", post(reload))
        .with_state(state)
}

/// Reads one page; shared by the API and `salve history`.
pub async fn page(store: &Store, limit: u32, cursor: Option<&str>) -> Result<Page, HttpError> {
    let limit = limit.clamp(1, 500);
    let cursor = match cursor {
        None => None,
        Some(c) => Some(
            Cursor::decode(c)
                .ok_or_else(|| HttpError::BadRequest(format!("invalid cursor {c:?}")))?,
        ),
    };
    let items = store.list_remediations(limit, cursor.as_ref()).await?;
    let next = (items.len() == limit as usize)
        .then(|| items.last())
        .flatten()
        .map(|r| {
            Cursor {
                created_at: r.created_at.clone(),
                id: r.id.clone(),
            }
            .encode()
        });
    Ok(Page { items, next })
}

async fn list(
    State(state): State<ApiState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Page>, HttpError> {
    Ok(Json(
        page(&state.store, q.limit.unwrap_or(50), q.cursor.as_deref()).await?,
    ))
}

async fn show(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Detail>, HttpError> {
    let remediation = state
        .store
        .remediation(&id)
        .await?
        .ok_or_else(|| HttpError::NotFound(format!("no remediation {id}")))?;
    let timeline = state.store.timeline(&id).await?;
    Ok(Json(Detail {
        remediation,
        timeline,
    }))
}

async fn ready(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, HttpError> {
    state
        .store
        .ping()
        .await
        .map_err(|e| HttpError::Unavailable(e.to_string()))?;
    let decisions = state.reloader.current();
    Ok(Json(serde_json::json!({
        "status": "ready",
        "mode": state.mode,
        "policy_hash": decisions.policy.hash,
        "version": decisions.version,
        "rules": decisions.rules.rules.len(),
    })))
}

async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

/// Admin endpoints take the admin token when one is configured, else loopback callers only.
fn authorize_admin(
    state: &ApiState,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<(), HttpError> {
    match &state.admin_token {
        None if peer.ip().is_loopback() => Ok(()),
        None => Err(HttpError::Forbidden(
            "admin endpoints answer loopback clients only unless --admin-token-file is set".into(),
        )),
        Some(token) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or_default();
            if bool::from(given.as_bytes().ct_eq(token.0.as_bytes())) {
                Ok(())
            } else {
                Err(HttpError::Unauthorized)
            }
        }
    }
}

async fn reload(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<ReloadReport>, HttpError> {
    authorize_admin(&state, peer, &headers)?;
    state
        .reloader
        .reload("POST /-/reload")
        .await
        .map(Json)
        .map_err(|e| {
            HttpError::BadRequest(format!(
                "reload failed, still serving the last good set: {e}"
            ))
        })
}
