//! A stateful fake Kubernetes API server, faithful where salve (and kubectl) depend on it.
//!
//! It keeps Deployments, StatefulSets and ReplicaSets in memory and honours:
//! - GET/LIST/PATCH/PUT of `apps/v1` objects and their `scale` subresource
//!   (merge, JSON and strategic-merge patches; strategic is treated as merge, which is
//!   exact for the fields salve and these tests touch);
//! - `dryRun=All`: full validation and a full answer, nothing persisted;
//! - `metadata.resourceVersion` in a write as a precondition: 409 Conflict when stale;
//! - `metadata.generation`, bumped on every spec change, and a controller that rolls
//!   out instantly (status catches up in the same write);
//! - ReplicaSets with `deployment.kubernetes.io/revision`, created (or re-used with a
//!   new revision number) when a Deployment's pod template changes, as the deployment
//!   controller does;
//! - 403 Forbidden for namespaces the caller may not touch, 404 NotFound, 422 Invalid;
//! - the discovery documents kubectl reads (`/api`, `/apis`, `/apis/apps/v1`, `/version`).
//!
//! Every request is logged so tests can assert exactly which calls were made.
//!
//! What it is for, now that behaviour is tested on a real control plane
//! (`control_plane.rs`): faults a real API server cannot produce on demand: a conflict
//! injected between salve's read and its write, another writer racing salve's write,
//! stalled rollouts without waiting for a deadline, 403s without RBAC set-up, and the
//! request log that proves which calls (and which dry-runs) were made. It also serves
//! kubectl's discovery documents, so `tests/kubectl.rs` runs kubectl against it.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: u16,
    pub user_agent: String,
}

impl Recorded {
    /// Whether this request asked for a dry run.
    pub fn dry_run(&self) -> bool {
        self.query.contains("dryRun=All")
    }

    /// Whether this request could change a workload (and was not a dry run). salve's
    /// record-keeping (its Events, its `salve.io/last-remediation` annotation under the
    /// `salve-record` field manager) changes nothing that runs, and is not counted.
    pub fn is_write(&self) -> bool {
        !matches!(self.method.as_str(), "GET" | "HEAD")
            && !self.dry_run()
            && !self.is_record_keeping()
    }

    /// An Event, or salve's annotation patch.
    pub fn is_record_keeping(&self) -> bool {
        self.path.contains("/events") || self.query.contains("fieldManager=salve-record")
    }
}

type Key = (String, String, String);

#[derive(Default)]
struct KubeState {
    objects: BTreeMap<Key, Value>,
    next_rv: u64,
    next_uid: u64,
    forbidden: HashSet<String>,
    requests: Vec<Recorded>,
    /// Objects another writer changes right after salve's next read of them.
    interfere_after_read: HashSet<Key>,
    /// Workloads whose rollouts never finish (their new pods never become available).
    stuck: HashSet<Key>,
    /// Objects another writer scales (to this count) just before salve's next real write
    /// to their scale subresource, so that write meets a 409.
    scaled_before_next_write: BTreeMap<Key, i64>,
    /// Faults for the next requests: (method, path suffix, dry run, status), first match first.
    faults: Vec<(String, String, bool, u16)>,
    /// Namespaces' annotations (a namespace not listed exists, without any).
    namespace_annotations: BTreeMap<String, BTreeMap<String, String>>,
}

/// A running fake API server.
#[derive(Clone)]
pub struct FakeKube {
    pub addr: SocketAddr,
    state: Arc<Mutex<KubeState>>,
}

const KINDS: [(&str, &str); 3] = [
    ("deployments", "Deployment"),
    ("statefulsets", "StatefulSet"),
    ("replicasets", "ReplicaSet"),
];

fn kind_of(resource: &str) -> Option<&'static str> {
    KINDS.iter().find(|(r, _)| *r == resource).map(|(_, k)| *k)
}

/// An API error answer: a `Status` object with its HTTP code.
struct ApiFailure {
    code: StatusCode,
    reason: &'static str,
    message: String,
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let body = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code.as_u16(),
        });
        (self.code, Json(body)).into_response()
    }
}

fn status(code: StatusCode, reason: &'static str, message: String) -> ApiFailure {
    ApiFailure {
        code,
        reason,
        message,
    }
}

fn not_found(resource: &str, name: &str) -> ApiFailure {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{resource}.apps \"{name}\" not found"),
    )
}

fn conflict(resource: &str, name: &str) -> ApiFailure {
    status(
        StatusCode::CONFLICT,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {resource}.apps \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
        ),
    )
}

fn invalid(kind: &str, name: &str, why: &str) -> ApiFailure {
    status(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("{kind}.apps \"{name}\" is invalid: {why}"),
    )
}

fn template_hash(template: &Value) -> String {
    let digest = Sha256::digest(template.to_string().as_bytes());
    digest.iter().take(5).map(|b| format!("{b:02x}")).collect()
}

fn without_hash(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(l) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        l.remove("pod-template-hash");
    }
    t
}

fn dry_run(q: &BTreeMap<String, String>) -> bool {
    q.get("dryRun").is_some_and(|v| v == "All")
}

impl KubeState {
    fn rv(&mut self) -> String {
        self.next_rv += 1;
        self.next_rv.to_string()
    }

    fn uid(&mut self) -> String {
        self.next_uid += 1;
        format!("00000000-0000-4000-8000-{:012}", self.next_uid)
    }

    fn forbidden(
        &self,
        method: &str,
        resource: &str,
        sub: Option<&str>,
        ns: &str,
        name: &str,
    ) -> Option<ApiFailure> {
        self.forbidden.contains(ns).then(|| {
            let verb = match method {
                "GET" if name.is_empty() => "list",
                "GET" => "get",
                "PUT" => "update",
                _ => "patch",
            };
            let res = sub.map_or(resource.to_owned(), |s| format!("{resource}/{s}"));
            status(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "{resource}.apps \"{name}\" is forbidden: User \"system:serviceaccount:salve:salve\" cannot {verb} resource \"{res}\" in API group \"apps\" in the namespace \"{ns}\""
                ),
            )
        })
    }

    /// Validates what an update would store; `Err` is the API's answer.
    fn validate(&self, kind: &str, name: &str, ns: &str, obj: &Value) -> Result<(), ApiFailure> {
        if obj["metadata"]["name"] != json!(name) || obj["metadata"]["namespace"] != json!(ns) {
            return Err(status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "the name and namespace of the object must not change".into(),
            ));
        }
        if let Some(r) = obj["spec"].get("replicas") {
            if r.as_i64().is_none_or(|r| r < 0) {
                return Err(invalid(
                    kind,
                    name,
                    "spec.replicas: Invalid value: must be greater than or equal to 0",
                ));
            }
        }
        if matches!(kind, "Deployment" | "StatefulSet") {
            let containers = &obj["spec"]["template"]["spec"]["containers"];
            if containers.as_array().is_none_or(|c| c.is_empty()) {
                return Err(invalid(
                    kind,
                    name,
                    "spec.template.spec.containers: Required value",
                ));
            }
        }
        Ok(())
    }

    /// The write path every change takes: precondition, validation, and (unless dry-run)
    /// persistence with generation, revision and status bookkeeping.
    fn update(&mut self, key: &Key, mut new: Value, dry: bool) -> Result<Value, ApiFailure> {
        let (resource, ns, name) = key;
        let kind = kind_of(resource).unwrap_or("Object");
        let Some(old) = self.objects.get(key).cloned() else {
            return Err(not_found(resource, name));
        };
        let current_rv = old["metadata"]["resourceVersion"].clone();
        match &new["metadata"]["resourceVersion"] {
            Value::Null => {}
            rv if *rv == current_rv => {}
            _ => return Err(conflict(resource, name)),
        }
        self.validate(kind, name, ns, &new)?;
        // The server owns these fields.
        for field in ["uid", "creationTimestamp"] {
            new["metadata"][field] = old["metadata"][field].clone();
        }
        new["metadata"]["generation"] = old["metadata"]["generation"].clone();
        new["status"] = old["status"].clone();
        if new["spec"] != old["spec"] {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            new["metadata"]["generation"] = json!(generation);
        }
        new["metadata"]["resourceVersion"] = current_rv;
        if dry {
            return Ok(new);
        }
        new["metadata"]["resourceVersion"] = json!(self.rv());
        if resource == "deployments" {
            self.reconcile_replica_sets(ns, &mut new);
        }
        if self.stuck.contains(key) {
            stall(&mut new, &old);
        } else {
            roll_out(&mut new);
        }
        self.objects.insert(key.clone(), new.clone());
        Ok(new)
    }

    /// What the deployment controller does when a template changes.
    fn reconcile_replica_sets(&mut self, ns: &str, deploy: &mut Value) {
        let uid = deploy["metadata"]["uid"].clone();
        let name = deploy["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let template = without_hash(&deploy["spec"]["template"]);
        let replicas = deploy["spec"]["replicas"].as_i64().unwrap_or(1);
        let owned: Vec<Key> = self
            .objects
            .iter()
            .filter(|((r, n, _), o)| {
                r == "replicasets" && n == ns && o["metadata"]["ownerReferences"][0]["uid"] == uid
            })
            .map(|(k, _)| k.clone())
            .collect();
        let revision_of = |o: &Value| {
            o["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                .as_str()
                .and_then(|r| r.parse::<i64>().ok())
                .unwrap_or(0)
        };
        let max = owned
            .iter()
            .map(|k| revision_of(&self.objects[k]))
            .max()
            .unwrap_or(0);
        let existing = owned
            .iter()
            .find(|k| without_hash(&self.objects[*k]["spec"]["template"]) == template)
            .cloned();
        let current = match existing {
            Some(k) => {
                let rev = revision_of(&self.objects[&k]);
                let rev = if rev == max { rev } else { max + 1 };
                let next_rv = self.rv();
                let rs = self.objects.get_mut(&k).expect("listed above");
                rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] =
                    json!(rev.to_string());
                rs["metadata"]["resourceVersion"] = json!(next_rv);
                (k, rev)
            }
            None => {
                let hash = template_hash(&template);
                let rs_name = format!("{name}-{hash}");
                let mut rs_template = template.clone();
                rs_template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
                let mut selector = deploy["spec"]["selector"].clone();
                selector["matchLabels"]["pod-template-hash"] = json!(hash);
                let rs = json!({
                    "apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "metadata": {
                        "name": rs_name, "namespace": ns, "uid": self.uid(), "resourceVersion": self.rv(),
                        "generation": 1, "creationTimestamp": "2026-11-24T00:00:00Z",
                        "labels": rs_template["metadata"]["labels"].clone(),
                        "annotations": {"deployment.kubernetes.io/revision": (max + 1).to_string(),
                                        "deployment.kubernetes.io/desired-replicas": replicas.to_string()},
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                                             "uid": uid, "controller": true, "blockOwnerDeletion": true}],
                    },
                    "spec": {"replicas": replicas, "selector": selector, "template": rs_template},
                    "status": {"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas},
                });
                let key = ("replicasets".to_owned(), ns.to_owned(), rs_name);
                self.objects.insert(key.clone(), rs);
                (key, max + 1)
            }
        };
        for k in &owned {
            if *k != current.0 {
                let rs = self.objects.get_mut(k).expect("listed above");
                rs["spec"]["replicas"] = json!(0);
                rs["status"] = json!({"replicas": 0});
            }
        }
        deploy["metadata"]["annotations"]["deployment.kubernetes.io/revision"] =
            json!(current.1.to_string());
    }
}

/// The controller's instant rollout: status catches up with spec.
fn roll_out(obj: &mut Value) {
    if obj["kind"] == "ReplicaSet" {
        return;
    }
    let replicas = obj["spec"]["replicas"].as_i64().unwrap_or(1);
    obj["status"] = json!({
        "observedGeneration": obj["metadata"]["generation"].clone(),
        "replicas": replicas, "updatedReplicas": replicas,
        "readyReplicas": replicas, "availableReplicas": replicas,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability."},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable", "message": "ReplicaSet has successfully progressed."}
        ],
    });
}

/// A rollout that cannot progress: the controller saw the change, but the new pods
/// never become available, and the deployment reports ProgressDeadlineExceeded.
fn stall(obj: &mut Value, old: &Value) {
    let replicas = obj["spec"]["replicas"].as_i64().unwrap_or(1);
    let available = old["status"]["availableReplicas"]
        .as_i64()
        .unwrap_or(0)
        .min(replicas);
    obj["status"] = json!({
        "observedGeneration": obj["metadata"]["generation"].clone(),
        "replicas": replicas, "updatedReplicas": available, "readyReplicas": available, "availableReplicas": available,
        "conditions": [
            {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable", "message": "Deployment does not have minimum availability."},
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
             "message": format!("ReplicaSet \"{}\" has timed out progressing.", obj["metadata"]["name"].as_str().unwrap_or_default())}
        ],
    });
}

fn scale_of(obj: &Value) -> Value {
    let selector = obj["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {
            "name": obj["metadata"]["name"], "namespace": obj["metadata"]["namespace"],
            "uid": obj["metadata"]["uid"], "resourceVersion": obj["metadata"]["resourceVersion"],
            "creationTimestamp": obj["metadata"]["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"]},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

/// The document a PATCH or PUT asks for, starting from `current`.
fn requested(
    method: &Method,
    headers: &HeaderMap,
    current: Value,
    body: &[u8],
) -> Result<Value, ApiFailure> {
    if *method == Method::PUT {
        return serde_json::from_slice(body)
            .map_err(|e| status(StatusCode::BAD_REQUEST, "BadRequest", e.to_string()));
    }
    let mut doc = current;
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    apply_patch(ct, &mut doc, body)?;
    Ok(doc)
}

fn apply_patch(content_type: &str, doc: &mut Value, body: &[u8]) -> Result<(), ApiFailure> {
    let bad = |e: String| status(StatusCode::BAD_REQUEST, "BadRequest", e);
    let patch: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("invalid patch body: {e}")))?;
    let media = content_type.split(';').next().unwrap_or_default().trim();
    match media {
        "application/json-patch+json" => {
            let p: json_patch::Patch =
                serde_json::from_value(patch).map_err(|e| bad(e.to_string()))?;
            json_patch::patch(doc, &p).map_err(|e| {
                status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })
        }
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            json_patch::merge(doc, &patch);
            Ok(())
        }
        other => Err(status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {other:?})"
            ),
        )),
    }
}

type Shared = State<Arc<Mutex<KubeState>>>;
type Params = Query<BTreeMap<String, String>>;

/// A namespace exists for every name asked (as one would in a cluster salve is bound in),
/// with the annotations a test gave it.
async fn namespace(State(st): Shared, Path(ns): Path<String>) -> Response {
    let s = st.lock().unwrap();
    if let Some(denied) = s.forbidden("GET", "namespaces", None, &ns, &ns) {
        return denied.into_response();
    }
    let annotations = s
        .namespace_annotations
        .get(&ns)
        .cloned()
        .unwrap_or_default();
    Json(json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns, "resourceVersion": "1", "annotations": annotations},
                "status": {"phase": "Active"}}))
    .into_response()
}

async fn pod(State(st): Shared, Path((ns, name)): Path<(String, String)>) -> Response {
    let s = st.lock().unwrap();
    match s.objects.get(&("pods".to_owned(), ns, name.clone())) {
        Some(p) => Json(p.clone()).into_response(),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("pods \"{name}\" not found"),
        )
        .into_response(),
    }
}

async fn object(
    State(st): Shared,
    method: Method,
    headers: HeaderMap,
    Path((ns, resource, name)): Path<(String, String, String)>,
    Query(q): Params,
    body: Bytes,
) -> Response {
    let mut s = st.lock().unwrap();
    match object_call(&mut s, &method, &headers, (resource, ns, name), &q, &body) {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

fn object_call(
    s: &mut KubeState,
    method: &Method,
    headers: &HeaderMap,
    key: Key,
    q: &BTreeMap<String, String>,
    body: &[u8],
) -> Result<Value, ApiFailure> {
    let (resource, ns, name) = &key;
    let kind = kind_of(resource).ok_or_else(|| {
        status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource".into(),
        )
    })?;
    if let Some(denied) = s.forbidden(method.as_str(), resource, None, ns, name) {
        return Err(denied);
    }
    let current = s
        .objects
        .get(&key)
        .cloned()
        .ok_or_else(|| not_found(resource, name))?;
    match *method {
        Method::GET => {
            if s.interfere_after_read.remove(&key) {
                let mut changed = current.clone();
                changed["metadata"]["annotations"]["other-writer/touched"] = json!("true");
                changed["metadata"]["resourceVersion"] = Value::Null;
                s.update(&key, changed, false)?;
            }
            Ok(current)
        }
        Method::PATCH | Method::PUT => {
            let mut doc = requested(method, headers, current.clone(), body)?;
            doc["apiVersion"] = current["apiVersion"].clone();
            doc["kind"] = json!(kind);
            s.update(&key, doc, dry_run(q))
        }
        _ => Err(status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "method not allowed".into(),
        )),
    }
}

async fn scale(
    State(st): Shared,
    method: Method,
    headers: HeaderMap,
    Path((ns, resource, name)): Path<(String, String, String)>,
    Query(q): Params,
    body: Bytes,
) -> Response {
    let mut s = st.lock().unwrap();
    match scale_call(&mut s, &method, &headers, (resource, ns, name), &q, &body) {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

fn scale_call(
    s: &mut KubeState,
    method: &Method,
    headers: &HeaderMap,
    key: Key,
    q: &BTreeMap<String, String>,
    body: &[u8],
) -> Result<Value, ApiFailure> {
    let (resource, ns, name) = &key;
    if resource == "replicasets" || kind_of(resource).is_none() {
        return Err(status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource".into(),
        ));
    }
    if let Some(denied) = s.forbidden(method.as_str(), resource, Some("scale"), ns, name) {
        return Err(denied);
    }
    let parent = s
        .objects
        .get(&key)
        .cloned()
        .ok_or_else(|| not_found(resource, name))?;
    if !dry_run(q) && *method != Method::GET {
        if let Some(replicas) = s.scaled_before_next_write.remove(&key) {
            let mut other = parent.clone();
            other["spec"]["replicas"] = json!(replicas);
            other["metadata"]["resourceVersion"] = Value::Null;
            s.update(&key, other, false)?;
        }
    }
    let sc = match *method {
        Method::GET => return Ok(scale_of(&parent)),
        Method::PATCH | Method::PUT => requested(method, headers, scale_of(&parent), body)?,
        _ => {
            return Err(status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "method not allowed".into(),
            ));
        }
    };
    let mut updated = parent;
    updated["metadata"]["resourceVersion"] = sc["metadata"]["resourceVersion"].clone();
    updated["spec"]["replicas"] = sc["spec"]["replicas"].clone();
    s.update(&key, updated, dry_run(q)).map(|o| scale_of(&o))
}

fn list_of(
    s: &KubeState,
    resource: &str,
    ns: Option<&str>,
    q: &BTreeMap<String, String>,
) -> Response {
    let Some(kind) = kind_of(resource) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource".into(),
        )
        .into_response();
    };
    let wanted: Vec<(String, String)> = q
        .get("labelSelector")
        .map(|sel| {
            sel.split(',')
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.trim_end_matches('=').to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let items: Vec<Value> = s
        .objects
        .iter()
        .filter(|((r, n, _), _)| r == resource && ns.is_none_or(|ns| ns == n))
        .filter(|(_, o)| {
            wanted
                .iter()
                .all(|(k, v)| o["metadata"]["labels"][k] == json!(v))
        })
        .map(|(_, o)| o.clone())
        .collect();
    Json(json!({
        "apiVersion": "apps/v1", "kind": format!("{kind}List"),
        "metadata": {"resourceVersion": s.next_rv.to_string()},
        "items": items,
    }))
    .into_response()
}

async fn list_namespaced(
    State(st): Shared,
    Path((ns, resource)): Path<(String, String)>,
    Query(q): Params,
) -> Response {
    let s = st.lock().unwrap();
    if let Some(denied) = s.forbidden("GET", &resource, None, &ns, "") {
        return denied.into_response();
    }
    list_of(&s, &resource, Some(&ns), &q)
}

async fn list_all(State(st): Shared, Path(resource): Path<String>, Query(q): Params) -> Response {
    let s = st.lock().unwrap();
    list_of(&s, &resource, None, &q)
}

fn resource_list() -> Value {
    let res = |name: &str, singular: &str, kind: &str, short: &[&str]| {
        json!({"name": name, "singularName": singular, "namespaced": true, "kind": kind,
               "verbs": ["get", "list", "patch", "update"], "shortNames": short, "categories": ["all"]})
    };
    let sub = |name: &str| {
        json!({"name": format!("{name}/scale"), "singularName": "", "namespaced": true, "group": "autoscaling",
               "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]})
    };
    json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1",
        "resources": [
            res("deployments", "deployment", "Deployment", &["deploy"]), sub("deployments"),
            res("statefulsets", "statefulset", "StatefulSet", &["sts"]), sub("statefulsets"),
            res("replicasets", "replicaset", "ReplicaSet", &["rs"]),
        ]
    })
}

async fn log_requests(
    State(st): Shared,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let method = request.method().to_string();
    let uri: Uri = request.uri().clone();
    let user_agent = request
        .headers()
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let dry_run = uri.query().unwrap_or_default().contains("dryRun=All");
    let fault = {
        let mut s = st.lock().unwrap();
        let at = s.faults.iter().position(|(m, p, d, _)| {
            *m == method && uri.path().ends_with(p.as_str()) && *d == dry_run
        });
        at.map(|i| s.faults.remove(i).3)
    };
    let response = match fault {
        Some(code) => {
            let code = StatusCode::from_u16(code).unwrap();
            status(code, "InjectedFault", format!("injected fault: {code}")).into_response()
        }
        None => next.run(request).await,
    };
    st.lock().unwrap().requests.push(Recorded {
        method,
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        status: response.status().as_u16(),
        user_agent,
    });
    response
}

impl FakeKube {
    /// Starts the fake on a free loopback port.
    pub async fn start() -> FakeKube {
        let state = Arc::new(Mutex::new(KubeState::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/version", get(|| async { Json(json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "platform": "linux/amd64"})) }))
            .route(
                "/api",
                get(move || async move {
                    Json(json!({"kind": "APIVersions", "versions": ["v1"],
                        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": addr.to_string()}]}))
                }),
            )
            .route(
                "/api/v1",
                get(|| async {
                    Json(json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                        {"name": "namespaces", "singularName": "namespace", "namespaced": false, "kind": "Namespace",
                         "verbs": ["get", "list"], "shortNames": ["ns"]}]}))
                }),
            )
            .route(
                "/apis",
                get(|| async {
                    let v = json!({"groupVersion": "apps/v1", "version": "v1"});
                    Json(json!({"kind": "APIGroupList", "apiVersion": "v1",
                        "groups": [{"name": "apps", "versions": [v.clone()], "preferredVersion": v}]}))
                }),
            )
            .route("/api/v1/namespaces/{ns}", get(namespace))
            .route("/api/v1/namespaces/{ns}/pods/{name}", get(pod))
            .route("/apis/apps/v1", get(|| async { Json(resource_list()) }))
            // No autoscalers here: salve's question "does an HPA manage it?" gets "no".
            .route(
                "/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers",
                get(|| async {
                    Json(json!({"kind": "HorizontalPodAutoscalerList", "apiVersion": "autoscaling/v2",
                                "metadata": {"resourceVersion": "1"}, "items": []}))
                }),
            )
            .route("/apis/apps/v1/{resource}", get(list_all))
            .route("/apis/apps/v1/namespaces/{ns}/{resource}", get(list_namespaced))
            .route("/apis/apps/v1/namespaces/{ns}/{resource}/{name}", get(object).patch(object).put(object))
            .route("/apis/apps/v1/namespaces/{ns}/{resource}/{name}/scale", get(scale).patch(scale).put(scale))
            .fallback(|| async { status(StatusCode::NOT_FOUND, "NotFound", "the server could not find the requested resource".into()).into_response() })
            .layer(axum::middleware::from_fn_with_state(state.clone(), log_requests))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeKube { addr, state }
    }

    /// Sets an annotation on a namespace (`salve.io/paused`, say).
    pub fn annotate_namespace(&self, ns: &str, key: &str, value: &str) {
        self.state
            .lock()
            .unwrap()
            .namespace_annotations
            .entry(ns.to_owned())
            .or_default()
            .insert(key.to_owned(), value.to_owned());
    }

    /// The server URL for a kubeconfig.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates a Deployment with one container, rolled out, with its first ReplicaSet.
    pub fn add_deployment(&self, ns: &str, name: &str, replicas: i64, image: &str) {
        self.add_workload("deployments", ns, name, replicas, image);
    }

    /// Creates a StatefulSet with one container, rolled out.
    pub fn add_statefulset(&self, ns: &str, name: &str, replicas: i64, image: &str) {
        self.add_workload("statefulsets", ns, name, replicas, image);
    }

    fn add_workload(&self, resource: &str, ns: &str, name: &str, replicas: i64, image: &str) {
        let mut s = self.state.lock().unwrap();
        let kind = kind_of(resource).unwrap();
        let uid = s.uid();
        let rv = s.rv();
        let mut obj = json!({
            "apiVersion": "apps/v1", "kind": kind,
            "metadata": {"name": name, "namespace": ns, "uid": uid, "resourceVersion": rv, "generation": 1,
                         "creationTimestamp": "2026-11-24T00:00:00Z", "labels": {"app": name}, "annotations": {}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                             "spec": {"containers": [{"name": "app", "image": image}]}},
            },
        });
        if resource == "deployments" {
            s.reconcile_replica_sets(ns, &mut obj);
        }
        roll_out(&mut obj);
        s.objects
            .insert((resource.to_owned(), ns.to_owned(), name.to_owned()), obj);
    }

    /// Adds a Pod of the Deployment's current ReplicaSet (owner references as the
    /// ReplicaSet controller sets them) and returns its name.
    pub fn add_pod_of(&self, ns: &str, deployment: &str) -> String {
        let mut s = self.state.lock().unwrap();
        let revision = |o: &Value| {
            o["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                .as_str()
                .and_then(|r| r.parse::<i64>().ok())
                .unwrap_or(0)
        };
        let rs = s
            .objects
            .iter()
            .filter(|((r, n, _), o)| {
                r == "replicasets"
                    && n == ns
                    && o["metadata"]["ownerReferences"][0]["name"] == json!(deployment)
            })
            .max_by_key(|(_, o)| revision(o))
            .map(|(_, o)| o.clone())
            .expect("the Deployment has a ReplicaSet");
        let rs_name = rs["metadata"]["name"].as_str().unwrap().to_owned();
        let uid = s.uid();
        let name = format!("{rs_name}-x2x4q");
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "uid": uid, "resourceVersion": s.rv(),
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs_name,
                                              "uid": rs["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]},
            "spec": rs["spec"]["template"]["spec"].clone(),
        });
        s.objects
            .insert(("pods".to_owned(), ns.to_owned(), name.clone()), pod);
        name
    }

    /// Changes a Deployment's image the way `kubectl set image` does (a new revision).
    pub fn set_image(&self, ns: &str, name: &str, image: &str) {
        let mut s = self.state.lock().unwrap();
        let key = ("deployments".to_owned(), ns.to_owned(), name.to_owned());
        let mut obj = s.objects[&key].clone();
        obj["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
        s.update(&key, obj, false)
            .map_err(|_| "set_image failed")
            .unwrap();
    }

    /// An object as stored now.
    pub fn get(&self, resource: &str, ns: &str, name: &str) -> Option<Value> {
        let s = self.state.lock().unwrap();
        s.objects
            .get(&(resource.to_owned(), ns.to_owned(), name.to_owned()))
            .cloned()
    }

    /// A Deployment's ReplicaSets, by revision number.
    pub fn revisions(&self, ns: &str, deployment: &str) -> BTreeMap<i64, Value> {
        let s = self.state.lock().unwrap();
        s.objects
            .iter()
            .filter(|((r, n, _), o)| {
                r == "replicasets"
                    && n == ns
                    && o["metadata"]["ownerReferences"][0]["name"] == json!(deployment)
            })
            .map(|(_, o)| {
                let rev = o["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                (rev, o.clone())
            })
            .collect()
    }

    /// Every request from now on into this namespace gets 403.
    pub fn forbid_namespace(&self, ns: &str) {
        self.state.lock().unwrap().forbidden.insert(ns.to_owned());
    }

    /// After the next GET of this object, another writer changes it (its resourceVersion moves).
    pub fn interfere_after_next_read(&self, resource: &str, ns: &str, name: &str) {
        self.state.lock().unwrap().interfere_after_read.insert((
            resource.to_owned(),
            ns.to_owned(),
            name.to_owned(),
        ));
    }

    /// Just before salve's next real write to this workload's scale subresource, another
    /// writer scales it to `replicas`: salve's write meets a 409 and its fresh read sees
    /// the other writer's count.
    pub fn scale_before_next_write(&self, resource: &str, ns: &str, name: &str, replicas: i64) {
        self.state.lock().unwrap().scaled_before_next_write.insert(
            (resource.to_owned(), ns.to_owned(), name.to_owned()),
            replicas,
        );
    }

    /// From now on, changes to this workload never finish rolling out.
    pub fn stall_rollouts(&self, resource: &str, ns: &str, name: &str) {
        self.state.lock().unwrap().stuck.insert((
            resource.to_owned(),
            ns.to_owned(),
            name.to_owned(),
        ));
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The requests that could have changed state (no GETs, no dry runs).
    pub fn writes(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(Recorded::is_write)
            .collect()
    }

    /// Answers the next `method` request to a path ending in `path` (a dry run or a real
    /// one) with `status`, as an overloaded or failing API server would.
    pub fn fail_next(&self, method: &str, path: &str, dry_run: bool, status: u16) {
        self.state.lock().unwrap().faults.push((
            method.to_owned(),
            path.to_owned(),
            dry_run,
            status,
        ));
    }

    /// A kubeconfig file pointing at this server.
    pub fn write_kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: salve\n    namespace: default\ncurrent-context: fake\nusers:\n- name: salve\n  user:\n    token: fake-token\n",
            self.url()
        );
        std::fs::write(&path, text).unwrap();
        path
    }
}
