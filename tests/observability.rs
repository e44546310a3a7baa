//! salve watched as a Prometheus-ecosystem component: refused webhooks are logged and
//! counted, `/metrics` passes `promtool check metrics` and says what salve did, the
//! shipped alerts pass `promtool check rules` and read only metrics salve exports,
//! `/readyz` knows when the API server is gone, and no secret reaches the store or the
//! log. promtool comes from Debian's `prometheus` package: skipped loudly without it on
//! a laptop, required under CI.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::control_plane::ControlPlane;
use support::workloads::deployment;
use support::{
    Capture, FakeKube, Options, component_missing, die_with_parent, eventually, firing_for,
    fresh_database, installed, policies_with_rules, spawn_salve,
};

/// `salve serve --offline` as a process (its log is what an operator reads), with
/// `flags` added; the log goes to `log`.
fn serve_offline(dir: &Path, database: &str, port: u16, log: &Path, flags: &[&str]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_salve"));
    cmd.arg("serve")
        .arg("--offline")
        .args(["--database", database])
        .arg("--policies")
        .arg(policies_with_rules(dir, None))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(flags)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    die_with_parent(&mut cmd);
    Child(cmd.spawn().unwrap())
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_ready(url: &str) {
    salve::telemetry::install_crypto_provider();
    eventually(
        "salve to answer /healthz",
        Duration::from_secs(30),
        async || match reqwest::get(format!("{url}/healthz")).await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(r.status().to_string()),
            Err(e) => Err(e.to_string()),
        },
    )
    .await;
}

/// The value of one sample in the classic text exposition, if it is there.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn a_refused_webhook_is_logged_at_warn_with_its_reason_and_peer_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let database = fresh_database(dir.path()).await;
    let token = dir.path().join("webhook-token");
    std::fs::write(&token, "the-right-token-7f3a\n").unwrap();
    let port = support::real::free_port();
    let log = dir.path().join("salve.log");
    let _salve = serve_offline(
        dir.path(),
        &database,
        port,
        &log,
        &["--webhook-token-file", token.to_str().unwrap()],
    );
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&url).await;
    let http = reqwest::Client::new();
    let payload = firing_for("HighRequestLatency", "shop", "checkout", "00000000000e0001");

    let wrong = http
        .post(format!("{url}/api/v1/alerts"))
        .bearer_auth("a-wrong-token-91c2")
        .body(payload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let garbled = http
        .post(format!("{url}/api/v1/alerts"))
        .bearer_auth("the-right-token-7f3a")
        .body("{\"version\": \"4\", \"alerts\": 12}")
        .send()
        .await
        .unwrap();
    assert_eq!(garbled.status(), 400);
    let taken = http
        .post(format!("{url}/api/v1/alerts"))
        .bearer_auth("the-right-token-7f3a")
        .body(payload)
        .send()
        .await
        .unwrap();
    assert_eq!(taken.status(), 200);

    let metrics = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (code, want) in [("401", 1.0), ("400", 1.0), ("200", 1.0)] {
        let series = format!("salve_webhook_requests_total{{code=\"{code}\"}}");
        assert_eq!(
            sample(&metrics, &series),
            Some(want),
            "{series} in\n{metrics}"
        );
    }
    assert_eq!(
        sample(&metrics, "salve_alerts_received_total{status=\"firing\"}"),
        Some(1.0)
    );

    let text = std::fs::read_to_string(&log).unwrap();
    let refused: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("webhook delivery refused"))
        .collect();
    assert_eq!(refused.len(), 2, "{text}");
    let auth = refused.iter().find(|l| l.contains("status=401")).unwrap();
    assert!(auth.contains(" WARN "), "{auth}");
    assert!(auth.contains("peer=127.0.0.1:"), "{auth}");
    assert!(
        auth.contains("authentication failed: a wrong bearer token"),
        "{auth}"
    );
    let bad = refused.iter().find(|l| l.contains("status=400")).unwrap();
    assert!(
        bad.contains(" WARN ") && bad.contains("peer=127.0.0.1:"),
        "{bad}"
    );
    assert!(bad.contains("alerts"), "the reason names the field: {bad}");
    for secret in ["a-wrong-token-91c2", "the-right-token-7f3a"] {
        assert!(!text.contains(secret), "a credential in the log: {text}");
    }
}

fn promtool() -> bool {
    let there = installed("promtool", &["--version"]);
    if !there {
        component_missing(
            "promtool (Debian package prometheus)",
            "this promtool check",
        );
    }
    there
}

/// Runs `promtool ARGS` with `stdin`; returns whether it passed and what it said.
fn run_promtool(args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// `GET /metrics` with `accept`: the content type and the exposition.
async fn scrape(s: &support::TestSalve, accept: Option<&str>) -> (String, String) {
    let mut request = s.http.get(format!("{}/metrics", s.url));
    if let Some(a) = accept {
        request = request.header("accept", a);
    }
    let reply = request.send().await.unwrap();
    let format = reply.headers()["content-type"].to_str().unwrap().to_owned();
    (format, reply.text().await.unwrap())
}

const RULES: &str = r#"
rules:
  - name: latency-scale-up
    matchers: ['alertname="HighRequestLatency"']
    target: { kind: Deployment, namespace: "{{ namespace }}", name: "{{ deployment }}" }
    action: { scale: { by: 1, min: 1, max: 10 } }
    verify: { within: 300ms, every: 100ms }
    cooldown: 0s
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_remediation_pass_promtool_and_say_what_salve_did() {
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1");
    let s = spawn_salve(Options {
        kube: Some(kube.clone()),
        rules: Some(RULES.into()),
        ..Options::default()
    })
    .await;
    s.post_alerts(&firing_for(
        "HighRequestLatency",
        "shop",
        "checkout",
        "00000000000e0002",
    ))
    .await;
    let done = s.finished(1).await;
    // No resolution came within the window: the ladder ran out and escalated.
    assert_eq!(done[0]["state"], "escalated", "{:#}", done[0]);

    // The record is final a moment before the engine counts it: scrape until it has.
    let (format, text) = eventually(
        "the finished remediation to be counted",
        Duration::from_secs(10),
        async || {
            let (format, text) = scrape(&s, None).await;
            match text.contains("salve_remediations_finished_total{") {
                true => Ok((format, text)),
                false => Err(text),
            }
        },
    )
    .await;
    assert!(format.starts_with("text/plain; version=0.0.4"), "{format}");
    for (series, want) in [
        (
            "salve_incidents_decided_total{decision=\"remediation\"}",
            1.0,
        ),
        ("salve_policy_verdicts_total{verdict=\"allow\"}", 1.0),
        (
            "salve_remediations_finished_total{rule=\"latency-scale-up\",action=\"scale\",state=\"escalated\"}",
            1.0,
        ),
        ("salve_policy_evaluation_duration_seconds_count", 1.0),
        ("salve_remediations_in_flight{state=\"verifying\"}", 0.0),
        ("salve_replicas{state=\"live\"}", 1.0),
    ] {
        assert_eq!(sample(&text, series), Some(want), "{series} in\n{text}");
    }
    // The writer's tally: the delivery and the engine's writes, committed in batches;
    // and its queues (a heartbeat's write may be in one at the scrape).
    for series in [
        "salve_store_batches_total",
        "salve_store_writes_total{kind=\"delivery\"}",
        "salve_store_writes_total{kind=\"engine\"}",
    ] {
        assert!(
            sample(&text, series).is_some_and(|n| n >= 1.0),
            "{series} in\n{text}"
        );
    }
    for kind in ["delivery", "engine"] {
        let series = format!("salve_store_writes_waiting{{kind=\"{kind}\"}}");
        assert!(sample(&text, &series).is_some(), "{series} in\n{text}");
    }
    // Where the writer's time went: each part did some of the work above.
    for part in ["engine", "delivery", "commit"] {
        let series = format!("salve_store_busy_seconds_total{{part=\"{part}\"}}");
        assert!(
            sample(&text, &series).is_some_and(|s| s > 0.0),
            "{series} in\n{text}"
        );
    }
    // The engine's queue: the one incident was taken off it (and decided).
    let waiting = "salve_engine_incidents{state=\"waiting\"}";
    assert_eq!(sample(&text, waiting), Some(0.0), "{waiting} in\n{text}");
    let deciding = "salve_engine_incidents{state=\"deciding\"}";
    assert!(sample(&text, deciding).is_some(), "{deciding} in\n{text}");
    // The one step, with the outcome the record gives it.
    let detail = s.detail(done[0]["id"].as_str().unwrap()).await;
    let verification = &support::events(&detail, "verification")[0]["detail"];
    let outcome = verification["outcome"].as_str().unwrap();
    let steps: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("salve_step_outcomes_total{action=\"scale\""))
        .collect();
    assert_eq!(
        steps,
        [format!(
            "salve_step_outcomes_total{{action=\"scale\",outcome=\"{outcome}\"}} 1"
        )]
    );
    // Each poll of that verification is counted by what it saw.
    let polls: f64 = text
        .lines()
        .filter(|l| l.starts_with("salve_verification_polls_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(
        polls as usize,
        verification["polls"].as_array().unwrap().len(),
        "{text}"
    );
    // Every call salve made is counted by verb, resource and answer.
    assert!(
        sample(
            &text,
            "salve_kubernetes_requests_total{verb=\"PATCH\",resource=\"deployments/scale\",code=\"200\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "salve_kubernetes_requests_total{verb=\"GET\",resource=\"deployments\",code=\"200\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(text.contains("salve_build_info{version=\""), "{text}");

    // Prometheus asks for OpenMetrics and gets it.
    let (format, open) = scrape(
        &s,
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    )
    .await;
    assert!(
        format.starts_with("application/openmetrics-text"),
        "{format}"
    );
    assert!(open.ends_with("# EOF\n"));

    if !promtool() {
        return;
    }
    let (ok, said) = run_promtool(&["check", "metrics"], &text);
    assert!(ok, "promtool check metrics: {said}\n{text}");
}

/// The `salve_*` names an expression reads.
fn read_by(expr: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\bsalve_[a-z_]+\b").unwrap();
    re.find_iter(expr).map(|m| m.as_str().to_owned()).collect()
}

#[test]
fn the_shipped_alerts_and_dashboard_read_only_metrics_salve_exports() {
    let exported: BTreeSet<String> = salve::telemetry::Metrics::new()
        .series_names()
        .iter()
        .cloned()
        .collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/monitoring");

    let rule: Value =
        serde_norway::from_str(&std::fs::read_to_string(root.join("prometheusrule.yaml")).unwrap())
            .unwrap();
    let mut alerts = Vec::new();
    for group in rule["spec"]["groups"].as_array().unwrap() {
        for r in group["rules"].as_array().unwrap() {
            let name = r["alert"].as_str().unwrap();
            alerts.push(name.to_owned());
            let runbook = r["annotations"]["runbook"].as_str().unwrap_or_default();
            assert!(runbook.len() > 40, "{name} has no runbook line");
            for metric in read_by(r["expr"].as_str().unwrap()) {
                assert!(
                    exported.contains(&metric),
                    "{name} reads {metric}, which salve does not export"
                );
            }
        }
    }
    for wanted in [
        "SalveWebhookRejections",
        "SalveRemediationsFailing",
        "SalveEscalationDeliveryFailing",
        "SalveReloadFailed",
        "SalveDatabaseUnavailable",
        "SalveReplicaHeartbeatLost",
    ] {
        assert!(
            alerts.iter().any(|a| a == wanted),
            "no {wanted}: {alerts:?}"
        );
    }

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut read = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            read.extend(read_by(target["expr"].as_str().unwrap()));
        }
    }
    assert!(read.len() >= 12, "the dashboard shows little: {read:?}");
    for metric in &read {
        assert!(
            exported.contains(metric),
            "the dashboard reads {metric}, which salve does not export"
        );
    }

    if !promtool() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("salve-rules.yml");
    std::fs::write(&file, support::real::salve_rule_groups()).unwrap();
    let (ok, said) = run_promtool(&["check", "rules", file.to_str().unwrap()], "");
    assert!(ok, "promtool check rules: {said}");
    assert!(
        said.contains(&format!("SUCCESS: {} rules found", alerts.len())),
        "{said}"
    );
}

#[tokio::test]
async fn readyz_says_not_ready_while_the_api_server_is_unreachable() {
    let kube = FakeKube::start().await;
    let s = spawn_salve(Options {
        kube: Some(kube.clone()),
        ..Options::default()
    })
    .await;
    let (status, body) = s.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["mode"], "live");

    // A kubeconfig that leads nowhere: the process is alive, but not ready.
    let dir = tempfile::tempdir().unwrap();
    let nowhere = dir.path().join("kubeconfig");
    std::fs::write(
        &nowhere,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster: {{server: 'http://127.0.0.1:{}'}}\nusers:\n- name: u\n  user: {{token: t}}\ncontexts:\n- name: c\n  context: {{cluster: gone, user: u}}\ncurrent-context: c\n",
            support::real::free_port()
        ),
    )
    .unwrap();
    let cut_off = spawn_salve(Options {
        kubeconfig: Some(nowhere),
        ..Options::default()
    })
    .await;
    let (status, body) = cut_off.get("/healthz").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = cut_off.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("the Kubernetes API server"),
        "{body}"
    );
}

/// Every text the knowledge base holds, row by row, whatever the backend.
async fn everything_stored(database: &str) -> String {
    use sqlx::{Column, Connection, Row};
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(database).await.unwrap();
    let tables: Vec<String> = if database.starts_with("postgres") {
        sqlx::query(
            "SELECT tablename::text AS name FROM pg_tables WHERE schemaname = current_schema()",
        )
    } else {
        sqlx::query("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<String, _>("name"))
    // sqlx's own bookkeeping (the migrations' SQL) holds nothing salve received.
    .filter(|t| !t.starts_with("_sqlx") && !t.starts_with("sqlite_"))
    .collect();
    let mut all = String::new();
    for table in tables {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM {table}")))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        for row in rows {
            for (i, column) in row.columns().iter().enumerate() {
                if let Ok(Some(text)) = row.try_get::<Option<String>, _>(i) {
                    all += &format!("{table}.{}: {text}\n", column.name());
                }
            }
        }
    }
    assert!(all.contains("remediations.summary"), "nothing read: {all}");
    all
}

const PROTECTED_RULES: &str = r#"
rules:
  - name: revive
    matchers: ['alertname="KubeDeploymentReplicasMismatch"']
    target: { kind: Deployment, namespace: "{{ namespace }}", name: "{{ deployment }}" }
    action: { scale: { by: 1, min: 1, max: 5 } }
    cooldown: 0s
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_applied_configuration_and_a_webhook_secret_reach_neither_store_nor_log() {
    let Some(cp) = ControlPlane::get() else {
        return;
    };
    let ns = cp.namespace("redact").await;
    let client = cp.client().await;
    // What `kubectl apply` leaves on an object: the whole manifest, literal secrets in
    // its environment included, in an annotation.
    let mut object = deployment("ledger", 0, "ledger:2");
    object["spec"]["template"]["spec"]["containers"][0]["env"] =
        json!([{"name": "DB_PASSWORD", "value": "hunter2-in-env-5b1e"}]);
    let applied = object.to_string();
    object["metadata"]["annotations"] = json!({
        "kubectl.kubernetes.io/last-applied-configuration": applied,
        "team": "payments",
    });
    // Zero replicas never roll out, so no waiting for that here.
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(client, &ns.name);
    deployments
        .create(
            &kube::api::PostParams::default(),
            &serde_json::from_value(object).unwrap(),
        )
        .await
        .unwrap();

    let capture = Capture::start().await;
    let mut hook = capture.url.join("hooks/escalate").unwrap();
    hook.set_query(Some("token=webhook-secret-c0ffee"));
    let dir = tempfile::tempdir().unwrap();
    let database = fresh_database(dir.path()).await;
    policies_with_rules(dir.path(), Some(PROTECTED_RULES));
    let port = support::real::free_port();
    let log = dir.path().join("salve.log");
    let salve = support::SalveProcess::start(
        dir.path(),
        &database,
        &cp.admin_kubeconfig,
        port,
        &log,
        |cmd| {
            cmd.args(["--escalation-webhook-url", hook.as_str()])
                // Everything salve says, at every level.
                .env("RUST_LOG", "debug");
        },
    );
    wait_ready(&salve.url).await;
    let http = reqwest::Client::new();
    let status = http
        .post(format!("{}/api/v1/alerts", salve.url))
        .body(firing_for(
            "KubeDeploymentReplicasMismatch",
            &ns.name,
            "ledger",
            "00000000000e0003",
        ))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    // Zero replicas is someone's decision: the shipped guardrails deny, salve escalates.
    let sent = capture.received(1).await;
    assert!(sent[0]["reason"].is_string(), "{}", sent[0]);
    let denied = support::newest_remediation_in(&http, &salve.url, "denied").await;
    let detail: Value = http
        .get(format!(
            "{}/api/v1/remediations/{}",
            salve.url,
            denied["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The policy still saw the workload, the annotation's key and the harmless ones.
    let input = &support::events(&detail, "policy_evaluated")[0]["detail"]["input"]["target"];
    assert_eq!(input["name"], "ledger");
    assert_eq!(input["annotations"]["team"], "payments");
    assert_eq!(
        input["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
        "<redacted>"
    );
    // The record is committed before the engine logs the end of the remediation; the
    // log must cover the whole remediation before salve is stopped.
    eventually(
        "salve to log the end of the remediation",
        Duration::from_secs(10),
        async || {
            let logged = std::fs::read_to_string(&log).unwrap_or_default();
            if logged.contains("remediation finished") {
                Ok(())
            } else {
                Err("not logged yet".to_string())
            }
        },
    )
    .await;
    drop(salve);

    let stored = everything_stored(&database).await;
    let logged = std::fs::read_to_string(&log).unwrap();
    for secret in [
        "hunter2-in-env-5b1e",
        "webhook-secret-c0ffee",
        "hooks/escalate",
    ] {
        assert!(!stored.contains(secret), "{secret} is stored:\n{stored}");
        assert!(!logged.contains(secret), "{secret} is logged:\n{logged}");
    }
}
