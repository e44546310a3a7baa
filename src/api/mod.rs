//! The audit API and health endpoints.
//!
//! `GET /api/v1/remediations` lists what salve did, newest first, with the verdict
//! reasons; `GET /api/v1/remediations/{id}` adds the full timeline (rule match, every
//! Kubernetes call, the policy input and verdict, each state change). `/healthz` says
//! the process is alive; `/readyz` says it can take webhooks (the database answers).

mod charts;
mod ready;
mod session;
mod ui;
mod ui_knowledge;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::config::Secret;
use crate::http::{ExternalUrl, HttpError};
use crate::reload::{ReloadReport, Reloader};
use crate::store::remediations::{Cursor, RemediationFilter};
use crate::store::{RemediationRecord, Store, TimelineEvent};
use crate::telemetry::{Exposition, Metrics};
pub use ready::ClusterProbe;

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
    /// Required by the audit API (the admin token works too); without either, loopback only.
    pub read_token: Option<Arc<Secret>>,
    /// Where people reach salve: the audit page's links and its cookie's scope.
    pub external_url: ExternalUrl,
    /// Whether the Kubernetes API server answers, for `/readyz`.
    pub cluster_probe: ClusterProbe,
}

/// The audit API's OpenAPI 3 description.
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// The cursor of the page after a full one: the last row's (time, id), which the next
/// page starts strictly before. A page shorter than `limit` is the last.
fn next_cursor<T>(
    items: &[T],
    limit: u32,
    position: impl Fn(&T) -> (&String, &String),
) -> Option<String> {
    let last = items.last().filter(|_| items.len() == limit as usize)?;
    let (at, id) = position(last);
    Some(
        Cursor {
            created_at: at.clone(),
            id: id.clone(),
        }
        .encode(),
    )
}

/// Query parameters of the listing; the same fields are `salve history`'s flags.
#[derive(Debug, Default, Clone, Deserialize, clap::Args)]
pub struct ListQuery {
    /// Page size, 1..=500 (default 50).
    #[arg(long)]
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page.
    #[arg(long)]
    #[serde(default, deserialize_with = "blank_is_absent")]
    pub cursor: Option<String>,
    /// Only workloads in this namespace.
    #[arg(long)]
    #[serde(default, deserialize_with = "blank_is_absent")]
    pub namespace: Option<String>,
    /// Only this workload kind (Deployment, StatefulSet).
    #[arg(long)]
    #[serde(default, deserialize_with = "blank_is_absent")]
    pub kind: Option<String>,
    /// Only this workload (by name).
    #[arg(long)]
    #[serde(default, deserialize_with = "blank_is_absent")]
    pub target: Option<String>,
    /// Only remediations of this alert.
    #[arg(long)]
    #[serde(default, deserialize_with = "blank_is_absent")]
    pub alertname: Option<String>,
    /// Only remediations by this rule.
    #[arg(long)]
    #[serde(default, deserialize_with = "blank_is_absent")]
    pub rule: Option<String>,
    /// Only remediations in this state (healed, escalated, denied, …).
    #[arg(long)]
    #[serde(default, deserialize_with = "blank_is_absent")]
    pub state: Option<String>,
    /// Only remediations with a step that ended so (healed, not_healed, rollout_failed, …).
    #[arg(long)]
    #[serde(default, deserialize_with = "blank_is_absent")]
    pub outcome: Option<String>,
    /// From this time on: RFC 3339, or a duration ago (`2h`, `7d`).
    #[arg(long)]
    #[serde(default, deserialize_with = "blank_is_absent")]
    pub since: Option<String>,
    /// Before this time: RFC 3339, or a duration ago.
    #[arg(long)]
    #[serde(default, deserialize_with = "blank_is_absent")]
    pub until: Option<String>,
}

/// An empty query value means "no filter": a plain HTML form sends every field, filled
/// in or not (`?namespace=shop&state=`), and an empty `state` must not be refused.
fn blank_is_absent<'de, D>(d: D) -> Result<Option<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let value: Option<String> = Option::deserialize(d)?;
    Ok(value.filter(|v| !v.trim().is_empty()))
}

const OUTCOMES: [&str; 7] = [
    "healed",
    "not_healed",
    "rollout_failed",
    "verification_unavailable",
    "denied",
    "failed",
    "skipped",
];

fn when(field: &str, text: &Option<String>) -> Result<Option<String>, HttpError> {
    let Some(t) = text else { return Ok(None) };
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(t) {
        return Ok(Some(crate::store::timestamp(
            at.with_timezone(&chrono::Utc),
        )));
    }
    let ago = humantime::parse_duration(t)
        .ok()
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .ok_or_else(|| {
            HttpError::BadRequest(format!(
                "{field}={t:?} is neither an RFC 3339 time nor a duration like 2h"
            ))
        })?;
    Ok(Some(crate::store::timestamp(chrono::Utc::now() - ago)))
}

impl ListQuery {
    /// Checks the values once, so the store only sees valid ones.
    pub fn filter(&self) -> Result<RemediationFilter, HttpError> {
        if let Some(s) = &self.state {
            if crate::remediation::RemediationState::parse(s).is_none() {
                return Err(HttpError::BadRequest(format!("unknown state {s:?}")));
            }
        }
        if let Some(o) = &self.outcome {
            if !OUTCOMES.contains(&o.as_str()) {
                return Err(HttpError::BadRequest(format!(
                    "unknown outcome {o:?}; one of {OUTCOMES:?}"
                )));
            }
        }
        Ok(RemediationFilter {
            namespace: self.namespace.clone(),
            kind: self.kind.clone(),
            target: self.target.clone(),
            alertname: self.alertname.clone(),
            rule: self.rule.clone(),
            state: self.state.clone(),
            outcome: self.outcome.clone(),
            since: when("since", &self.since)?,
            until: when("until", &self.until)?,
        })
    }
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
    let audit = Router::new()
        .route("/api/v1/remediations", get(list))
        .route("/api/v1/remediations/{id}", get(show))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/pause", get(pauses))
        .route("/api/v1/openapi.json", get(openapi))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_read,
        ));
    let pages = ui::with_security_headers(
        Router::new()
            .route("/ui", get(ui::list))
            .route("/ui/remediations/{id}", get(ui::detail))
            .route("/ui/knowledge", get(ui_knowledge::knowledge))
            .route("/ui/remediations/{id}/{decision}", post(ui::decide))
            .route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                require_read_page,
            ))
            .route("/ui/login", get(ui::login_form).post(ui::login))
            .route("/ui/logout", post(ui::logout)),
    );
    Router::new()
        .merge(audit)
        .merge(pages)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/-/reload", post(reload))
        .route("/api/v1/remediations/{id}/handled", post(handled))
        .route("/api/v1/pause", post(pause).delete(resume))
        .route("/api/v1/remediations/{id}/approve", post(approve))
        .route("/api/v1/remediations/{id}/reject", post(reject))
        .with_state(state)
}

/// Reads one page; shared by the API and `salve history`.
pub async fn page(store: &Store, q: &ListQuery) -> Result<Page, HttpError> {
    let filter = q.filter()?;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let cursor = cursor(q.cursor.as_deref())?;
    let items = store
        .list_remediations(limit, cursor.as_ref(), &filter)
        .await?;
    let next = next_cursor(&items, limit, |r| (&r.created_at, &r.id));
    Ok(Page { items, next })
}

async fn list(
    State(state): State<ApiState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Page>, HttpError> {
    Ok(Json(page(&state.store, &q).await?))
}

/// The alert-only filter of `GET /api/v1/alerts` and `salve alerts`, beside the
/// listing's ([`ListQuery`]).
#[derive(Debug, Default, Clone, Deserialize, clap::Args)]
pub struct AlertStatusQuery {
    /// Only alerts now in this status: firing or resolved.
    #[arg(long)]
    #[serde(default, deserialize_with = "blank_is_absent")]
    pub status: Option<String>,
}

/// One page of received alerts.
#[derive(Debug, Serialize)]
pub struct AlertsPage {
    pub items: Vec<crate::store::incidents::IncidentView>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    pub next: Option<String>,
}

/// A page of received alerts under the listing's filters (for the API and `salve alerts`).
pub async fn alerts_page(
    store: &Store,
    q: &ListQuery,
    status: &AlertStatusQuery,
) -> Result<AlertsPage, HttpError> {
    if let Some(s) = status
        .status
        .as_deref()
        .filter(|s| !matches!(*s, "firing" | "resolved"))
    {
        return Err(HttpError::BadRequest(format!(
            "status {s:?} is neither firing nor resolved"
        )));
    }
    let filter = q.filter()?;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let cursor = cursor(q.cursor.as_deref())?;
    let items = store
        .list_incidents(limit, cursor.as_ref(), &filter, status.status.as_deref())
        .await?;
    let next = next_cursor(&items, limit, |i| (&i.first_seen_at, &i.id));
    Ok(AlertsPage { items, next })
}

async fn alerts(
    State(state): State<ApiState>,
    Query(q): Query<ListQuery>,
    Query(status): Query<AlertStatusQuery>,
) -> Result<Json<AlertsPage>, HttpError> {
    Ok(Json(alerts_page(&state.store, &q, &status).await?))
}

async fn show(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Detail>, HttpError> {
    Ok(Json(detail(&state.store, &id).await?))
}

/// One remediation with its timeline, or 404; shared by the API and the audit page.
pub async fn detail(store: &Store, id: &str) -> Result<Detail, HttpError> {
    let remediation = store
        .remediation(id)
        .await?
        .ok_or_else(|| HttpError::NotFound(format!("no remediation {id}")))?;
    let timeline = store.timeline(id).await?;
    Ok(Detail {
        remediation,
        timeline,
    })
}

/// Reads a client's cursor; a cursor that is not ours is a 400.
fn cursor(text: Option<&str>) -> Result<Option<Cursor>, HttpError> {
    text.map(|c| {
        Cursor::decode(c).ok_or_else(|| HttpError::BadRequest(format!("invalid cursor {c:?}")))
    })
    .transpose()
}

async fn ready(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, HttpError> {
    if let Err(e) = state.store.ping().await {
        state.metrics.database_error("ping");
        return Err(HttpError::Unavailable(e.to_string()));
    }
    state
        .cluster_probe
        .check()
        .await
        .map_err(HttpError::Unavailable)?;
    let decisions = state.reloader.current();
    let paused = state.store.active_pauses(chrono::Utc::now()).await?;
    Ok(Json(serde_json::json!({
        "status": "ready",
        "mode": state.mode,
        "paused": paused,
        "policy_hash": decisions.policy.hash,
        "version": decisions.version,
        "rules": decisions.rules.rules.len(),
    })))
}

/// Prometheus's scrape: what this replica counted, plus what the knowledge base says now
/// (remediations in flight, replicas). A database that does not answer leaves those
/// gauges as they were and counts an error; the scrape itself still succeeds.
async fn metrics(State(state): State<ApiState>, headers: HeaderMap) -> impl IntoResponse {
    let now = chrono::Utc::now();
    let snapshot = async {
        let in_flight = state.store.remediations_in_flight().await?;
        let replicas = state.store.replica_counts(now).await?;
        let pauses = state.store.active_pauses(now).await?;
        Ok::<_, crate::store::StoreError>((in_flight, replicas, pauses))
    };
    match state.store.within_wait(snapshot).await {
        Ok((in_flight, replicas, pauses)) => {
            let scopes: Vec<Option<String>> = pauses.into_iter().map(|p| p.namespace).collect();
            state.metrics.observe_store(&in_flight, replicas, &scopes)
        }
        Err(e) => {
            state.metrics.database_error("scrape");
            tracing::warn!(error = %e, "metrics: the knowledge base did not answer");
        }
    }
    state.metrics.observe_writer(&state.store.writer_load());
    let format = Exposition::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    (
        [(header::CONTENT_TYPE, format.content_type())],
        state.metrics.encode(format),
    )
}

/// Who may call: admin endpoints take the admin token; reads take the read token or
/// the admin token. With no token configured for a level, only loopback callers pass.
fn authorize(
    tokens: &[Option<&Secret>],
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<(), HttpError> {
    let configured: Vec<&Secret> = tokens.iter().flatten().copied().collect();
    if configured.is_empty() {
        return if peer.ip().is_loopback() {
            Ok(())
        } else {
            Err(HttpError::Forbidden(
                "this endpoint answers loopback clients only unless a token is configured".into(),
            ))
        };
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if configured.iter().any(|t| t.matches(given)) {
        Ok(())
    } else {
        Err(HttpError::Unauthorized)
    }
}

impl ApiState {
    /// The tokens that open reads: the read token and the admin token. Configuring only
    /// an admin token must not open reads to everyone: it also gates them.
    fn read_tokens(&self) -> [Option<&Secret>; 2] {
        [self.read_token.as_deref(), self.admin_token.as_deref()]
    }

    /// Whether the request may read: a token in `Authorization`, or a session cookie from
    /// the login form ([`session`]), or (with no token configured) a loopback peer.
    fn authorize_read(&self, peer: SocketAddr, headers: &HeaderMap) -> Result<(), HttpError> {
        let tokens = self.read_tokens();
        let configured: Vec<&Secret> = tokens.iter().flatten().copied().collect();
        if let Some(cookie) = session::from_headers(headers) {
            if !configured.is_empty() && session::valid(cookie, &configured, chrono::Utc::now()) {
                return Ok(());
            }
        }
        authorize(&tokens, peer, headers)
    }
}

async fn require_read(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<axum::response::Response, HttpError> {
    state.authorize_read(peer, &headers)?;
    Ok(next.run(request).await)
}

/// As [`require_read`], for pages: a browser without a session is sent to the login
/// form rather than shown a 401 it cannot answer.
async fn require_read_page(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<axum::response::Response, ui::PageError> {
    match state.authorize_read(peer, &headers) {
        Ok(()) => Ok(next.run(request).await),
        Err(HttpError::Unauthorized) => {
            Ok(axum::response::Redirect::to(&state.external_url.path("/ui/login")).into_response())
        }
        Err(e) => Err(ui::PageError::at(e, &state.external_url)),
    }
}

/// Who marked an escalation handled.
#[derive(Debug, Deserialize, Default)]
pub struct Handled {
    /// A name for the audit trail (a person, a ticket).
    pub by: Option<String>,
}

/// Marks a remediation's escalation handled (admin token): the escalation's alert is
/// resolved in Alertmanager by the outbox, and the timeline says who did it.
async fn handled(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Option<Json<Handled>>,
) -> Result<Json<serde_json::Value>, HttpError> {
    authorize(&[state.admin_token.as_deref()], peer, &headers)?;
    let by = body
        .and_then(|Json(h)| h.by)
        .filter(|b| !b.trim().is_empty())
        .unwrap_or_else(|| "an operator".to_owned());
    let now = chrono::Utc::now();
    if !state.store.mark_escalation_handled(&id, &by, now).await? {
        return Err(HttpError::NotFound(format!(
            "remediation {id} has no open escalation"
        )));
    }
    let detail = serde_json::json!({"handled": true, "by": by});
    state
        .store
        .append_event(&id, crate::store::EventKind::Escalation, &detail, now)
        .await?;
    Ok(Json(
        serde_json::json!({"remediation_id": id, "handled": true, "by": by}),
    ))
}

/// The body of `POST /api/v1/pause`: every field may be left out (a pause of every
/// namespace, until resumed, with no reason, by "an operator").
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PauseBody {
    pub namespace: Option<String>,
    pub reason: Option<String>,
    /// How long it holds, as `salve pause --for` takes it (`30m`, `2h`).
    #[serde(rename = "for")]
    pub lasting: Option<String>,
    /// A person or a ticket, for the audit trail.
    pub by: Option<String>,
}

/// Pauses salve (admin token): from now on no replica writes where the pause holds;
/// incidents are still recorded and decided, and each would-be change is recorded as
/// `paused`.
async fn pause(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Option<Json<PauseBody>>,
) -> Result<(axum::http::StatusCode, Json<serde_json::Value>), HttpError> {
    authorize(&[state.admin_token.as_deref()], peer, &headers)?;
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let lasting = body
        .lasting
        .as_deref()
        .map(|d| {
            humantime::parse_duration(d).map_err(|e| {
                HttpError::BadRequest(format!("for={d:?} is not a duration like 2h: {e}"))
            })
        })
        .transpose()?;
    let order = crate::controls::PauseOrder {
        namespace: body.namespace,
        reason: body.reason,
        lasting,
        by: body.by,
    };
    let now = chrono::Utc::now();
    let new = crate::controls::pause(&order, &format!("API from {}", peer.ip()), now)
        .map_err(HttpError::BadRequest)?;
    let paused = state.store.pause(&new, now).await?;
    tracing::warn!(pause = %paused.describe(), "salve paused");
    let in_force = state.store.active_pauses(now).await?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(serde_json::json!({"pause": paused, "in_force": in_force})),
    ))
}

/// What `DELETE /api/v1/pause` ends: `?namespace=NS`, `?all=true`, or (neither) the
/// pauses of every namespace.
#[derive(Debug, Deserialize, Default)]
pub struct ResumeQuery {
    #[serde(default, deserialize_with = "blank_is_absent")]
    pub namespace: Option<String>,
    #[serde(default)]
    pub all: bool,
    #[serde(default, deserialize_with = "blank_is_absent")]
    pub by: Option<String>,
}

/// Resumes salve (admin token): ends the pauses in force in the asked scope and says
/// which (none: the list is empty, and nothing changed).
async fn resume(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<ResumeQuery>,
) -> Result<Json<serde_json::Value>, HttpError> {
    authorize(&[state.admin_token.as_deref()], peer, &headers)?;
    let scope = crate::controls::resume_scope(q.namespace.as_deref(), q.all)
        .map_err(HttpError::BadRequest)?;
    let by = crate::controls::who(q.by.as_deref(), &format!("API from {}", peer.ip()));
    let now = chrono::Utc::now();
    let resumed = state.store.resume(&scope, &by, now).await?;
    for p in &resumed {
        tracing::warn!(pause = %p.describe(), resumed_by = %by, "salve resumed");
    }
    let in_force = state.store.active_pauses(now).await?;
    Ok(Json(
        serde_json::json!({"resumed": resumed, "resumed_by": by, "in_force": in_force}),
    ))
}

/// The pauses in force (read token).
async fn pauses(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, HttpError> {
    let in_force = state.store.active_pauses(chrono::Utc::now()).await?;
    Ok(Json(serde_json::json!({"in_force": in_force})))
}

/// Who decides on an approval, and why (`reason` is required to reject).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    pub by: Option<String>,
    pub reason: Option<String>,
}

/// Approves the change a remediation waits with (admin token).
async fn approve(
    state: State<ApiState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    id: Path<String>,
    body: Option<Json<DecisionBody>>,
) -> Result<Json<serde_json::Value>, HttpError> {
    decide(state, peer, headers, id, body, true).await
}

/// Rejects the change a remediation waits with (admin token; a reason is required).
async fn reject(
    state: State<ApiState>,
    peer: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    id: Path<String>,
    body: Option<Json<DecisionBody>>,
) -> Result<Json<serde_json::Value>, HttpError> {
    decide(state, peer, headers, id, body, false).await
}

async fn decide(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Option<Json<DecisionBody>>,
    approve: bool,
) -> Result<Json<serde_json::Value>, HttpError> {
    authorize(&[state.admin_token.as_deref()], peer, &headers)?;
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let reason = body.reason.unwrap_or_default().trim().to_owned();
    if !approve && reason.is_empty() {
        return Err(HttpError::BadRequest(
            "a rejection needs a reason (\"reason\": \"…\"), for the record".into(),
        ));
    }
    let by = crate::controls::who(body.by.as_deref(), &format!("API from {}", peer.ip()));
    match crate::controls::decide(&state.store, &id, approve, &by, &reason).await? {
        Ok(said) => {
            let r = state.store.remediation(&id).await?;
            Ok(Json(serde_json::json!({
                "remediation_id": id,
                "decision": if approve { "approved" } else { "rejected" },
                "by": by,
                "state": r.map(|r| r.state),
                "message": said,
            })))
        }
        Err(crate::controls::NotDecided::Unknown(m)) => Err(HttpError::NotFound(m)),
        Err(crate::controls::NotDecided::NotWaiting(m)) => Err(HttpError::Conflict(m)),
    }
}

async fn reload(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<ReloadReport>, HttpError> {
    authorize(&[state.admin_token.as_deref()], peer, &headers)?;
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
