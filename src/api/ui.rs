//! The audit page: what salve did, readable by a person at 3 a.m.
//!
//! Server-rendered HTML with inline styles and no script or external asset, so it works
//! from a locked-down browser and in an air-gapped cluster. `/ui` lists remediations
//! newest first with the same filters as the API (a plain GET form); each row opens
//! `/ui/remediations/{id}`, the full timeline with the policy input and verdict.

use std::fmt::Write as _;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Form, Router};
use tower_http::set_header::SetResponseHeaderLayer;

use super::{ApiState, ListQuery, page, session};
use crate::http::{ExternalUrl, HttpError};
use crate::report::describe_event;

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;margin:1.5rem;background:#111;color:#eee}\
a{color:#8cf}table{border-collapse:collapse;width:100%}td,th{padding:.35rem .6rem;border-bottom:1px solid #333;vertical-align:top;text-align:left}\
th{color:#aaa;font-weight:600}.state{padding:.1rem .5rem;border-radius:.3rem;font-weight:700}\
.healed{background:#1b5e20}.escalated,.failed,.interrupted{background:#b71c1c}.denied{background:#e65100}\
.skipped,.dry_run{background:#444}.paused{background:#6a1b9a}.shadowed{background:#37474f}.verifying,.executing,.pending{background:#0d47a1}\
form input,form select{background:#222;color:#eee;border:1px solid #555;padding:.3rem;margin-right:.5rem}\
pre{background:#1c1c1c;padding:.6rem;overflow:auto;font-size:13px}.reason{color:#fc8}\
.counts{display:flex;gap:1rem;flex-wrap:wrap;margin:1rem 0}.count{background:#1c1c1c;padding:.5rem .9rem;border-radius:.4rem}\
.count b{display:block;font-size:1.6rem}.firing{color:#f88}.resolved{color:#8f8}nav{margin-bottom:1rem}\
dl.input{display:grid;grid-template-columns:max-content 1fr;gap:.1rem 1rem}dl.input dt{color:#aaa}dl.input dd{margin:0}";

/// A page: the title as heading, the body under it.
pub(super) fn layout(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>{}</title><style>{STYLE}</style></head><body><h1>{}</h1>{body}</body></html>",
        escape(title),
        escape(title)
    ))
}

/// The links between the audit pages.
pub(super) fn nav(state: &ApiState) -> String {
    format!(
        "<nav><a href=\"{}\">Remediations</a> · <a href=\"{}\">What worked</a></nav>",
        escape(&state.external_url.path("/ui")),
        escape(&state.external_url.path("/ui/knowledge")),
    )
}

fn input(name: &str, value: &Option<String>, placeholder: &str) -> String {
    format!(
        "<label>{name} <input name={name} value=\"{}\" placeholder=\"{}\"></label>",
        escape(value.as_deref().unwrap_or_default()),
        escape(placeholder)
    )
}

/// An error shown to a person as a page, not as JSON: the API's status and headers
/// (`Retry-After`, `WWW-Authenticate`) with the reason in words, the filter form when
/// the filter was the problem, and the way back to the list.
pub struct PageError {
    error: HttpError,
    form: String,
    /// The list's path, for the way back.
    home: String,
}

impl PageError {
    /// The error as a page of the salve reached at `external`.
    pub fn at(error: HttpError, external: &ExternalUrl) -> PageError {
        PageError {
            error,
            form: String::new(),
            home: external.path("/ui"),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let message = self.error.to_string();
        let (mut parts, _) = self.error.into_response().into_parts();
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        let body = format!(
            "{}<p class=reason id=error>{}</p><p><a href=\"{}\">← all remediations</a></p>",
            self.form,
            escape(&message),
            escape(&self.home),
        );
        Response::from_parts(parts, layout("salve: cannot show this", &body).0.into())
    }
}

/// The list's filters (query name, value, hint): one list, so the form shows every filter
/// and the "Older" link keeps every one.
fn filters(q: &ListQuery) -> [(&'static str, &Option<String>, &'static str); 9] {
    [
        ("namespace", &q.namespace, "shop"),
        ("kind", &q.kind, "Deployment"),
        ("target", &q.target, "checkout"),
        ("alertname", &q.alertname, "HighRequestLatency"),
        ("rule", &q.rule, "rule name"),
        ("state", &q.state, "healed, escalated, …"),
        ("outcome", &q.outcome, "healed, not_healed, …"),
        ("since", &q.since, "24h or RFC 3339"),
        ("until", &q.until, "RFC 3339"),
    ]
}

fn filter_form(q: &ListQuery, home: &str) -> String {
    let mut body = format!("<form method=get action=\"{}\">", escape(home));
    for (name, value, hint) in filters(q) {
        body += &input(name, value, hint);
    }
    body += "<button type=submit>Filter</button></form>";
    body
}

/// `GET /ui`: the filtered list.
pub async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Html<String>, PageError> {
    let home = state.external_url.path("/ui");
    let mut body = nav(&state) + &filter_form(&q, &home) + &logout_form(&state, &headers);
    let failed = |error: HttpError| PageError {
        error,
        form: body.clone(),
        home: home.clone(),
    };
    let found = page(&state.store, &q).await.map_err(failed)?;
    let overview = overview(&state, &q).await.map_err(failed)?;
    let ids: Vec<&str> = found.items.iter().map(|r| r.incident_id.as_str()).collect();
    let alerts = state
        .store
        .alert_briefs(&ids)
        .await
        .map_err(|e| failed(e.into()))?;
    body += &overview;
    let _ = write!(
        body,
        "<p>{} remediations shown, newest first.</p><table><tr><th>Time (UTC)</th><th>Alert</th><th>Alert now</th><th>State</th><th>Rule</th><th>Workload</th><th>What salve did</th></tr>",
        found.items.len()
    );
    for r in &found.items {
        let reasons: String = r
            .reasons
            .iter()
            .filter(|x| !r.summary.contains(x.as_str()))
            .map(|x| format!("<div class=reason>{}</div>", escape(x)))
            .collect();
        let alert = alerts.get(&r.incident_id).cloned().unwrap_or_default();
        let summary = if alert.summary.is_empty() {
            String::new()
        } else {
            format!("<div class=summary>{}</div>", escape(&alert.summary))
        };
        let _ = write!(
            body,
            "<tr class=remediation><td>{}</td><td class=alertname>{}{summary}</td><td class=\"alert-status {}\">{}</td><td><span class=\"state {}\">{}</span></td><td>{}</td><td>{}/{}/{}</td><td><a href=\"{home}/remediations/{}\">{}</a>{reasons}</td></tr>",
            escape(r.created_at.get(..19).unwrap_or(&r.created_at)).replace('T', " "),
            escape(&r.alertname),
            escape(&alert.status),
            escape(&alert.status),
            r.state.as_str(),
            r.state.as_str(),
            escape(&r.rule),
            escape(&r.target.kind),
            escape(&r.target.namespace),
            escape(&r.target.name),
            escape(&r.id),
            escape(&r.summary),
        );
    }
    body += "</table>";
    if let Some(next) = &found.next {
        let mut older = q.clone();
        older.cursor = Some(next.clone());
        let query = query_string(&older);
        let _ = write!(
            body,
            "<p><a rel=next href=\"{}?{}\">Older →</a></p>",
            escape(&home),
            escape(&query)
        );
    }
    Ok(layout("salve: what was done", &body))
}

/// How the filtered remediations ended (all of them, not only the page) and the median
/// time to heal: what an on-call engineer reads first in the morning.
async fn overview(state: &ApiState, q: &ListQuery) -> Result<String, HttpError> {
    let filter = q.filter()?;
    let counts = state.store.state_counts(&filter).await?;
    let mut heals = state.store.heal_seconds(&filter).await?;
    let count = |states: &[&str]| -> i64 {
        counts
            .iter()
            .filter(|(s, _)| states.contains(&s.as_str()))
            .map(|(_, n)| n)
            .sum()
    };
    let total: i64 = counts.iter().map(|(_, n)| n).sum();
    let mut out = format!(
        "<div class=counts id=counts><div class=count id=count-all><b>{total}</b>remediations</div>"
    );
    for (id, label, states) in [
        ("healed", "healed", &["healed"][..]),
        ("escalated", "escalated", &["escalated"][..]),
        ("failed", "failed", &["failed", "interrupted"][..]),
        ("denied", "denied", &["denied"][..]),
        ("skipped", "skipped", &["skipped"][..]),
        (
            "awaiting_approval",
            "awaiting approval",
            &["awaiting_approval"][..],
        ),
    ] {
        let _ = write!(
            out,
            "<div class=count id=count-{id}><b>{}</b>{label}</div>",
            count(states)
        );
    }
    let median =
        crate::knowledge::median(&mut heals).map_or("-".to_owned(), super::ui_knowledge::seconds);
    let _ = write!(
        out,
        "<div class=count id=median-heal><b>{median}</b>median time to heal ({} heals)</div></div>",
        heals.len()
    );
    Ok(out)
}

fn query_string(q: &ListQuery) -> String {
    let pairs = filters(q)
        .map(|(name, value, _)| (name, value))
        .into_iter()
        .chain([("cursor", &q.cursor)]);
    let mut url = reqwest::Url::parse("http://x/").expect("constant URL parses");
    {
        let mut query = url.query_pairs_mut();
        for (k, v) in pairs {
            if let Some(v) = v {
                query.append_pair(k, v);
            }
        }
    }
    url.query().unwrap_or_default().to_owned()
}

/// `GET /ui/remediations/{id}`: one remediation's timeline.
pub async fn detail(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Html<String>, PageError> {
    let super::Detail {
        remediation: r,
        timeline,
    } = super::detail(&state.store, &id)
        .await
        .map_err(|e| PageError::at(e, &state.external_url))?;
    let mut body = nav(&state);
    let _ = write!(
        body,
        "<p><a href=\"{}\">← all remediations</a></p><table class=facts>\
         <tr><th>State</th><td><span class=\"state {}\">{}</span> ({} mode)</td></tr>\
         <tr><th>Summary</th><td id=summary>{}</td></tr><tr><th>Alert</th><td>{}</td></tr>\
         <tr><th>Rule</th><td>{} ({})</td></tr><tr><th>Workload</th><td>{}/{}/{}</td></tr>\
         <tr><th>Opened</th><td>{}</td></tr></table>",
        escape(&state.external_url.path("/ui")),
        r.state.as_str(),
        r.state.as_str(),
        escape(&r.mode),
        escape(&r.summary),
        escape(&r.alertname),
        escape(&r.rule),
        escape(&r.rule_file),
        escape(&r.target.kind),
        escape(&r.target.namespace),
        escape(&r.target.name),
        escape(&r.created_at),
    );
    for reason in &r.reasons {
        let _ = write!(body, "<p class=reason>{}</p>", escape(reason));
    }
    if r.state == crate::remediation::RemediationState::AwaitingApproval {
        if let Some(asked) = state
            .store
            .open_approval(&id)
            .await
            .map_err(|e| PageError::at(e.into(), &state.external_url))?
        {
            let action = |verb: &str| {
                escape(
                    &state
                        .external_url
                        .path(&format!("/ui/remediations/{id}/{verb}")),
                )
            };
            let _ = write!(
                body,
                "<h2>Awaiting approval</h2><p id=request>salve would <b>{}</b> ({}). The request expires at {}.</p>                 <form method=post action=\"{}\" id=approve><input name=by placeholder=\"your name\" required>                 <button type=submit>Approve</button></form>                 <form method=post action=\"{}\" id=reject><input name=by placeholder=\"your name\" required>                 <input name=reason placeholder=\"why not\" required><button type=submit>Reject</button></form>                 <p>Deciding takes the admin token: log in with it. An approved change is judged again on fresh state before it is written.</p>",
                escape(&asked.plan),
                escape(asked.request["why"].as_str().unwrap_or_default()),
                escape(&asked.expires_at),
                action("approve"),
                action("reject"),
            );
        }
    }
    body += &neighbours(&state, &id).await?;
    body += &policy_sections(&timeline);
    body += &kube_calls(&timeline);
    body += &verifications(&timeline);
    body += "<h2>Timeline</h2><table id=timeline><tr><th>Time (UTC)</th><th>Step</th><th>What happened</th></tr>";
    for e in &timeline {
        let raw = serde_json::to_string_pretty(&e.detail).unwrap_or_default();
        let _ = write!(
            body,
            "<tr class=event><td>{}</td><td>{}</td><td>{}<details><summary>record</summary><pre>{}</pre></details></td></tr>",
            escape(e.at.get(..23).unwrap_or(&e.at)).replace('T', " "),
            escape(&e.kind),
            escape(&describe_event(&e.kind, &e.detail)),
            escape(&raw),
        );
    }
    body += "</table>";
    Ok(layout(&format!("Remediation {}", r.id), &body))
}

/// Links to the previous and next remediation of the same workload.
async fn neighbours(state: &ApiState, id: &str) -> Result<String, PageError> {
    let (previous, next) = state
        .store
        .workload_neighbours(id)
        .await
        .map_err(|e| PageError::at(e.into(), &state.external_url))?;
    let link = |other: Option<String>, rel: &str, text: &str| match other {
        Some(o) => format!(
            "<a rel={rel} id={rel} href=\"{}\">{text}</a>",
            escape(&state.external_url.path(&format!("/ui/remediations/{o}")))
        ),
        None => format!(
            "<span class=none>no {} remediation of this workload</span>",
            text.trim_matches(|c| c == '←' || c == '→' || c == ' ')
        ),
    };
    Ok(format!(
        "<p class=neighbours>{} · {}</p>",
        link(previous, "prev", "← previous"),
        link(next, "next", "next →")
    ))
}

/// Each policy decision readable: the verdict with its reasons, then every field of
/// the exact input as `path: value` (the raw JSON stays in the timeline's record).
fn policy_sections(timeline: &[crate::store::TimelineEvent]) -> String {
    let mut out = String::new();
    for e in timeline.iter().filter(|e| e.kind == "policy_evaluated") {
        let v = &e.detail["verdict"];
        let allowed = v["allowed"] == true;
        let reasons: String = v["reasons"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(v["approval"].as_array().into_iter().flatten())
            .filter_map(|r| r.as_str())
            .map(|r| format!("<li>{}</li>", escape(r)))
            .collect();
        let mut fields = Vec::new();
        flatten("", &e.detail["input"], &mut fields);
        let rows: String = fields
            .iter()
            .map(|(k, v)| format!("<dt>{}</dt><dd>{}</dd>", escape(k), escape(v)))
            .collect();
        let _ = write!(
            out,
            "<section class=policy><h2>Policy: {}</h2><p class=verdict>{} by policy {}</p><ul class=reasons>{reasons}</ul>\
             <details><summary>The exact input ({} fields)</summary><dl class=input>{rows}</dl></details></section>",
            escape(
                e.detail["input"]["action"]["description"]
                    .as_str()
                    .unwrap_or("the change")
            ),
            if allowed { "Allowed" } else { "Denied" },
            escape(
                v["policy_hash"]
                    .as_str()
                    .map_or("", |h| h.get(..12).unwrap_or(h))
            ),
            fields.len(),
        );
    }
    out
}

/// A JSON document as `path: value` lines; lists of plain values on one line.
fn flatten(path: &str, value: &serde_json::Value, out: &mut Vec<(String, String)>) {
    use serde_json::Value;
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                flatten(&join(k), v, out);
            }
        }
        Value::Array(items) if items.iter().any(|i| i.is_object() || i.is_array()) => {
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{path}[{i}]"), v, out);
            }
        }
        Value::Array(items) => out.push((
            path.to_owned(),
            items
                .iter()
                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(", "),
        )),
        Value::String(s) => out.push((path.to_owned(), s.clone())),
        Value::Null => out.push((path.to_owned(), "(none)".to_owned())),
        other => out.push((path.to_owned(), other.to_string())),
    }
}

/// The Kubernetes calls, one line each.
fn kube_calls(timeline: &[crate::store::TimelineEvent]) -> String {
    let calls: String = timeline
        .iter()
        .filter(|e| e.kind == "kube_call")
        .map(|e| {
            format!(
                "<li class=call>{}</li>",
                escape(&describe_event(&e.kind, &e.detail))
            )
        })
        .collect();
    if calls.is_empty() {
        return "<h2>Kubernetes calls</h2><p>None.</p>".to_owned();
    }
    format!("<h2>Kubernetes calls</h2><ol id=calls>{calls}</ol>")
}

/// Each verification's polls as a small time line.
fn verifications(timeline: &[crate::store::TimelineEvent]) -> String {
    let mut out = String::new();
    for e in timeline.iter().filter(|e| e.kind == "verification") {
        let Some(polls) = e.detail["polls"].as_array() else {
            continue;
        };
        let marks: Vec<super::charts::PollMark<'_>> = polls
            .iter()
            .map(|p| super::charts::PollMark {
                after_seconds: p["after_seconds"].as_f64().unwrap_or(0.0),
                rollout: (
                    p["rollout"]["status"].as_str().unwrap_or("unknown"),
                    p["rollout"]["detail"].as_str().unwrap_or_default(),
                ),
                alert: (
                    p["alert"]["status"].as_str().unwrap_or("unknown"),
                    p["alert"]["detail"].as_str().unwrap_or_default(),
                ),
            })
            .collect();
        let _ = write!(
            out,
            "<section class=verification><h2>Verification: {}</h2>{}</section>",
            escape(&describe_event(&e.kind, &e.detail)),
            super::charts::poll_timeline(
                &marks,
                e.detail["window_seconds"].as_f64().unwrap_or(0.0)
            ),
        );
    }
    out
}

/// The approve and reject forms' fields.
#[derive(Debug, serde::Deserialize)]
pub struct DecisionForm {
    pub by: String,
    #[serde(default)]
    pub reason: String,
}

/// `POST /ui/remediations/{id}/approve|reject`: a decision from the audit page. It
/// takes the admin token's session (a read token's session only reads) or, with no
/// admin token configured, a loopback browser; the cookie's `SameSite=Strict` keeps
/// other sites from posting it.
pub async fn decide(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((id, verb)): Path<(String, String)>,
    Form(form): Form<DecisionForm>,
) -> Result<Response, PageError> {
    let at = |e: HttpError| PageError::at(e, &state.external_url);
    let approve = match verb.as_str() {
        "approve" => true,
        "reject" => false,
        other => return Err(at(HttpError::NotFound(format!("no page {other}")))),
    };
    let admin = state.admin_token.as_deref();
    let by_session = match (admin, session::from_headers(&headers)) {
        (Some(token), Some(cookie)) => session::valid(cookie, &[token], chrono::Utc::now()),
        _ => false,
    };
    if !by_session {
        super::authorize(&[admin], peer, &headers).map_err(|e| match e {
            HttpError::Unauthorized => at(HttpError::Forbidden(
                "deciding takes the admin token: log out and log in with it".into(),
            )),
            other => at(other),
        })?;
    }
    let reason = form.reason.trim().to_owned();
    if !approve && reason.is_empty() {
        return Err(at(HttpError::BadRequest(
            "a rejection needs a reason".into(),
        )));
    }
    let by = crate::controls::who(Some(&form.by), "audit page");
    match crate::controls::decide(&state.store, &id, approve, &by, &reason)
        .await
        .map_err(|e| at(e.into()))?
    {
        Ok(_) => Ok(
            Redirect::to(&state.external_url.path(&format!("/ui/remediations/{id}")))
                .into_response(),
        ),
        Err(crate::controls::NotDecided::Unknown(m)) => Err(at(HttpError::NotFound(m))),
        Err(crate::controls::NotDecided::NotWaiting(m)) => Err(at(HttpError::Conflict(m))),
    }
}

/// Adds the security headers every page carries: no script, no framing, no sniffing,
/// no referrer. The pages need only their inline style and forms posting back to salve.
pub fn with_security_headers(pages: Router<ApiState>) -> Router<ApiState> {
    pages
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
}

/// The "log out" button, for a page opened with a session.
fn logout_form(state: &ApiState, headers: &HeaderMap) -> String {
    if session::from_headers(headers).is_none() {
        return String::new();
    }
    format!(
        "<form method=post action=\"{}\" class=logout><button type=submit>Log out</button></form>",
        escape(&state.external_url.path("/ui/logout"))
    )
}

fn login_page(state: &ApiState, error: Option<&str>) -> Html<String> {
    let configured = state.read_tokens().iter().any(Option::is_some);
    let mut body = String::new();
    if let Some(e) = error {
        let _ = write!(body, "<p class=reason id=error>{}</p>", escape(e));
    }
    if !configured {
        body += "<p>No read token is configured: the audit page answers loopback clients only, without a login.</p>";
    }
    let _ = write!(
        body,
        "<form method=post action=\"{}\"><label>Read token <input type=password name=token autocomplete=current-password autofocus></label><button type=submit>Log in</button></form>",
        escape(&state.external_url.path("/ui/login"))
    );
    layout("salve: log in", &body)
}

/// `GET /ui/login`: the form that takes the read token.
pub async fn login_form(State(state): State<ApiState>) -> Html<String> {
    login_page(&state, None)
}

/// What the login form posts.
#[derive(serde::Deserialize)]
pub struct Login {
    token: String,
}

/// `POST /ui/login`: a right token starts a session (see [`session`]) and opens the
/// list; a wrong one shows the form again with a 401, and is logged like a refused
/// webhook (peer, never the token).
pub async fn login(
    State(state): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<Login>,
) -> Response {
    let matched = state
        .read_tokens()
        .into_iter()
        .flatten()
        .find(|t| t.matches(&form.token));
    let Some(token) = matched else {
        tracing::warn!(%peer, "audit page login refused: wrong token");
        let mut page =
            login_page(&state, Some("That token is not the read token.")).into_response();
        *page.status_mut() = StatusCode::UNAUTHORIZED;
        return page;
    };
    let cookie = session::set_cookie(
        Some(&session::issue(token, chrono::Utc::now())),
        &state.external_url,
    );
    let mut to_list = Redirect::to(&state.external_url.path("/ui")).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        to_list.headers_mut().insert(header::SET_COOKIE, v);
    }
    to_list
}

/// `POST /ui/logout`: ends the browser's session.
pub async fn logout(State(state): State<ApiState>) -> Response {
    let mut to_login = Redirect::to(&state.external_url.path("/ui/login")).into_response();
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(None, &state.external_url)) {
        to_login.headers_mut().insert(header::SET_COOKIE, v);
    }
    to_login
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escapes_markup_from_alert_labels() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }
}
