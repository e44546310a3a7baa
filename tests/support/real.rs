//! Real Prometheus and Alertmanager (Debian's `prometheus` and `prometheus-alertmanager`)
//! on loopback ports chosen at run time, with configuration files the test writes, and
//! a tiny exporter whose one gauge the test sets.
//!
//! When the binaries are missing, [`binaries_present`] says so loudly and the test
//! skips; under CI (`CI` set) it fails instead.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::process::{Child, Command};

/// Whether both binaries are on PATH; panics under CI when they are not.
pub fn binaries_present() -> bool {
    let missing: Vec<&str> = ["prometheus", "prometheus-alertmanager"]
        .into_iter()
        .filter(|b| !super::installed(b, &["--version"]))
        .collect();
    if missing.is_empty() {
        return true;
    }
    super::component_missing(
        &format!("{missing:?} (Debian packages prometheus, prometheus-alertmanager)"),
        "the real Prometheus/Alertmanager test",
    );
    false
}

/// A free loopback port for a child process to listen on, *below* the kernel's
/// ephemeral range. A port the kernel hands out (port 0) and that was released can be
/// taken again by any outgoing connection before the child binds it: that once kept the
/// apiserver from starting, and later Prometheus ("bind: address already in use"). Below
/// the range only an explicit bind takes a port. A port is given once per test process
/// (two taken before either is bound must differ), and one that does not bind now (a
/// child of an earlier test still holds it) is passed over.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<std::collections::BTreeSet<u16>> =
        Mutex::new(std::collections::BTreeSet::new());
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| {
            r.split_whitespace()
                .next()
                .and_then(|p| p.parse::<u16>().ok())
        })
        .unwrap_or(32768);
    let low = 20000.min(ephemeral_start.saturating_sub(4000));
    let span = u32::from(ephemeral_start - low);
    let seed = uuid::Uuid::new_v4().as_u128();
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for i in 0..span {
        let port = low + ((seed as u32).wrapping_add(i) % span) as u16;
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free loopback port below {ephemeral_start}")
}

/// An exporter serving `checkout_latency_seconds{namespace="shop",deployment="checkout"}`.
pub struct Exporter {
    pub port: u16,
    value: Arc<Mutex<f64>>,
}

impl Exporter {
    /// Starts serving `/metrics` with the gauge at `initial`.
    pub async fn start(initial: f64) -> Exporter {
        let value = Arc::new(Mutex::new(initial));
        let shared = value.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let v = *shared.lock().unwrap();
                async move {
                    format!(
                        "# TYPE checkout_latency_seconds gauge\ncheckout_latency_seconds{{namespace=\"shop\",deployment=\"checkout\"}} {v}\n"
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Exporter { port, value }
    }

    /// Sets the gauge.
    pub fn set(&self, v: f64) {
        *self.value.lock().unwrap() = v;
    }
}

/// A running child process, killed when dropped; its output goes to a log file.
pub struct Process {
    pub url: reqwest::Url,
    pub log: PathBuf,
    _child: Child,
}

async fn spawn(program: &str, args: &[String], dir: &Path, port: u16) -> Process {
    let log = dir.join(format!("{program}.log"));
    let file = std::fs::File::create(&log).unwrap();
    let child = Command::new(program)
        .args(args)
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let url: reqwest::Url = format!("http://127.0.0.1:{port}/").parse().unwrap();
    let ready = url.join("-/ready").unwrap();
    let what = format!("{program} to be ready");
    super::eventually(&what, Duration::from_secs(30), async || {
        match reqwest::get(ready.clone()).await {
            Ok(r) if r.status().is_success() => Ok(()),
            // Its log says why it is not up yet.
            _ => Err(std::fs::read_to_string(&log).unwrap_or_default()),
        }
    })
    .await;
    Process {
        url,
        log,
        _child: child,
    }
}

/// Starts Alertmanager routing everything to `webhook` (salve), except salve's own
/// escalations, which go to a receiver for humans. An alert `NodeDown` inhibits every
/// other alert of its namespace.
pub async fn alertmanager_on(dir: &Path, webhook: &str, port: u16) -> Process {
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: salve\n  group_by: [alertname, namespace]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n  routes:\n    - receiver: humans\n      matchers: ['alertname=\"SalveRemediationFailed\"']\nreceivers:\n  - name: humans\n  - name: salve\n    webhook_configs:\n      - url: {webhook}\n        send_resolved: true\n        max_alerts: 0\ninhibit_rules:\n  - source_matchers: ['alertname=\"NodeDown\"']\n    target_matchers: ['alertname!=\"NodeDown\"']\n    equal: [namespace]\n"
        ),
    )
    .unwrap();
    let args = vec![
        format!("--config.file={}", config.display()),
        format!("--storage.path={}", dir.join("am-data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--cluster.listen-address=".to_owned(),
    ];
    spawn("prometheus-alertmanager", &args, dir, port).await
}

/// Starts Prometheus scraping the exporter every second and alerting to `alertmanager`
/// with `HighRequestLatency` when the gauge is above 0.5. With `salve` (host:port) it
/// also scrapes salve's `/metrics` as job `salve` and loads salve's own alerts
/// (`deploy/monitoring/prometheusrule.yaml`), as the shipped ServiceMonitor and
/// PrometheusRule make the Prometheus Operator do.
pub async fn prometheus_on(
    dir: &Path,
    exporter_port: u16,
    alertmanager: &reqwest::Url,
    port: u16,
    salve: Option<&str>,
) -> Process {
    let rules = dir.join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: salve-test\n    rules:\n      - alert: HighRequestLatency\n        expr: checkout_latency_seconds > 0.5\n        for: 0s\n        labels:\n          severity: critical\n        annotations:\n          summary: p99 latency above 500ms on {{ $labels.deployment }}\n",
    )
    .unwrap();
    let salve_rules = dir.join("salve-rules.yml");
    std::fs::write(&salve_rules, salve_rule_groups()).unwrap();
    let salve_job = match salve {
        Some(target) => {
            format!("  - job_name: salve\n    static_configs:\n      - targets: ['{target}']\n")
        }
        None => String::new(),
    };
    let am = alertmanager.host_str().unwrap().to_owned()
        + ":"
        + &alertmanager.port().unwrap().to_string();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{am}']\nrule_files: ['{}', '{}']\nscrape_configs:\n  - job_name: checkout\n    static_configs:\n      - targets: ['127.0.0.1:{exporter_port}']\n{salve_job}",
            rules.display(),
            salve_rules.display(),
        ),
    )
    .unwrap();
    let args = vec![
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", dir.join("prom-data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
    ];
    spawn("prometheus", &args, dir, port).await
}

/// The rule groups of salve's shipped PrometheusRule (`spec`), as a Prometheus rule file.
pub fn salve_rule_groups() -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/monitoring/prometheusrule.yaml"
    ))
    .unwrap();
    let rule: serde_json::Value = serde_norway::from_str(&text).unwrap();
    serde_norway::to_string(&rule["spec"]).unwrap()
}
