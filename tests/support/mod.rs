//! Test support: a real salve on port 0 with a fresh database, the fake API server,
//! and helpers to post Alertmanager's real payloads and wait for outcomes.
//!
//! Backend: SQLite in a temporary directory by default. With
//! `SALVE_TEST_DATABASE=postgres`, every test gets a fresh PostgreSQL database created
//! through `SALVE_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`);
//! if that server cannot be reached the test fails (it never silently falls back).

#![allow(dead_code)]

pub mod browser;
pub mod control_plane;
pub mod fake_kube;
pub mod kubelet;
pub mod real;
pub mod workloads;

use std::path::{Path, PathBuf};
use std::time::Duration;

use salve::app::Salve;
use salve::config::ServeSettings;
use salve::engine::Limits;
use salve::ingest::WebhookAuth;
use serde_json::{Value, json};
use sqlx::Connection;

pub use fake_kube::FakeKube;

/// Makes a child process die with the thread that starts it (`PR_SET_PDEATHSIG`), so
/// no salve, etcd or apiserver outlives a test, however the test ends.
pub fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl only sets a flag of the child process before exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A `salve serve` process of the binary under test; killed (SIGKILL: no clean-up, no
/// retirement, as a node failure would) and reaped when dropped, and when the thread
/// that started it ends.
pub struct SalveProcess {
    pub child: std::process::Child,
    pub url: String,
}

impl SalveProcess {
    /// Starts `salve serve` on `dir/policies`, `database` and `kubeconfig`, listening on
    /// `port`, with recovery timings short enough for a test (heartbeat 1 s, sweep
    /// 500 ms), writing its log to `log`; `extra` adds flags and environment.
    pub fn start(
        dir: &Path,
        database: &str,
        kubeconfig: &Path,
        port: u16,
        log: &Path,
        extra: impl FnOnce(&mut std::process::Command),
    ) -> SalveProcess {
        let log = std::fs::File::create(log).unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_salve"));
        cmd.arg("serve")
            .args(["--database", database])
            .arg("--policies")
            .arg(dir.join("policies"))
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--heartbeat-ttl",
                "1s",
                "--sweep-every",
                "500ms",
                "--no-watch",
            ])
            .env_remove("FAILPOINTS")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        extra(&mut cmd);
        die_with_parent(&mut cmd);
        SalveProcess {
            child: cmd.spawn().expect("cannot start salve"),
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for SalveProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a `salve` command (the binary under test) to its end: exit code, stdout, stderr.
pub fn run_to_end(cmd: &mut std::process::Command) -> (i32, String, String) {
    exit_and_text(cmd.output().unwrap())
}

/// Runs `cmd` to its end on a blocking thread. A test's runtime has one thread and the
/// salve under test runs on it: waiting for a command there would stop that salve
/// mid-transaction, and a command that needs its lock (a write on PostgreSQL waits for
/// the audit chain's head) would wait for ever.
pub async fn output_beside_salve(mut cmd: std::process::Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// A finished command's exit code (-1 if a signal ended it), stdout and stderr.
pub fn exit_and_text(out: std::process::Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether `program` is there and works: run with `args` (say `--version`), it succeeds.
pub fn installed(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A real component a test needs is missing: under CI (`CI` set) that is a failure;
/// on a laptop the test says so loudly and skips. `missing` names what was not found
/// and how to get it; `skipped` names the test that did not run.
pub fn component_missing(missing: &str, skipped: &str) {
    assert!(std::env::var("CI").is_err(), "required under CI: {missing}");
    eprintln!("\n*** SKIPPED: {missing}; {skipped} did not run ***\n");
}

/// The real `opa` v1.9.0 (`SALVE_TEST_OPA`), the reference for salve's Rego semantics
/// and policy tools; when it is missing, says which check (`skipped`) did not run.
pub fn opa(skipped: &str) -> Option<String> {
    let found = std::env::var("SALVE_TEST_OPA")
        .ok()
        .filter(|path| installed(path, &["version"]));
    if found.is_none() {
        component_missing(
            "the real opa (SALVE_TEST_OPA=path/to/opa; ../shared/opa/unpack.sh unpacks it)",
            skipped,
        );
    }
    found
}

/// Polls `check` every 50 ms until it gives `Ok`, and returns that value. Past `within`
/// the test fails, naming `what` it waited for and the last `Err` (what it saw instead).
pub async fn eventually<T>(
    what: &str,
    within: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(seen) => assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {within:?} waiting for {what}; saw: {seen}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fixture payload from `tests/fixtures/alertmanager/`.
pub fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/alertmanager")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The repository's `policies/` directory.
pub fn shipped_policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

/// A copy of the shipped policies in `dir`, with `rules.yaml` replaced when given.
pub fn policies_with_rules(dir: &Path, rules: Option<&str>) -> PathBuf {
    let out = dir.join("policies");
    copy_dir(&shipped_policies(), &out);
    std::fs::write(out.join("rules.yaml"), rules.unwrap_or(WALKTHROUGH_RULES)).unwrap();
    out
}

/// The rules a test gets when it names none: acting rules for the fixtures' alerts
/// (HighRequestLatency, KubeDeploymentReplicasMismatch, PodCrashLooping). The shipped
/// `policies/rules.yaml` holds shadow-mode examples for kube-prometheus instead, tested
/// on their own in `tests/first_hour.rs`.
pub const WALKTHROUGH_RULES: &str = include_str!("../fixtures/rules-walkthrough.yaml");

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The names of the databases a test makes on PostgreSQL: a prefix, then a UUIDv7.
const TEST_DATABASE_PREFIX: &str = "salve_test_";
const REPLICAS_DATABASE_PREFIX: &str = "salve_replicas_";

/// Drops, once per test process, the databases that earlier runs left on the PostgreSQL
/// server: each test makes its own and none is dropped as it ends (a test that fails
/// leaves its database to look at). Only those made over an hour ago, as the UUIDv7 in
/// the name tells, and not in use (PostgreSQL refuses to drop one that has a session).
async fn drop_stale_databases(conn: &mut sqlx::PgConnection) {
    static STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if STARTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let Ok(names) = sqlx::query_scalar::<_, String>("SELECT datname FROM pg_database")
        .fetch_all(&mut *conn)
        .await
    else {
        return;
    };
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    for name in names {
        let made = [TEST_DATABASE_PREFIX, REPLICAS_DATABASE_PREFIX]
            .iter()
            .find_map(|prefix| name.strip_prefix(prefix))
            .and_then(|id| uuid::Uuid::try_parse(id).ok())
            .and_then(|id| id.get_timestamp())
            .map(|t| {
                let (secs, nanos) = t.to_unix();
                std::time::UNIX_EPOCH + Duration::new(secs, nanos)
            });
        if made.is_some_and(|made| made < hour_ago) {
            let drop = format!("DROP DATABASE IF EXISTS {name}");
            let _ = sqlx::query(sqlx::AssertSqlSafe(drop))
                .execute(&mut *conn)
                .await;
        }
    }
}

/// A fresh, empty database for one test.
pub async fn fresh_database(dir: &Path) -> String {
    match std::env::var("SALVE_TEST_DATABASE").as_deref() {
        Ok("postgres") => {
            let admin = postgres_admin_url();
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .unwrap_or_else(|e| {
                    panic!("SALVE_TEST_DATABASE=postgres but {admin} is unreachable: {e}")
                });
            create_database(&mut conn, &admin, TEST_DATABASE_PREFIX).await
        }
        _ => format!("sqlite://{}", dir.join("salve.db").display()),
    }
}

/// A fresh database on the real PostgreSQL (`SALVE_TEST_POSTGRES_URL`), for tests that
/// need one whatever backend the suite runs on (several replicas); `None` after saying
/// loudly that `test` did not run (under CI a missing PostgreSQL fails).
pub async fn postgres_database(test: &str) -> Option<String> {
    let admin = postgres_admin_url();
    let mut conn = match sqlx::PgConnection::connect(&admin).await {
        Ok(c) => c,
        Err(e) => {
            component_missing(&format!("PostgreSQL at {admin} ({e})"), test);
            return None;
        }
    };
    Some(create_database(&mut conn, &admin, REPLICAS_DATABASE_PREFIX).await)
}

/// The PostgreSQL server the tests make their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("SALVE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Makes a database named `prefix` and a UUIDv7 on the server `conn` is on (after
/// dropping what earlier test runs left), and returns its URL.
pub async fn create_database(conn: &mut sqlx::PgConnection, admin: &str, prefix: &str) -> String {
    drop_stale_databases(conn).await;
    let name = format!("{prefix}{}", uuid::Uuid::now_v7().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut *conn)
        .await
        .unwrap();
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(admin);
    format!("{base}/{name}")
}

/// How a test salve is set up.
pub struct Options {
    pub kube: Option<FakeKube>,
    /// A kubeconfig for a real cluster (see [`control_plane`]); wins over `kube`.
    pub kubeconfig: Option<PathBuf>,
    pub dry_run: bool,
    pub rules: Option<String>,
    pub auth: WebhookAuth,
    pub limits: Limits,
    /// Reuse this database instead of a fresh one (restart tests).
    pub database: Option<String>,
    /// Reload on file changes in the policy directory.
    pub watch_policies: bool,
    pub admin_token: Option<String>,
    pub read_token: Option<String>,
    pub prometheus_url: Option<reqwest::Url>,
    /// Alertmanagers to escalate to (each gets every escalation).
    pub alertmanager_urls: Vec<reqwest::Url>,
    pub escalation_webhook_url: Option<reqwest::Url>,
    /// Where approval requests are posted.
    pub approval_webhook_url: Option<reqwest::Url>,
    /// The HTTP listener's timeouts and connection cap.
    pub connections: salve::server::ConnectionLimits,
    /// `--external-url` (its path is the prefix salve serves under).
    pub external_url: Option<salve::http::ExternalUrl>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            kube: None,
            kubeconfig: None,
            dry_run: false,
            rules: None,
            auth: WebhookAuth::default(),
            limits: Limits {
                call_timeout: Duration::from_secs(5),
                outbox_every: Duration::from_millis(200),
                sweep_every: Duration::from_millis(500),
                escalation_refresh: Duration::from_millis(500),
                // Tests (and the ingest bench) post bursts of alerts on purpose; the
                // brake's own test turns it on.
                storm_brake: None,
                ..Limits::default()
            },
            database: None,
            watch_policies: false,
            admin_token: None,
            read_token: None,
            prometheus_url: None,
            alertmanager_urls: Vec::new(),
            escalation_webhook_url: None,
            approval_webhook_url: None,
            connections: Default::default(),
            external_url: None,
        }
    }
}

/// A running salve with its temporary files.
pub struct TestSalve {
    pub salve: Salve,
    /// The read token the helpers' GETs send, when the test configured one.
    pub read_token: Option<String>,
    pub url: String,
    pub database: String,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

/// Starts salve on a free loopback port.
pub async fn spawn_salve(opts: Options) -> TestSalve {
    salve::telemetry::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let database = match opts.database {
        Some(d) => d,
        None => fresh_database(dir.path()).await,
    };
    // Under an external URL's path, salve's routes are there: the helpers below use it.
    let prefix = opts
        .external_url
        .as_ref()
        .map(|u| u.prefix().to_owned())
        .unwrap_or_default();
    let settings = ServeSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: database.clone(),
        db_wait: salve::store::DEFAULT_WAIT,
        connections: opts.connections.clone(),
        policies: policies_with_rules(dir.path(), opts.rules.as_deref()),
        offline: opts.kube.is_none() && opts.kubeconfig.is_none(),
        kubeconfig: opts
            .kubeconfig
            .or_else(|| opts.kube.as_ref().map(|k| k.write_kubeconfig(dir.path()))),
        dry_run: opts.dry_run,
        auth: opts.auth,
        max_body_bytes: 1024 * 1024,
        limits: opts.limits,
        rego: salve::policy::RegoOptions::default(),
        watch_policies: opts.watch_policies,
        admin_token: opts.admin_token.map(salve::config::Secret),
        read_token: opts.read_token.map(salve::config::Secret),
        retention: None,
        prometheus_url: opts.prometheus_url,
        alertmanager_url: opts.alertmanager_urls,
        escalation_webhook_url: opts.escalation_webhook_url,
        approval_webhook_url: opts.approval_webhook_url,
        external_url: opts.external_url,
    };
    let salve = Salve::start(&settings)
        .await
        .unwrap_or_else(|e| panic!("salve did not start: {e}"));
    let url = format!("http://{}{prefix}", salve.addr);
    TestSalve {
        salve,
        read_token: settings.read_token.as_ref().map(|t| t.0.clone()),
        url,
        database,
        dir,
        http: reqwest::Client::new(),
    }
}

impl TestSalve {
    /// Posts a webhook body; returns status and JSON body.
    pub async fn post_alerts(&self, body: &str) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}/api/v1/alerts", self.url))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Asks salve to reload its policy directory (`POST /-/reload`): status and answer.
    pub async fn reload(&self) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}/-/reload", self.url))
            .send()
            .await
            .unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }

    /// GETs an API path as JSON.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let mut request = self.http.get(format!("{}{path}", self.url));
        if let Some(token) = &self.read_token {
            request = request.bearer_auth(token);
        }
        let resp = request.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// The `/metrics` exposition, as text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The listing, newest first.
    pub async fn remediations(&self) -> Vec<Value> {
        let (status, body) = self.get("/api/v1/remediations?limit=500").await;
        assert_eq!(status, 200, "{body}");
        body["items"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until `count` remediations exist and every one is in `states` (or a terminal state).
    pub async fn reached(&self, count: usize, states: &[&str]) -> Vec<Value> {
        let terminal = |s: &str| {
            !matches!(
                s,
                "pending" | "executing" | "verifying" | "awaiting_approval"
            )
        };
        let what = format!("{count} remediation(s), each in {states:?} or an end state");
        eventually(&what, Duration::from_secs(60), async || {
            let items = self.remediations().await;
            let done = items.len() >= count
                && items.iter().all(|r| {
                    let s = r["state"].as_str().unwrap_or_default();
                    terminal(s) || states.contains(&s)
                });
            if done {
                Ok(items)
            } else {
                Err(format!("{items:#?}"))
            }
        })
        .await
    }

    /// Waits until `count` remediations exist and all have left `pending`/`executing`
    /// (a change that is being verified counts as settled).
    pub async fn settled(&self, count: usize) -> Vec<Value> {
        self.reached(count, &["verifying"]).await
    }

    /// Waits until `count` remediations exist and all have ended.
    pub async fn finished(&self, count: usize) -> Vec<Value> {
        self.reached(count, &[]).await
    }

    /// One remediation with its timeline.
    pub async fn detail(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/api/v1/remediations/{id}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// A loopback HTTP server that records every JSON body posted to it, at any path (an
/// escalation webhook, or an Alertmanager's `/api/v2/alerts`).
pub struct Capture {
    pub url: reqwest::Url,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl Capture {
    /// Starts the server.
    pub async fn start() -> Capture {
        Capture::failing_first(0).await
    }

    /// Starts a server that answers 500 to its first `failures` posts (recording nothing
    /// for them), then accepts.
    pub async fn failing_first(failures: usize) -> Capture {
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let store = bodies.clone();
        let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // A GET (salve asking, as of Alertmanager, whether an alert is muted) finds no
        // alerts: this stand-in holds none, so nothing is silenced.
        let app = axum::Router::new().fallback(
            axum::routing::get(|| async { axum::Json(json!([])) }).post(
                move |axum::Json(v): axum::Json<Value>| {
                    let store = store.clone();
                    let refused = refused.clone();
                    async move {
                        use std::sync::atomic::Ordering;
                        if refused.fetch_add(1, Ordering::SeqCst) < failures {
                            return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                        }
                        store.lock().unwrap().push(v);
                        axum::http::StatusCode::OK
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Capture { url, bodies }
    }

    /// Everything received so far.
    pub fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }

    /// Waits until at least `count` bodies arrived (a remediation is marked escalated
    /// before its notification is on the wire) and returns everything received.
    pub async fn received(&self, count: usize) -> Vec<Value> {
        let what = format!("{count} escalation(s)");
        eventually(&what, Duration::from_secs(30), async || {
            let bodies = self.bodies();
            if bodies.len() >= count {
                Ok(bodies)
            } else {
                Err(format!("{bodies:#?}"))
            }
        })
        .await
    }
}

/// The timeline entries of one kind.
pub fn events<'a>(detail: &'a Value, kind: &str) -> Vec<&'a Value> {
    detail["timeline"]
        .as_array()
        .map(|t| t.iter().filter(|e| e["kind"] == kind).collect())
        .unwrap_or_default()
}

/// A one-alert firing payload for a Deployment, built from the real fixture's shape.
pub fn firing_for(alertname: &str, namespace: &str, deployment: &str, fingerprint: &str) -> String {
    let labels = serde_json::json!({
        "alertname": alertname, "namespace": namespace, "deployment": deployment, "severity": "critical"
    });
    firing_with(labels, fingerprint)
}

/// A one-alert firing payload with exactly these labels (the real fixture's shape).
pub fn firing_with(labels: Value, fingerprint: &str) -> String {
    let mut v: Value = serde_json::from_str(&fixture("firing-from-prometheus-rule.json")).unwrap();
    v["alerts"][0]["labels"] = labels.clone();
    v["alerts"][0]["fingerprint"] = Value::String(fingerprint.to_owned());
    v["commonLabels"] = labels;
    v.to_string()
}

/// Records a firing alert and opens its remediation directly in the store, as a past run
/// of salve would have: for tests that start from a given history or a crash.
pub async fn seed_remediation(
    store: &salve::store::Store,
    fingerprint: u32,
    target: (&str, &str),
    action: &'static str,
    at: chrono::DateTime<chrono::Utc>,
) -> (String, String) {
    // A past run's owner: no heartbeat, so it counts as dead.
    seed_remediation_owned(store, fingerprint, target, action, at, "seeded/past-run").await
}

/// [`seed_remediation`] with the remediation owned by `owner` (say, a running salve).
pub async fn seed_remediation_owned(
    store: &salve::store::Store,
    fingerprint: u32,
    (namespace, name): (&str, &str),
    action: &'static str,
    at: chrono::DateTime<chrono::Utc>,
    owner: &str,
) -> (String, String) {
    let body = firing_for(
        "HighRequestLatency",
        namespace,
        name,
        &format!("{fingerprint:016x}"),
    );
    let delivery = salve::alert::Delivery::parse(body.as_bytes()).unwrap();
    let incident = store
        .record_delivery(&delivery, at)
        .await
        .unwrap()
        .to_decide[0]
        .clone();
    let new = salve::store::NewRemediation {
        incident_id: incident.clone(),
        alertname: "HighRequestLatency".into(),
        rule_name: format!("rule-{action}"),
        rule_file: "rules.yaml".into(),
        action,
        target: salve::cluster::TargetRef::new(
            salve::cluster::WorkloadKind::Deployment,
            namespace,
            name,
        )
        .unwrap(),
        mode: salve::remediation::Mode::Live,
        summary: "pending".into(),
        owner: owner.into(),
    };
    let id = store
        .create_remediation(&new, &serde_json::json!({}), at)
        .await
        .unwrap()
        .unwrap();
    (incident, id)
}

/// The resolved notification Alertmanager sends for a firing payload.
pub fn resolved(firing: &str) -> String {
    let mut v: Value = serde_json::from_str(firing).unwrap();
    v["status"] = "resolved".into();
    for alert in v["alerts"].as_array_mut().unwrap() {
        alert["status"] = "resolved".into();
        alert["endsAt"] = chrono::Utc::now().to_rfc3339().into();
    }
    v.to_string()
}

/// Waits until the newest remediation of the salve at `base` (a process) is in `state`,
/// and returns it as listed.
pub async fn newest_remediation_in(http: &reqwest::Client, base: &str, state: &str) -> Value {
    let remediations = format!("{base}/api/v1/remediations");
    eventually(
        &format!("the newest remediation to be {state}"),
        Duration::from_secs(30),
        async || {
            let body: Value = http
                .get(&remediations)
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            match body["items"][0]["state"].as_str() {
                Some(s) if s == state => Ok(body["items"][0].clone()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}
