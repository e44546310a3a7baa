//! The first hour with salve: the mistakes a new user makes (a command run in the wrong
//! directory, a plain path, a database that is down, a kubeconfig in quotes) get a
//! sentence that says what is wrong, and the commands a person reads with show what
//! happened in words, in the format asked for.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::{
    FakeKube, Options, eventually, firing_for, firing_with, policies_with_rules, resolved,
    spawn_salve,
};

/// Runs the `salve` binary in `dir`; returns exit code, stdout and stderr.
fn salve_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    support::run_to_end(
        Command::new(env!("CARGO_BIN_EXE_salve"))
            .args(args)
            .current_dir(dir)
            .env_remove("SALVE_DATABASE_URL"),
    )
}

fn salve(args: &[&str]) -> (i32, String, String) {
    salve_in(Path::new(env!("CARGO_MANIFEST_DIR")), args)
}

#[test]
fn commands_that_read_say_there_is_no_database_and_create_none() {
    let dir = tempfile::tempdir().unwrap();
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let policies = policies.to_str().unwrap();
    let commands: Vec<Vec<&str>> = vec![
        vec!["history"],
        vec!["alerts"],
        vec!["show", "01ARZ3NDEKTSV4RRFFQ69G5FAV"],
        vec!["stats"],
        vec!["audit", "verify"],
        vec!["pauses"],
        vec!["rules", "report", "latency-scale-up"],
        vec!["replay", "--policies", policies],
        // Orders too: a pause written to a new, empty file is a pause no salve reads.
        vec!["pause", "--reason", "maintenance"],
        vec!["resume", "--all"],
        vec!["approve", "01ARZ3NDEKTSV4RRFFQ69G5FAV"],
    ];
    for args in commands {
        let (code, stdout, stderr) = salve_in(dir.path(), &args);
        assert_eq!(code, 2, "{args:?}: {stdout}{stderr}");
        assert_eq!(
            stderr,
            "error: no database at data/salve.db (salve serve or salve migrate creates it; --database or SALVE_DATABASE_URL names another)\n",
            "{args:?}"
        );
        assert!(stdout.is_empty(), "{args:?} printed a report: {stdout}");
        assert!(
            !dir.path().join("data").exists(),
            "{args:?} created the database or its directory"
        );
    }
    // A file that is there but is no knowledge base (say, another tool's) is said too.
    std::fs::write(dir.path().join("other.db"), b"").unwrap();
    let (code, _, stderr) = salve_in(dir.path(), &["history", "--database", "other.db"]);
    assert_eq!(code, 2);
    assert_eq!(
        stderr,
        "error: SQLite file other.db holds no salve knowledge base (salve serve or salve migrate sets one up)\n"
    );
}

#[test]
fn a_plain_path_is_an_sqlite_database() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = salve_in(dir.path(), &["migrate", "--database", "kb/x.db"]);
    assert_eq!(
        (code, stdout.as_str()),
        (0, "migrations applied\n"),
        "{stderr}"
    );
    assert!(dir.path().join("kb/x.db").is_file());
    let (code, stdout, stderr) = salve_in(dir.path(), &["history", "--database", "kb/x.db"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("(no remediations recorded)"), "{stdout}");
    let (code, _, stderr) = salve_in(dir.path(), &["history", "--database", "mysql://h/x"]);
    assert_eq!(code, 2);
    assert_eq!(
        stderr,
        "error: --database mysql://h/x: salve keeps its knowledge base in SQLite or PostgreSQL, not mysql; give a file path, sqlite://PATH or postgres://HOST/DB\n"
    );
}

#[test]
fn an_unreachable_postgresql_is_named_by_host_and_port_without_its_password() {
    let port = support::real::free_port();
    let url = format!("postgres://salve:hunter2@127.0.0.1:{port}/knowledge");
    let (code, stdout, stderr) = salve(&["stats", "--database", &url]);
    assert_eq!(code, 2, "{stdout}");
    assert!(
        stderr.starts_with(&format!(
            "error: cannot connect to PostgreSQL at 127.0.0.1:{port} (database knowledge): "
        )) && stderr.contains("refused"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// Starts `salve serve` with `flags`, its log to a file, and returns the process and the
/// log's text once `line` appears in it.
async fn serve_until(
    dir: &Path,
    env: &[(&str, &str)],
    flags: &[&str],
    line: &str,
) -> (std::process::Child, String) {
    let log = dir.join("salve.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_salve"));
    cmd.arg("serve")
        .args(["--database", &format!("{}/kb.db", dir.display())])
        .arg("--policies")
        .arg(policies_with_rules(dir, None))
        .args(["--listen", "127.0.0.1:0", "--no-watch"])
        .args(flags)
        .env_remove("RUST_LOG")
        .env_remove("KUBECONFIG")
        .env("HOME", dir)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    support::die_with_parent(&mut cmd);
    let child = cmd.spawn().unwrap();
    let text = eventually(line, Duration::from_secs(20), async || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains(line) {
            Ok(text)
        } else {
            Err(text)
        }
    })
    .await;
    (child, text)
}

/// A kubeconfig for a server at `server`, context `context`.
fn kubeconfig(dir: &Path, server: &str, context: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"{server}\", insecure-skip-tls-verify: true}}\nusers:\n- name: u\n  user: {{token: t}}\ncontexts:\n- name: {context}\n  context: {{cluster: c, user: u}}\ncurrent-context: {context}\n"
        ),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn the_start_up_line_says_why_salve_is_offline_and_which_cluster_it_acts_on() {
    // --offline with a kubeconfig at hand: the reason is the flag, not a missing file.
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), "https://127.0.0.1:1", "prod-admin");
    let config = config.to_str().unwrap();
    let (mut child, log) = serve_until(
        dir.path(),
        &[("KUBECONFIG", config)],
        &["--offline"],
        "mode: ",
    )
    .await;
    let _ = child.kill();
    assert!(
        log.contains("mode: OFFLINE DRY-RUN: --offline was given, so salve records what it would do and calls nothing"),
        "{log}"
    );
    assert!(!log.contains("no Kubernetes configuration"), "{log}");

    // No configuration at all: offline, and the line says that is why.
    let dir = tempfile::tempdir().unwrap();
    let (mut child, log) = serve_until(dir.path(), &[], &[], "mode: ").await;
    let _ = child.kill();
    assert!(
        log.contains("mode: OFFLINE DRY-RUN: no Kubernetes configuration was found (no --kubeconfig, no $KUBECONFIG or ~/.kube/config, not in a pod), so salve records what it would do and calls nothing"),
        "{log}"
    );

    // Live: the server, the context and where they came from; an unreachable server is said.
    let dir = tempfile::tempdir().unwrap();
    let port = support::real::free_port();
    let server = format!("https://127.0.0.1:{port}");
    let config = kubeconfig(dir.path(), &server, "prod-admin");
    let (mut child, log) = serve_until(
        dir.path(),
        &[],
        &["--kubeconfig", config.to_str().unwrap()],
        "mode: ",
    )
    .await;
    let _ = child.kill();
    assert!(
        log.contains(&format!(
            "mode: LIVE on {server} (context prod-admin, from {}): allowed changes are applied after a server-side dry-run",
            config.display()
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("the API server at {server} does not answer now: "))
            && log.contains("salve keeps trying"),
        "{log}"
    );
}

/// Runs `salve serve` with `flags` (no kubeconfig in the environment, an empty home) to
/// a start-up refusal; returns its stderr.
fn serve_refused(flags: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let policies = policies_with_rules(dir.path(), None);
    let (code, _, stderr) = support::run_to_end(
        Command::new(env!("CARGO_BIN_EXE_salve"))
            .arg("serve")
            .args(flags)
            .args(["--listen", "127.0.0.1:0"])
            .arg("--policies")
            .arg(&policies)
            .args(["--database", &format!("{}/kb.db", dir.path().display())])
            .env_remove("KUBECONFIG")
            .env("HOME", dir.path()),
    );
    assert_eq!(code, 2, "{stderr}");
    stderr
}

#[test]
fn dry_run_without_a_cluster_refuses_to_start_and_says_why() {
    let stderr = serve_refused(&["--dry-run"]);
    assert!(
        stderr.ends_with("salve: Kubernetes configuration: --dry-run reads the cluster and sends server-side dry-runs, but no Kubernetes configuration was found (no --kubeconfig, no $KUBECONFIG or ~/.kube/config, not in a pod); give --kubeconfig, or --offline to record without a cluster\n"),
        "{stderr}"
    );
}

#[test]
fn a_quoted_tilde_in_kubeconfig_is_explained_in_a_sentence() {
    let stderr = serve_refused(&["--kubeconfig", "~/.kube/config"]);
    assert!(
        stderr.ends_with("salve: Kubernetes configuration: cannot use the kubeconfig ~/.kube/config: No such file or directory (os error 2) (a ~ is not expanded inside quotes; give the full path)\n"),
        "{stderr}"
    );
}

/// What a remediation that did not heal and was escalated reads like, in `salve show`:
/// sentences, no Rust (`NotHealed(`, `2..=10`, `(delivered: [])`, `null`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_people_read_of_a_remediation_is_sentences() {
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    let s = spawn_salve(Options {
        kube: Some(kube.clone()),
        rules: Some(
            r#"
rules:
  - name: checkout-scale
    matchers: ['alertname="HighRequestLatency"']
    target: { kind: Deployment, name: "{{ deployment }}" }
    action: { scale: { by: 1, min: 2, max: 10 } }
    verify: { within: 600ms, every: 100ms }
"#
            .into(),
        ),
        ..Options::default()
    })
    .await;
    s.post_alerts(&firing_for(
        "HighRequestLatency",
        "shop",
        "checkout",
        "00000000000f1a01",
    ))
    .await;
    let items = s.reached(1, &["escalated"]).await;
    let id = items[0]["id"].as_str().unwrap();
    let (code, text, stderr) = salve(&["show", "--database", &s.database, id]);
    assert_eq!(code, 0, "{stderr}");
    for line in [
        "scale Deployment shop/checkout from 2 to 3 replicas -> allowed",
        "not healed: the alert did not resolve within",
        "escalated: ",
        "no notifier is configured, so no one was told",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    for rust in ["NotHealed(", "..=", "(delivered:", "null", "[\"", "Some("] {
        assert!(!text.contains(rust), "{rust:?} in\n{text}");
    }
}

/// A rule or policy error spans lines (file, excerpt, message); the text log keeps it on
/// one line, so `grep` and log shippers see one event.
#[tokio::test]
async fn a_multi_line_error_is_one_line_of_the_text_log() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _) = serve_until(dir.path(), &[], &["--offline"], "listening").await;
    let broken = dir.path().join("policies/broken.rego");
    std::fs::write(
        &broken,
        "package salve.broken\n\nallow if {\n  input.x ==\n}\n",
    )
    .unwrap();
    let url = {
        let text = std::fs::read_to_string(dir.path().join("salve.log")).unwrap();
        let at = text
            .lines()
            .find_map(|l| l.split("addr=").nth(1))
            .expect("the listening line names the address")
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned();
        format!("http://{at}")
    };
    salve::telemetry::install_crypto_provider();
    let answer = reqwest::Client::new()
        .post(format!("{url}/-/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let text = eventually(
        "the reload failure in the log",
        Duration::from_secs(10),
        async || {
            let text = std::fs::read_to_string(dir.path().join("salve.log")).unwrap();
            if text.contains("reload failed") {
                Ok(text)
            } else {
                Err(text)
            }
        },
    )
    .await;
    let _ = child.kill();
    let line = text.lines().find(|l| l.contains("reload failed")).unwrap();
    assert!(line.contains("broken.rego:"), "{line}");
    let after = text.split_once(line).unwrap().1;
    assert!(
        after.lines().all(|l| l.contains(" INFO ")
            || l.contains(" WARN ")
            || l.contains(" ERROR ")
            || l.trim().is_empty()),
        "the error went on past its line:\n{after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listing_honours_output_and_alerts_lists_what_was_received() {
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    let s = spawn_salve(Options {
        kube: Some(kube.clone()),
        ..Options::default()
    })
    .await;
    let firing = firing_for("HighRequestLatency", "shop", "checkout", "00000000000f1b01");
    s.post_alerts(&firing).await;
    s.post_alerts(&firing_with(
        json!({"alertname": "Watchdog", "severity": "none"}),
        "00000000000f1b02",
    ))
    .await;
    let items = s.reached(1, &["verifying"]).await;
    let id = items[0]["id"].as_str().unwrap().to_owned();
    s.post_alerts(&resolved(&firing)).await;
    s.reached(1, &["healed"]).await;
    let db = s.database.as_str();

    // salve alerts: both alerts, their status, the decision, the remediation.
    let (code, table, stderr) = salve(&["alerts", "--database", db]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("FIRST SEEN (UTC)"), "{table}");
    let latency = lines
        .iter()
        .find(|l| l.contains("HighRequestLatency"))
        .unwrap();
    assert!(
        latency.contains("resolved") && latency.contains(&format!("{id} (healed)")),
        "{table}"
    );
    let watchdog = lines.iter().find(|l| l.contains("Watchdog")).unwrap();
    assert!(
        watchdog.contains("firing") && watchdog.contains("no rule: "),
        "{table}"
    );
    // The history's filters: by the remediation's namespace, and the alert's status.
    let (_, only_shop, _) = salve(&[
        "alerts",
        "--database",
        db,
        "--namespace",
        "shop",
        "-o",
        "json",
    ]);
    let only_shop: Value = serde_json::from_str(&only_shop).unwrap();
    assert_eq!(only_shop.as_array().unwrap().len(), 1, "{only_shop:#}");
    assert_eq!(only_shop[0]["remediation_id"], id.as_str());
    let (_, firing_only, _) = salve(&[
        "alerts",
        "--database",
        db,
        "--status",
        "firing",
        "-o",
        "csv",
    ]);
    let rows: Vec<&str> = firing_only.lines().collect();
    assert_eq!(rows.len(), 2, "{firing_only}");
    assert!(
        rows[0].starts_with("FIRST SEEN (UTC),ALERT,STATUS"),
        "{firing_only}"
    );
    assert!(rows[1].contains(",Watchdog,firing,"), "{firing_only}");
    let (code, _, stderr) = salve(&["alerts", "--database", db, "--status", "pending"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("status \"pending\" is neither firing nor resolved"),
        "{stderr}"
    );

    // stats: table, JSON and CSV.
    let (_, csv, _) = salve(&["stats", "--database", db, "-o", "csv"]);
    let mut csv_lines = csv.lines();
    assert_eq!(
        csv_lines.next(),
        Some("alertname,target,step,attempts,healed,success_rate,mean_seconds_to_heal")
    );
    let row = csv_lines.next().unwrap();
    assert!(
        row.starts_with("HighRequestLatency,Deployment/shop/checkout,scale:by=1,1,1,1.000,"),
        "{csv}"
    );
    let (_, json_stats, _) = salve(&["stats", "--database", db, "-o", "json"]);
    let json_stats: Value = serde_json::from_str(&json_stats).unwrap();
    assert_eq!(json_stats[0]["healed"], 1, "{json_stats:#}");
    let (_, table, _) = salve(&["stats", "--database", db]);
    assert!(
        table.starts_with("ALERT") && table.contains("100%"),
        "{table}"
    );

    // replay: CSV and JSON, not the table.
    let policies = s.dir.path().join("policies");
    let policies = policies.to_str().unwrap();
    let (_, csv, stderr) = salve(&[
        "replay",
        "--database",
        db,
        "--policies",
        policies,
        "-o",
        "csv",
    ]);
    assert_eq!(
        csv.lines().next(),
        Some("remediation_id,at,change,rule,action,target,old_reasons,new_reasons"),
        "{csv}{stderr}"
    );
    let (_, json_replay, _) = salve(&[
        "replay",
        "--database",
        db,
        "--policies",
        policies,
        "-o",
        "json",
    ]);
    let json_replay: Value = serde_json::from_str(&json_replay).unwrap();
    assert_eq!(json_replay["evaluated"], 1, "{json_replay:#}");
    assert_eq!(json_replay["unchanged"], 1, "{json_replay:#}");
}

/// The shipped rules match kube-prometheus alerts as those alerts are labelled, and
/// run in shadow mode: decided, judged and dry-run, never written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_examples_shadow_kube_prometheus_alerts() {
    let (code, stdout, stderr) = salve(&["rules", "check", "policies"]);
    assert_eq!((code, stdout.as_str()), (0, "ok: 5 rules\n"), "{stderr}");
    let kube = FakeKube::start().await;
    kube.add_deployment("shop", "cart", 3, "cart:2.0");
    kube.add_deployment("shop", "search", 4, "search:1.1");
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    kube.add_deployment("shop", "api", 2, "api:1.0");
    kube.set_image("shop", "api", "api:1.1");
    let crashing_pod = kube.add_pod_of("shop", "api");
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/rules.yaml"))
            .unwrap();
    let s = spawn_salve(Options {
        kube: Some(kube.clone()),
        rules: Some(shipped),
        ..Options::default()
    })
    .await;
    // The labels kubernetes-mixin's alerts carry (kube-state-metrics series), and a
    // Sloth page alert of a latency SLO.
    let ksm = |extra: Value| {
        let mut labels = json!({
            "job": "kube-state-metrics", "namespace": "shop", "severity": "warning",
            "container": "kube-state-metrics", "endpoint": "http",
            "instance": "10.0.3.7:8080", "pod": "kube-state-metrics-6d8c7b-x2x4q",
            "service": "kube-state-metrics", "prometheus": "monitoring/k8s"
        });
        labels
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        labels
    };
    for (labels, fingerprint) in [
        (
            ksm(json!({"alertname": "KubeDeploymentReplicasMismatch", "deployment": "cart"})),
            "00000000000e0001",
        ),
        (
            ksm(json!({"alertname": "KubeHpaMaxedOut", "horizontalpodautoscaler": "search"})),
            "00000000000e0002",
        ),
        (
            json!({
                "alertname": "CheckoutLatencySLOBurn", "namespace": "shop", "deployment": "checkout",
                "sloth_id": "checkout-requests-latency", "sloth_service": "checkout",
                "sloth_slo": "requests-latency", "sloth_severity": "page", "severity": "critical"
            }),
            "00000000000e0003",
        ),
        (
            ksm(
                json!({"alertname": "KubePodCrashLooping", "pod": crashing_pod,
                       "container": "app", "reason": "CrashLoopBackOff"}),
            ),
            "00000000000e0004",
        ),
    ] {
        s.post_alerts(&firing_with(labels, fingerprint)).await;
    }
    // A shadow run watches the alert for the rule's window (minutes) after its dry-run.
    let items = s.reached(4, &["pending", "shadowed"]).await;
    eventually("four dry-runs", Duration::from_secs(30), async || {
        let dry_runs = kube.requests().iter().filter(|w| w.dry_run()).count();
        if dry_runs == 4 {
            Ok(())
        } else {
            Err(format!(
                "{:?} {}",
                kube.requests(),
                s.detail(items[0]["id"].as_str().unwrap()).await
            ))
        }
    })
    .await;
    let mut rules: Vec<(String, String)> = items
        .iter()
        .map(|r| {
            (
                r["rule"].as_str().unwrap().to_owned(),
                r["target"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    rules.sort();
    assert_eq!(
        rules,
        [
            ("kube-deployment-replicas-mismatch".into(), "cart".into()),
            ("kube-hpa-maxed-out".into(), "search".into()),
            ("kube-pod-crashlooping-rollback".into(), "api".into()),
            ("latency-slo-ladder".into(), "checkout".into()),
        ]
    );
    assert!(
        kube.writes().is_empty(),
        "shadow rules wrote: {:?}",
        kube.writes()
    );
}

/// The routes the router serves, as written in its source: `.route("PATH", get(..).post(..))`.
fn served_routes() -> std::collections::BTreeSet<(String, String)> {
    let route = regex::Regex::new(
        r#"\.route\(\s*"([^"]+)",\s*((?s).*?)\)\s*(?:\.route|;|\)|\.with_state|\.layer|\.merge|$)"#,
    )
    .unwrap();
    let method = regex::Regex::new(r"\b(get|post|delete|put|patch)\(").unwrap();
    let mut routes = std::collections::BTreeSet::new();
    for file in ["src/api/mod.rs", "src/ingest/mod.rs"] {
        let text =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap();
        for r in route.captures_iter(&text) {
            for m in method.captures_iter(&r[2]) {
                routes.insert((m[1].to_owned(), r[1].to_owned()));
            }
        }
    }
    routes
}

/// The OpenAPI document names every operation, says which fields are always there, and
/// describes exactly the routes the router serves (the audit page's HTML aside).
#[tokio::test]
async fn the_openapi_document_is_complete_and_matches_the_router() {
    let s = spawn_salve(Options::default()).await;
    let (_, doc) = s.get("/api/v1/openapi.json").await;
    let mut documented = std::collections::BTreeSet::new();
    let mut ids = std::collections::BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let id = op["operationId"].as_str();
            assert!(
                id.is_some_and(|i| !i.is_empty()),
                "{method} {path} has no operationId"
            );
            assert!(
                ids.insert(id.unwrap().to_owned()),
                "operationId {id:?} twice"
            );
            documented.insert((method.clone(), path.clone()));
        }
    }
    let served: std::collections::BTreeSet<_> = served_routes()
        .into_iter()
        .filter(|(_, path)| !path.starts_with("/ui"))
        .collect();
    assert!(
        served.len() >= 15,
        "the source scan found too few routes: {served:?}"
    );
    assert_eq!(
        served.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "served but not documented"
    );
    assert_eq!(
        documented.difference(&served).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "documented but not served"
    );
    // Every object schema lists what is required; what salve serves has those fields,
    // and only documented ones.
    let schemas = &doc["components"]["schemas"];
    for (name, schema) in schemas.as_object().unwrap() {
        if schema.get("properties").is_some() {
            assert!(
                schema["required"].is_array(),
                "schema {name} has no required list"
            );
        }
    }
    s.post_alerts(&firing_for(
        "HighRequestLatency",
        "shop",
        "checkout",
        "00000000000f1c01",
    ))
    .await;
    let items = s.settled(1).await;
    let check = |name: &str, served: &Value| {
        let schema = &schemas[name];
        let fields: std::collections::BTreeSet<&str> = served
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let properties: std::collections::BTreeSet<&str> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let required: std::collections::BTreeSet<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        assert!(
            required.is_subset(&fields),
            "{name}: required {required:?}, served {fields:?}"
        );
        assert!(
            fields.is_subset(&properties),
            "{name}: served {fields:?}, documented {properties:?}"
        );
    };
    check("Remediation", &items[0]);
    let (_, alerts) = s.get("/api/v1/alerts").await;
    check("AlertsPage", &alerts);
    check("Incident", &alerts["items"][0]);
}

/// Offline there is no cluster to find a Pod's workload in: the alert is recorded with
/// that reason, and nothing is opened.
#[tokio::test]
async fn offline_a_pod_alert_has_no_target_and_says_why() {
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/rules.yaml"))
            .unwrap();
    let s = spawn_salve(Options {
        rules: Some(shipped),
        ..Options::default()
    })
    .await;
    s.post_alerts(&firing_with(
        json!({"alertname": "KubePodCrashLooping", "namespace": "shop",
               "pod": "api-7d9f8c6b5-x2x4q", "job": "kube-state-metrics", "severity": "warning"}),
        "00000000000e0101",
    ))
    .await;
    let (_, alerts) = eventually("the decision", Duration::from_secs(10), async || {
        let (status, page) = s.get("/api/v1/alerts").await;
        match page["items"][0]["decision"].as_str() {
            Some("undecided") | None => Err(page.to_string()),
            Some(_) => Ok((status, page)),
        }
    })
    .await;
    assert_eq!(alerts["items"][0]["decision"], "no_target");
    assert_eq!(
        alerts["items"][0]["decision_reason"],
        "rule kube-pod-crashlooping-rollback matched but cannot name its target: the target is the workload running Pod shop/api-7d9f8c6b5-x2x4q, and salve runs offline, so it cannot look that up"
    );
    assert!(s.remediations().await.is_empty());
}
