//! salve's own metrics, served at `/metrics`, named by Prometheus's conventions (base
//! units, `_total` counters, `salve_` prefix).
//!
//! Each stage counts what it did where it does it: the webhook its answers and the
//! alerts it took, the engine its decisions, verdicts, Kubernetes calls, verification
//! polls, refusals and escalations. What lives in the database (remediations in
//! flight, replicas' heartbeats) is read when Prometheus scrapes, so every replica
//! reports the same shared truth.
//!
//! The registry encodes OpenMetrics; [`Exposition`] also gives the classic text format
//! (0.0.4) to clients that do not ask for OpenMetrics, as Prometheus's own Go client
//! does, so `promtool check metrics` and older scrapers read it too.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::engine::Decisions;

/// A metric's labels: names fixed in code, values from what happened.
type Labels = Vec<(&'static str, String)>;
type Counters = Family<Labels, Counter>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// Every metric salve exports. One per process, shared by `Arc`.
pub struct Metrics {
    registry: Registry,
    /// Every series name this registry can expose (see [`Metrics::series_names`]).
    names: Vec<String>,
    reload_successful: Gauge,
    reload_success_time: Gauge,
    rules_loaded: Gauge,
    policy_info: Family<Labels, Gauge>,
    webhook_requests: Counters,
    alerts_received: Counters,
    incidents_decided: Counters,
    remediations_finished: Counters,
    step_outcomes: Counters,
    time_to_heal: Histograms,
    policy_duration: Histogram,
    policy_verdicts: Counters,
    kube_requests: Counters,
    kube_duration: Histograms,
    verification_polls: Counters,
    escalation_deliveries: Counters,
    workload_busy: Counter,
    refusals: Counters,
    remediations_in_flight: Family<Labels, Gauge>,
    paused: Family<Labels, Gauge>,
    replicas: Family<Labels, Gauge>,
    database_errors: Counters,
    writer_batches: Counter,
    writer_writes: Counters,
    writer_waiting: Family<Labels, Gauge>,
    writer_busy: Family<Labels, Counter<f64, std::sync::atomic::AtomicU64>>,
    engine_incidents: Family<Labels, Gauge>,
}

/// Registers metrics and remembers the names their series take, so a check can tell
/// what salve exports before any series exists (a family without series is not shown).
#[derive(Default)]
struct Registrar {
    registry: Registry,
    names: Vec<String>,
}

impl Registrar {
    fn register<M: prometheus_client::registry::Metric + Clone>(
        &mut self,
        name: &str,
        help: &str,
        metric: M,
    ) {
        self.remember(name, &metric);
        self.registry.register(name, help, metric);
    }

    fn register_with_unit<M: prometheus_client::registry::Metric + Clone>(
        &mut self,
        name: &str,
        help: &str,
        unit: Unit,
        metric: M,
    ) {
        let full = format!("{name}_{}", unit.as_str());
        self.remember(&full, &metric);
        self.registry.register_with_unit(name, help, unit, metric);
    }

    fn remember<M: prometheus_client::encoding::EncodeMetric>(&mut self, name: &str, metric: &M) {
        use prometheus_client::metrics::MetricType;
        let suffixes: &[&str] = match metric.metric_type() {
            MetricType::Counter => &["_total"],
            MetricType::Histogram => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        for suffix in suffixes {
            self.names.push(format!("{name}{suffix}"));
        }
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

fn policy_buckets() -> Histogram {
    // 10 µs .. ~0.6 s: a verdict is tens of microseconds; a runaway policy hits the limit.
    Histogram::new(exponential_buckets(0.000_01, 3.0, 11))
}

fn kube_buckets() -> Histogram {
    // 5 ms .. ~20 s (the call time limit is 30 s).
    Histogram::new(exponential_buckets(0.005, 2.5, 10))
}

fn heal_buckets() -> Histogram {
    // 5 s .. ~40 min: from a quick restart to a slow StatefulSet rollout.
    Histogram::new(exponential_buckets(5.0, 2.0, 10))
}

fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut r = Registrar::default();
        let build_info = Family::<Labels, Gauge>::default();
        r.register(
            "salve_build_info",
            "A metric with a constant 1 value labelled by the version salve was built from",
            build_info.clone(),
        );
        build_info
            .get_or_create(&labels([("version", env!("CARGO_PKG_VERSION"))]))
            .set(1);
        let reload_successful = Gauge::default();
        r.register(
            "salve_config_last_reload_successful",
            "Whether the last reload of rules and policy succeeded (1) or kept the old set (0)",
            reload_successful.clone(),
        );
        let reload_success_time = Gauge::default();
        r.register(
            "salve_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful reload of rules and policy",
            reload_success_time.clone(),
        );
        let rules_loaded = Gauge::default();
        r.register(
            "salve_rules_loaded",
            "Remediation rules in force (0 means salve records alerts but remediates none)",
            rules_loaded.clone(),
        );
        let policy_info = Family::default();
        r.register(
            "salve_policy",
            "The policy set in force: 1, labelled with its hash and the directory's version",
            policy_info.clone(),
        );
        let webhook_requests = Counters::default();
        r.register(
            "salve_webhook_requests",
            "Alertmanager webhook requests answered, by HTTP status code",
            webhook_requests.clone(),
        );
        let alerts_received = Counters::default();
        r.register(
            "salve_alerts_received",
            "Alerts in acknowledged webhook deliveries, by status (firing, resolved)",
            alerts_received.clone(),
        );
        let incidents_decided = Counters::default();
        r.register(
            "salve_incidents_decided",
            "Incidents the engine decided, by decision (remediation, no_rule, no_target)",
            incidents_decided.clone(),
        );
        let remediations_finished = Counters::default();
        r.register(
            "salve_remediations_finished",
            "Remediations that reached a final state, by rule, action and state",
            remediations_finished.clone(),
        );
        let step_outcomes = Counters::default();
        r.register(
            "salve_step_outcomes",
            "Steps of remediation ladders, by action and outcome",
            step_outcomes.clone(),
        );
        let time_to_heal = Histograms::new_with_constructor(heal_buckets);
        r.register_with_unit(
            "salve_time_to_heal",
            "Time from salve's change to the alert verified resolved, by action",
            Unit::Seconds,
            time_to_heal.clone(),
        );
        let policy_duration = policy_buckets();
        r.register_with_unit(
            "salve_policy_evaluation_duration",
            "Time to evaluate the policy for one change (queueing on the evaluation pool included)",
            Unit::Seconds,
            policy_duration.clone(),
        );
        let policy_verdicts = Counters::default();
        r.register(
            "salve_policy_verdicts",
            "Policy verdicts, by verdict (allow, deny, error: the policy could not be evaluated, so deny)",
            policy_verdicts.clone(),
        );
        let kube_requests = Counters::default();
        r.register(
            "salve_kubernetes_requests",
            "Kubernetes API requests, by verb, resource and status code (0: no answer)",
            kube_requests.clone(),
        );
        let kube_duration = Histograms::new_with_constructor(kube_buckets);
        r.register_with_unit(
            "salve_kubernetes_request_duration",
            "Kubernetes API request duration, by verb and resource",
            Unit::Seconds,
            kube_duration.clone(),
        );
        let verification_polls = Counters::default();
        r.register(
            "salve_verification_polls",
            "Verification polls, by what the rollout and the alert showed",
            verification_polls.clone(),
        );
        let escalation_deliveries = Counters::default();
        r.register(
            "salve_escalation_deliveries",
            "Escalation deliveries, by notifier and result (delivered, failed)",
            escalation_deliveries.clone(),
        );
        let workload_busy = Counter::default();
        r.register(
            "salve_workload_busy_skips",
            "Remediations skipped because another remediation held the workload's lock",
            workload_busy.clone(),
        );
        let refusals = Counters::default();
        r.register(
            "salve_refusals",
            "Changes salve refused itself before policy, by reason (cooldown, rate_limit)",
            refusals.clone(),
        );
        let remediations_in_flight = Family::default();
        r.register(
            "salve_remediations_in_flight",
            "Remediations not yet finished, by state, across all replicas (read from the knowledge base at scrape)",
            remediations_in_flight.clone(),
        );
        let paused = Family::default();
        r.register(
            "salve_paused",
            "Operators' pauses in force (read from the knowledge base at scrape): 1 per pause, by scope (everywhere, namespace) and namespace; a namespace annotated salve.io/paused is not listed",
            paused.clone(),
        );
        let replicas = Family::default();
        r.register(
            "salve_replicas",
            "Replicas sharing the knowledge base: live (heartbeat current), lapsed (heartbeat expired in the last hour without a clean stop)",
            replicas.clone(),
        );
        let database_errors = Counters::default();
        r.register(
            "salve_database_errors",
            "Knowledge-base operations that failed, by operation (write, ping, scrape)",
            database_errors.clone(),
        );
        let writer_batches = Counter::default();
        r.register(
            "salve_store_batches",
            "Transactions this replica's writer committed: each a batch of writes and one sync to disk",
            writer_batches.clone(),
        );
        let writer_writes = Counters::default();
        r.register(
            "salve_store_writes",
            "Writes this replica's writer committed, by kind (delivery: a webhook delivery; engine: one of the engine's writes)",
            writer_writes.clone(),
        );
        let writer_waiting = Family::default();
        r.register(
            "salve_store_writes_waiting",
            "Writes waiting for this replica's writer, by kind: a backlog that keeps growing is a writer that cannot keep up",
            writer_waiting.clone(),
        );
        let writer_busy = Family::default();
        r.register_with_unit(
            "salve_store_busy",
            "Time this replica's writer spent, by part (engine: the engine's writes; delivery: storing webhook deliveries; commit: ending batches, with their sync to disk): under load, which of them holds acknowledgements and decisions up",
            Unit::Seconds,
            writer_busy.clone(),
        );
        let engine_incidents = Family::default();
        r.register(
            "salve_engine_incidents",
            "Incidents this replica's engine holds, by state (waiting: queued for a decision; deciding: being decided or driven): a waiting count that keeps growing is an engine behind a storm",
            engine_incidents.clone(),
        );
        Metrics {
            names: r.names,
            registry: r.registry,
            reload_successful,
            reload_success_time,
            rules_loaded,
            policy_info,
            webhook_requests,
            alerts_received,
            incidents_decided,
            remediations_finished,
            step_outcomes,
            time_to_heal,
            policy_duration,
            policy_verdicts,
            kube_requests,
            kube_duration,
            verification_polls,
            escalation_deliveries,
            workload_busy,
            refusals,
            remediations_in_flight,
            paused,
            replicas,
            database_errors,
            writer_batches,
            writer_writes,
            writer_waiting,
            writer_busy,
            engine_incidents,
        }
    }

    /// Every series name salve can export (`salve_webhook_requests_total`,
    /// `salve_time_to_heal_seconds_bucket`, …), whether or not a series exists yet: what
    /// dashboards and alert rules may read.
    pub fn series_names(&self) -> &[String] {
        &self.names
    }

    /// Records a reload's outcome and describes the set now in force (after a failed
    /// reload, still the old one).
    pub fn reloaded(&self, ok: bool, in_force: &Decisions) {
        self.reload_successful.set(i64::from(ok));
        if ok {
            self.reload_success_time.set(chrono::Utc::now().timestamp());
        }
        self.rules_loaded
            .set(i64::try_from(in_force.rules.rules.len()).unwrap_or(i64::MAX));
        self.policy_info.clear();
        self.policy_info
            .get_or_create(&labels([
                ("policy_hash", &in_force.policy.hash),
                ("version", &in_force.version),
            ]))
            .set(1);
    }

    /// The webhook answered with `code`.
    pub fn webhook_answered(&self, code: u16) {
        self.webhook_requests
            .get_or_create(&labels([("code", &code.to_string())]))
            .inc();
    }

    /// An acknowledged delivery held `firing` and `resolved` alerts.
    pub fn alerts_received(&self, firing: usize, resolved: usize) {
        for (status, n) in [("firing", firing), ("resolved", resolved)] {
            if n > 0 {
                self.alerts_received
                    .get_or_create(&labels([("status", status)]))
                    .inc_by(n as u64);
            }
        }
    }

    /// An incident was decided so.
    pub fn incident_decided(&self, decision: &str) {
        self.incidents_decided
            .get_or_create(&labels([("decision", decision)]))
            .inc();
    }

    /// A remediation reached its final state.
    pub fn remediation_finished(&self, rule: &str, action: &str, state: &str) {
        self.remediations_finished
            .get_or_create(&labels([
                ("rule", rule),
                ("action", action),
                ("state", state),
            ]))
            .inc();
    }

    /// A ladder step ended with `outcome`; a healed one took `seconds_to_heal`.
    pub fn step_finished(&self, action: &str, outcome: &str, seconds_to_heal: Option<f64>) {
        self.step_outcomes
            .get_or_create(&labels([("action", action), ("outcome", outcome)]))
            .inc();
        if let Some(s) = seconds_to_heal {
            self.time_to_heal
                .get_or_create(&labels([("action", action)]))
                .observe(s);
        }
    }

    /// The policy judged one change in `took`: allowed, denied, or not evaluable.
    pub fn policy_evaluated(&self, took: Duration, verdict: &str) {
        self.policy_duration.observe(took.as_secs_f64());
        self.policy_verdicts
            .get_or_create(&labels([("verdict", verdict)]))
            .inc();
    }

    /// One Kubernetes API request and its answer (`code` 0: none came).
    pub fn kubernetes_request(&self, verb: &str, path: &str, code: u16, took: Duration) {
        let resource = resource_of(path);
        self.kube_requests
            .get_or_create(&labels([
                ("verb", verb),
                ("resource", &resource),
                ("code", &code.to_string()),
            ]))
            .inc();
        self.kube_duration
            .get_or_create(&labels([("verb", verb), ("resource", &resource)]))
            .observe(took.as_secs_f64());
    }

    /// One verification poll saw the rollout and the alert so.
    pub fn verification_poll(&self, rollout: &str, alert: &str) {
        self.verification_polls
            .get_or_create(&labels([("rollout", rollout), ("alert", alert)]))
            .inc();
    }

    /// One escalation delivery to `notifier`.
    pub fn escalation_delivery(&self, notifier: &str, delivered: bool) {
        let result = if delivered { "delivered" } else { "failed" };
        self.escalation_deliveries
            .get_or_create(&labels([("notifier", notifier), ("result", result)]))
            .inc();
    }

    /// A remediation found its workload locked by another.
    pub fn workload_busy(&self) {
        self.workload_busy.inc();
    }

    /// salve refused a change itself (`cooldown`, `rate_limit`).
    pub fn refused(&self, reason: &str) {
        self.refusals
            .get_or_create(&labels([("reason", reason)]))
            .inc();
    }

    /// A knowledge-base operation failed.
    pub fn database_error(&self, operation: &str) {
        self.database_errors
            .get_or_create(&labels([("operation", operation)]))
            .inc();
    }

    /// This replica's writer now (read at scrape: it keeps its own tally).
    pub fn observe_writer(&self, load: &crate::store::writer::WriterLoad) {
        let store = |counter: &Counter, n: u64| {
            counter
                .inner()
                .store(n, std::sync::atomic::Ordering::Relaxed)
        };
        store(&self.writer_batches, load.batches);
        for (kind, committed, waiting) in [
            ("delivery", load.deliveries, load.deliveries_waiting),
            ("engine", load.engine_writes, load.engine_writes_waiting),
        ] {
            let kind = labels([("kind", kind)]);
            store(&self.writer_writes.get_or_create(&kind), committed);
            let waiting = i64::try_from(waiting).unwrap_or(i64::MAX);
            self.writer_waiting.get_or_create(&kind).set(waiting);
        }
        for (part, spent) in [
            ("engine", load.busy.engine_writes),
            ("delivery", load.busy.deliveries),
            ("commit", load.busy.commits),
        ] {
            let seconds = self.writer_busy.get_or_create(&labels([("part", part)]));
            seconds.inner().store(
                spent.as_secs_f64().to_bits(),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
    }

    /// How many incidents wait in the engine's queue for a decision.
    pub fn incidents_waiting(&self, n: usize) {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        self.engine_incidents
            .get_or_create(&labels([("state", "waiting")]))
            .set(n);
    }

    /// One more (`true`) or one fewer incident being decided or driven by the engine.
    pub fn incident_deciding(&self, started: bool) {
        let deciding = self
            .engine_incidents
            .get_or_create(&labels([("state", "deciding")]));
        if started {
            deciding.inc();
        } else {
            deciding.dec();
        }
    }

    /// What the knowledge base says now: unfinished remediations by state, replicas, and
    /// the pauses in force (by namespace; `None` is every namespace).
    pub fn observe_store(
        &self,
        in_flight: &[(String, i64)],
        (live, lapsed): (i64, i64),
        pauses: &[Option<String>],
    ) {
        self.paused.clear();
        for namespace in pauses {
            let scope = if namespace.is_some() {
                "namespace"
            } else {
                "everywhere"
            };
            self.paused
                .get_or_create(&labels([
                    ("scope", scope),
                    ("namespace", namespace.as_deref().unwrap_or_default()),
                ]))
                .inc();
        }
        self.remediations_in_flight.clear();
        for (state, n) in in_flight {
            self.remediations_in_flight
                .get_or_create(&labels([("state", state)]))
                .set(*n);
        }
        self.replicas
            .get_or_create(&labels([("state", "live")]))
            .set(live);
        self.replicas
            .get_or_create(&labels([("state", "lapsed")]))
            .set(lapsed);
    }

    /// The exposition in the format the client asked for.
    pub fn encode(&self, format: Exposition) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        match format {
            Exposition::OpenMetrics => out,
            Exposition::Text => classic_text(&out),
        }
    }
}

/// The two text formats of `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposition {
    /// `application/openmetrics-text; version=1.0.0`, for clients that ask for it.
    OpenMetrics,
    /// `text/plain; version=0.0.4`, the default.
    Text,
}

impl Exposition {
    /// Picks the format from the request's `Accept` header, as Prometheus negotiates.
    pub fn from_accept(accept: Option<&str>) -> Exposition {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Exposition::OpenMetrics,
            _ => Exposition::Text,
        }
    }

    /// The response's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Exposition::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// OpenMetrics to the classic text format: a counter's family takes its samples'
/// `_total` name, `# UNIT` and `# EOF` go (the classic format has neither).
fn classic_text(open_metrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in open_metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                counters.insert(name.to_owned());
            }
        }
    }
    let mut out = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// The resource a Kubernetes API path names (`deployments`, `deployments/scale`,
/// `events`, `replicasets`), without namespace or name, so label values stay few.
fn resource_of(path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let after_ns = parts
        .iter()
        .position(|p| *p == "namespaces")
        .and_then(|i| parts.get(i + 2..))
        .filter(|rest| !rest.is_empty());
    let rest: &[&str] = match after_ns {
        Some(rest) => rest,
        // Cluster-scoped: /api/v1/RES[/name[/sub]] or /apis/GROUP/VERSION/RES[...]
        None => match parts.first() {
            Some(&"api") => parts.get(2..).unwrap_or(&[]),
            Some(&"apis") => parts.get(3..).unwrap_or(&[]),
            _ => &[],
        },
    };
    match rest {
        [] => "unknown".to_owned(),
        [resource] | [resource, _] => (*resource).to_owned(),
        [resource, _, sub, ..] => format!("{resource}/{sub}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_named_without_namespace_or_name() {
        for (path, want) in [
            (
                "/apis/apps/v1/namespaces/shop/deployments/web",
                "deployments",
            ),
            (
                "/apis/apps/v1/namespaces/shop/deployments/web/scale",
                "deployments/scale",
            ),
            (
                "/apis/apps/v1/namespaces/shop/replicasets?labelSelector=a%3Db",
                "replicasets",
            ),
            ("/api/v1/namespaces/shop/events", "events"),
            ("/api/v1/namespaces/shop", "namespaces"),
            ("/api/v1/nodes/n1", "nodes"),
            ("/version", "unknown"),
        ] {
            assert_eq!(resource_of(path), want, "{path}");
        }
    }

    #[test]
    fn the_classic_format_names_counter_families_by_their_samples() {
        let m = Metrics::new();
        m.webhook_answered(401);
        m.policy_evaluated(Duration::from_micros(30), "allow");
        let text = m.encode(Exposition::Text);
        assert!(
            text.contains("# TYPE salve_webhook_requests_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("salve_webhook_requests_total{code=\"401\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE salve_policy_evaluation_duration_seconds histogram\n"));
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        let open = m.encode(Exposition::OpenMetrics);
        assert!(
            open.contains("# TYPE salve_webhook_requests counter\n"),
            "{open}"
        );
        assert!(open.ends_with("# EOF\n"));
    }

    /// The writer keeps its own tally; each scrape shows it as it is then, not added up.
    #[test]
    fn the_writers_load_is_shown_as_it_is_at_each_scrape() {
        let m = Metrics::new();
        let mut load = crate::store::writer::WriterLoad {
            batches: 3,
            engine_writes: 7,
            deliveries: 5,
            engine_writes_waiting: 2,
            deliveries_waiting: 0,
            busy: crate::store::writer::WriterBusy {
                engine_writes: std::time::Duration::from_millis(1500),
                deliveries: std::time::Duration::from_millis(250),
                commits: std::time::Duration::from_secs(2),
            },
        };
        m.observe_writer(&load);
        load.batches = 4;
        load.deliveries = 9;
        load.engine_writes_waiting = 0;
        load.deliveries_waiting = 6;
        load.busy.commits = std::time::Duration::from_millis(3250);
        m.observe_writer(&load);
        let text = m.encode(Exposition::Text);
        for want in [
            "salve_store_batches_total 4\n",
            "salve_store_writes_total{kind=\"delivery\"} 9\n",
            "salve_store_writes_total{kind=\"engine\"} 7\n",
            "salve_store_writes_waiting{kind=\"delivery\"} 6\n",
            "salve_store_writes_waiting{kind=\"engine\"} 0\n",
            "salve_store_busy_seconds_total{part=\"engine\"} 1.5\n",
            "salve_store_busy_seconds_total{part=\"delivery\"} 0.25\n",
            "salve_store_busy_seconds_total{part=\"commit\"} 3.25\n",
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
    }

    #[test]
    fn the_format_follows_the_accept_header() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(
            Exposition::from_accept(Some(prometheus)),
            Exposition::OpenMetrics
        );
        assert_eq!(Exposition::from_accept(Some("*/*")), Exposition::Text);
        assert_eq!(Exposition::from_accept(None), Exposition::Text);
    }
}
