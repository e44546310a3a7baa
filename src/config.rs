//! Command line and environment: one clap struct documents every flag and variable.
//!
//! Settings are validated once, at start-up, into [`ServeSettings`]; a bad setting is a
//! clear message and exit code 2 before anything listens. Secrets come from files or
//! environment variables and are never printed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::engine::Limits;
use crate::ingest::WebhookAuth;
use crate::policy::pool::PoolLimits;
use crate::policy::{RegoOptions, Syntax};
use crate::server::ConnectionLimits;

/// salve: self-healing remediation for Kubernetes, driven by Alertmanager.
#[derive(Debug, Parser)]
#[command(name = "salve", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook, the engine and the audit API.
    Serve(Box<ServeArgs>),
    /// List what salve did, newest first.
    History(HistoryArgs),
    /// List received alerts, newest first, with what salve decided for each (the
    /// history's filters select alerts by the remediation they led to).
    Alerts(AlertsArgs),
    /// Show one remediation with its full timeline.
    Show {
        #[command(flatten)]
        database: DatabaseArgs,
        /// The remediation's id.
        id: String,
    },
    /// Check or maintain the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Apply the database migrations and exit.
    Migrate {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Work with the Rego policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Work with the remediation rules.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Re-judge past decisions under another policy directory (nothing touches a cluster).
    Replay(ReplayArgs),
    /// What worked: per alert and workload, each step's attempts, heals and time to heal.
    Stats(StatsArgs),
    /// Stop salve's writes (everywhere, or in one namespace) on every replica, until
    /// resumed or for a while; incidents are still recorded and decided, and each
    /// would-be change is recorded as `paused`.
    Pause(PauseArgs),
    /// End pauses: those of every namespace (default), one namespace's, or all.
    Resume(ResumeArgs),
    /// Approve the change a remediation of a `mode: approve` rule waits with; salve
    /// judges it again on fresh state before it writes.
    Approve(DecisionArgs),
    /// Reject the change a remediation waits with; nothing is written.
    Reject(DecisionArgs),
    /// List the pauses in force.
    Pauses {
        #[command(flatten)]
        database: DatabaseArgs,
        /// Output format.
        #[arg(long, short, value_enum, default_value = "table")]
        output: OutputFormat,
    },
}

/// `salve pause`.
#[derive(Debug, Args)]
pub struct PauseArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Pause only this namespace (default: every namespace).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Why, for the record and for whoever wonders at 3 a.m.
    #[arg(long)]
    pub reason: Option<String>,
    /// End the pause by itself after this long (`30m`, `2h`); default: until resumed.
    #[arg(long = "for", value_parser = humantime::parse_duration)]
    pub lasting: Option<Duration>,
    /// Who pauses (a person or a ticket); default: the user running the command.
    #[arg(long)]
    pub by: Option<String>,
}

/// `salve approve` and `salve reject`.
#[derive(Debug, Args)]
pub struct DecisionArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The remediation's id.
    pub id: String,
    /// Why (required to reject).
    #[arg(long)]
    pub reason: Option<String>,
    /// Who decides; default: the user running the command.
    #[arg(long)]
    pub by: Option<String>,
}

/// `salve resume`.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// End this namespace's pauses.
    #[arg(long, conflicts_with = "all")]
    pub namespace: Option<String>,
    /// End every pause in force.
    #[arg(long)]
    pub all: bool,
    /// Who resumes; default: the user running the command.
    #[arg(long)]
    pub by: Option<String>,
}

/// `salve stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// How far back, e.g. `30d`.
    #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
    pub since: Duration,
    /// Output format.
    #[arg(long, short, value_enum, default_value = "table")]
    pub output: OutputFormat,
}

/// How the policy commands read Rego, with `opa`'s flag names so an author's habits carry over.
#[derive(Debug, Clone, Copy, Args)]
pub struct RegoArgs {
    /// Parse modules as Rego v0 (`deny[msg] { … }`), like `opa --v0-compatible`.
    #[arg(long = "v0-compatible")]
    pub v0_compatible: bool,
    /// A built-in function that fails (a divide by zero, a bad `to_number`) is an error
    /// instead of an undefined expression, like `opa --strict-builtin-errors`.
    #[arg(long = "strict-builtin-errors")]
    pub strict_builtin_errors: bool,
}

impl RegoArgs {
    /// The selected syntax and built-in error mode.
    pub fn options(self) -> RegoOptions {
        RegoOptions {
            syntax: if self.v0_compatible {
                Syntax::V0
            } else {
                Syntax::V1
            },
            strict_builtin_errors: self.strict_builtin_errors,
        }
    }
}

/// Policy subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Run the `test_*` rules of a policy directory, like `opa test` (same output and
    /// exit codes: 0 all passed, 2 a test failed or erred, 1 the policy did not load).
    Test {
        /// The policy directory.
        #[arg(default_value = "policies")]
        dir: PathBuf,
        /// List every test with its result and timing.
        #[arg(short, long)]
        verbose: bool,
        /// Only tests whose full name (`data.pkg.test_x`) matches this regex.
        #[arg(long)]
        run: Option<String>,
        /// Output format, as `opa test --format`.
        #[arg(long, value_enum, default_value = "pretty")]
        format: crate::commands::TestFormat,
        /// Print which policy lines the tests evaluated (JSON, as `opa test --coverage`).
        #[arg(long)]
        coverage: bool,
        /// Exit 2 when coverage is below this percentage (implies --coverage).
        #[arg(long)]
        threshold: Option<f64>,
        #[command(flatten)]
        rego: RegoArgs,
    },
    /// Compile every module and data document and report every error with file:line
    /// (exit 1 on any, as `opa check`).
    Check {
        /// The policy directory.
        #[arg(default_value = "policies")]
        dir: PathBuf,
        /// Also refuse variables assigned and never used and unused function
        /// arguments, as `opa check --strict`.
        #[arg(long)]
        strict: bool,
        #[command(flatten)]
        rego: RegoArgs,
    },
    /// Evaluate the verdict (or QUERY) for an input document and print it as JSON.
    Eval {
        /// The input document (JSON or YAML).
        #[arg(long)]
        input: PathBuf,
        /// Extra data documents, merged at the root of `data`.
        #[arg(long)]
        data: Vec<PathBuf>,
        /// The policy directory.
        #[arg(long, default_value = "policies")]
        policies: PathBuf,
        /// A Rego query; the default is the verdict (`data.salve.deny`).
        query: Option<String>,
        #[command(flatten)]
        rego: RegoArgs,
    },
}

/// Audit subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain of every timeline event; report the first broken link.
    Verify {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Prune raw webhook payloads older than a duration, sealing what was pruned.
    Prune {
        #[command(flatten)]
        database: DatabaseArgs,
        /// Keep payloads younger than this, e.g. `90d`.
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Duration,
    },
}

/// Rule subcommands.
#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Parse every rule file and report every error with file:line.
    Check {
        /// The policy directory.
        #[arg(default_value = "policies")]
        dir: PathBuf,
    },
    /// What a rule did or, in shadow mode, would have done: its would-be changes, the
    /// verdicts, and how often the alert resolved without them (to decide a promotion).
    Report {
        /// The rule's name.
        rule: String,
        #[command(flatten)]
        database: DatabaseArgs,
        /// How far back, e.g. `7d`.
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        since: Duration,
        /// Output format (`table` is the text report).
        #[arg(long, short, value_enum, default_value = "table")]
        output: OutputFormat,
    },
}

/// `salve replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// The policy directory to judge past decisions with.
    #[arg(long)]
    pub policies: PathBuf,
    /// How far back, e.g. `7d`, `36h`.
    #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
    pub since: Duration,
    /// Output format.
    #[arg(long, short, value_enum, default_value = "table")]
    pub output: OutputFormat,
    #[command(flatten)]
    pub rego: RegoArgs,
}

/// Where the knowledge base lives.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// SQLite (`sqlite://data/salve.db`) or PostgreSQL (`postgres://user@host/db`) URL.
    #[arg(
        long = "database",
        env = "SALVE_DATABASE_URL",
        default_value = "sqlite://data/salve.db"
    )]
    pub url: String,
}

/// `salve serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Keep it on loopback unless webhook auth is configured.
    #[arg(long, env = "SALVE_LISTEN", default_value = "127.0.0.1:9095")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Directory with rule files (YAML), Rego policies and their data documents.
    #[arg(long, env = "SALVE_POLICIES", default_value = "policies")]
    pub policies: PathBuf,

    /// Kubeconfig to use. Without it: $KUBECONFIG or ~/.kube/config, then the pod's
    /// in-cluster config; with none of those salve runs offline (records, never calls).
    #[arg(long, env = "SALVE_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Read the cluster and send server-side dry-runs only; never change anything.
    #[arg(long, env = "SALVE_DRY_RUN")]
    pub dry_run: bool,

    /// Never contact Kubernetes, even if a configuration exists: record what would be done.
    #[arg(long, env = "SALVE_OFFLINE", conflicts_with = "kubeconfig")]
    pub offline: bool,

    /// File holding the bearer token the webhook requires (or set SALVE_WEBHOOK_TOKEN).
    #[arg(long, env = "SALVE_WEBHOOK_TOKEN_FILE")]
    pub webhook_token_file: Option<PathBuf>,

    /// User name the webhook requires with basic auth.
    #[arg(
        long,
        env = "SALVE_WEBHOOK_BASIC_USER",
        requires = "webhook_basic_password_file"
    )]
    pub webhook_basic_user: Option<String>,

    /// File holding the basic-auth password.
    #[arg(
        long,
        env = "SALVE_WEBHOOK_BASIC_PASSWORD_FILE",
        requires = "webhook_basic_user"
    )]
    pub webhook_basic_password_file: Option<PathBuf>,

    /// Largest webhook body accepted, in bytes.
    #[arg(long, env = "SALVE_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Real changes allowed per rolling hour across all workloads.
    #[arg(long, env = "SALVE_MAX_ACTIONS_PER_HOUR", default_value_t = 20)]
    pub max_actions_per_hour: u32,

    /// More budgets of real changes, all holding at once beside --max-actions-per-hour:
    /// `SCOPE=N/WINDOW[,N/WINDOW…]` with SCOPE `global`, `namespace` (each namespace) or
    /// `target` (each workload), e.g. `--budget target=3/1h,7/1d --budget namespace=10/1h`.
    #[arg(long = "budget", env = "SALVE_BUDGETS", value_delimiter = ';')]
    pub budgets: Vec<String>,

    /// Storm brake: more remediations than this opened in one minute (across replicas)
    /// pause automation everywhere for `--storm-brake-pause` and escalate once; 0 turns
    /// the brake off.
    #[arg(long, env = "SALVE_STORM_BRAKE_PER_MINUTE", default_value_t = 20)]
    pub storm_brake_per_minute: u32,

    /// How long the storm brake pauses automation (`salve resume` ends it sooner).
    #[arg(long, env = "SALVE_STORM_BRAKE_PAUSE", default_value = "15m", value_parser = humantime::parse_duration)]
    pub storm_brake_pause: Duration,

    /// Longest wait for one Kubernetes API call, e.g. `30s`.
    #[arg(long, env = "SALVE_CALL_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub call_timeout: Duration,

    /// Parse Rego modules as v0 (`deny[msg] { … }`), like `opa --v0-compatible`.
    #[arg(long = "v0-compatible", env = "SALVE_REGO_V0")]
    pub v0_compatible: bool,

    /// A built-in function that fails (a divide by zero, a bad `to_number`) makes the
    /// evaluation an error, so the change is denied, instead of an undefined expression
    /// as in OPA, like `opa --strict-builtin-errors`.
    #[arg(long = "strict-builtin-errors", env = "SALVE_STRICT_BUILTIN_ERRORS")]
    pub strict_builtin_errors: bool,

    /// Do not reload when files in the policy directory change (SIGHUP and
    /// `POST /-/reload` still reload).
    #[arg(long, env = "SALVE_NO_WATCH")]
    pub no_watch: bool,

    /// File holding the token admin endpoints (`POST /-/reload`) require (or set
    /// SALVE_ADMIN_TOKEN). Without it, admin endpoints answer only to loopback clients.
    #[arg(long, env = "SALVE_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Prometheus to ask whether an alert's expression cleared (e.g. http://prometheus:9090).
    /// Without it, only Alertmanager's resolved notifications count as resolution.
    #[arg(long, env = "SALVE_PROMETHEUS_URL")]
    pub prometheus_url: Option<reqwest::Url>,

    /// Alertmanager to escalate to (`SalveRemediationFailed` via /api/v2/alerts), and to
    /// ask before each step whether the alert is silenced or inhibited. Give it once per
    /// Alertmanager of an HA set (or comma-separated in the variable): each gets every
    /// escalation; the first that answers says whether an alert is muted.
    #[arg(long, env = "SALVE_ALERTMANAGER_URL", value_delimiter = ',')]
    pub alertmanager_url: Vec<reqwest::Url>,

    /// Also post escalations as JSON to this URL.
    #[arg(long, env = "SALVE_ESCALATION_WEBHOOK_URL")]
    pub escalation_webhook_url: Option<reqwest::Url>,

    /// Post each approval request of a `mode: approve` rule as JSON to this URL (a chat
    /// bridge): the change, its expiry, and how to approve or reject it.
    #[arg(long, env = "SALVE_APPROVAL_WEBHOOK_URL")]
    pub approval_webhook_url: Option<reqwest::Url>,

    /// salve's URL as people reach it (as Alertmanager's --web.external-url): every link
    /// salve sends (escalations link to the remediation's audit page) starts with it, and
    /// its path is the prefix salve serves under. Default: http://HOST:PORT of --listen
    /// (this host's name when listening on every interface).
    #[arg(long, env = "SALVE_EXTERNAL_URL", value_parser = crate::http::ExternalUrl::parse)]
    pub external_url: Option<crate::http::ExternalUrl>,

    /// A key pattern (glob, case-insensitive) whose values salve never stores or logs,
    /// besides the defaults (last-applied-configuration, *token*, *password*, *secret*,
    /// *credential*, *api?key*); repeat it or separate with commas.
    #[arg(long = "redact-key", env = "SALVE_REDACT_KEYS", value_delimiter = ',')]
    pub redact_keys: Vec<String>,

    /// File holding the token the audit API requires (or set SALVE_READ_TOKEN; the admin
    /// token works too).
    /// Without either token, the audit API answers only loopback clients.
    #[arg(long, env = "SALVE_READ_TOKEN_FILE")]
    pub read_token_file: Option<PathBuf>,

    /// Prune raw webhook payloads older than this (e.g. `90d`), hourly; summaries and the
    /// audit chain are kept. Without it nothing is pruned.
    #[arg(long, env = "SALVE_RETENTION", value_parser = humantime::parse_duration)]
    pub retention: Option<Duration>,

    /// Longest wait for the database (a connection, SQLite's write lock) before the
    /// webhook answers 503 so Alertmanager retries; keep it well under Alertmanager's 10 s.
    #[arg(long, env = "SALVE_DB_WAIT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub db_wait: Duration,

    /// A client must send a request's headers within this, and an idle keep-alive
    /// connection is closed after it.
    #[arg(long, env = "SALVE_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,

    /// A whole request, body and answer included, must finish within this (408 otherwise).
    #[arg(long, env = "SALVE_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// Connections served at once; more wait in the kernel's accept queue.
    #[arg(long, env = "SALVE_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// A replica counts as gone this long after its last heartbeat; then another replica
    /// (or its own next start) settles what it left. Shorter recovers sooner; too short
    /// takes work from a replica that is merely slow.
    #[arg(long, env = "SALVE_HEARTBEAT_TTL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub heartbeat_ttl: Duration,

    /// How often salve looks for work to settle or retry (dead replicas' remediations,
    /// its own stalled ones, undecided incidents).
    #[arg(long, env = "SALVE_SWEEP_EVERY", default_value = "30s", value_parser = humantime::parse_duration)]
    pub sweep_every: Duration,

    /// How long a workload's lock outlives its holder's last renewal.
    #[arg(long, env = "SALVE_LOCK_LEASE", default_value = "120s", value_parser = humantime::parse_duration)]
    pub lock_lease: Duration,

    /// How long a stop (SIGTERM) waits for running remediations before it leaves them to
    /// the next owner; keep it below the pod's termination grace period.
    #[arg(long, env = "SALVE_SHUTDOWN_GRACE", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Threads that evaluate Rego (off the async runtime, so a slow policy never stalls
    /// webhooks or health checks).
    #[arg(long, env = "SALVE_POLICY_WORKERS", default_value_t = 2)]
    pub policy_workers: usize,

    /// Evaluations that may wait for a policy thread; beyond this a change is denied as
    /// "policy engine busy" instead of waiting.
    #[arg(long, env = "SALVE_POLICY_QUEUE", default_value_t = 64)]
    pub policy_queue: usize,

    /// Heap ceiling (e.g. `512MiB`, `1GiB`) past which a policy evaluation is stopped and
    /// denied. Process-wide: keep it below the container's memory limit.
    #[arg(long, env = "SALVE_POLICY_MEMORY_LIMIT", default_value = "512MiB", value_parser = parse_bytes)]
    pub policy_memory_limit: u64,

    /// Log format.
    #[arg(long, env = "SALVE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `salve history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub query: crate::api::ListQuery,
    /// Output format.
    #[arg(long, short, value_enum, default_value = "table")]
    pub output: OutputFormat,
}

/// `salve alerts`.
#[derive(Debug, Clone, Args)]
pub struct AlertsArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub query: crate::api::ListQuery,
    #[command(flatten)]
    pub status: crate::api::AlertStatusQuery,
    /// Output format.
    #[arg(long, short, value_enum, default_value = "table")]
    pub output: OutputFormat,
}

/// How listings are printed.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Csv,
}

/// Everything `serve` needs, validated.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub listen: SocketAddr,
    pub database_url: String,
    /// How long the database may keep a request waiting (`--db-wait`).
    pub db_wait: Duration,
    /// Timeouts and the connection cap of the HTTP listener.
    pub connections: ConnectionLimits,
    pub policies: PathBuf,
    pub kubeconfig: Option<PathBuf>,
    /// Do not look for a cluster at all.
    pub offline: bool,
    pub dry_run: bool,
    pub auth: WebhookAuth,
    pub max_body_bytes: usize,
    pub limits: Limits,
    /// How Rego is parsed and how its built-ins fail.
    pub rego: RegoOptions,
    /// Reload on file changes in the policy directory.
    pub watch_policies: bool,
    pub admin_token: Option<Secret>,
    pub read_token: Option<Secret>,
    pub retention: Option<Duration>,
    pub prometheus_url: Option<reqwest::Url>,
    pub alertmanager_url: Vec<reqwest::Url>,
    pub escalation_webhook_url: Option<reqwest::Url>,
    pub approval_webhook_url: Option<reqwest::Url>,
    pub external_url: Option<crate::http::ExternalUrl>,
}

/// A secret read from a file or the environment; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl Secret {
    /// Whether `given` is this secret, compared in constant time (the time taken says
    /// nothing about how much of a guess was right).
    pub fn matches(&self, given: &str) -> bool {
        subtle::ConstantTimeEq::ct_eq(given.as_bytes(), self.0.as_bytes()).into()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Reads a size such as `512MiB`, `1GiB`, `64MB` or `1048576` (bytes).
fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as 512MiB"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use B, KiB, MiB, GiB, kB, MB, GB)"
            ));
        }
    };
    number
        .checked_mul(scale)
        .filter(|b| *b > 0)
        .ok_or_else(|| format!("{text:?} is out of range"))
}

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn read_secret(path: &Path, what: &str) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read {what} from {}: {e}", path.display())))?;
    let secret = text.trim().to_owned();
    if secret.is_empty() {
        return Err(ConfigError(format!(
            "{what} file {} is empty",
            path.display()
        )));
    }
    Ok(secret)
}

/// A token from its file when one is given, else from the environment variable `var`.
/// Never a command-line value, which any user could read from the process list.
fn secret(file: &Option<PathBuf>, var: &str, what: &str) -> Result<Option<Secret>, ConfigError> {
    if let Some(path) = file {
        return read_secret(path, what).map(|s| Some(Secret(s)));
    }
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok(Some(Secret(v.trim().to_owned()))),
        Ok(_) => Err(ConfigError(format!("{var} is set but empty"))),
        Err(_) => Ok(None),
    }
}

impl ServeArgs {
    /// Validates the flags into settings.
    pub fn settings(&self) -> Result<ServeSettings, ConfigError> {
        if !self.policies.is_dir() {
            return Err(ConfigError(format!(
                "policy directory {} does not exist",
                self.policies.display()
            )));
        }
        let budgets = self
            .budgets
            .iter()
            .map(|b| crate::controls::budgets(b))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ConfigError)?
            .concat();
        let bearer_token = secret(
            &self.webhook_token_file,
            "SALVE_WEBHOOK_TOKEN",
            "webhook token",
        )?
        .map(|s| s.0);
        let basic = match (&self.webhook_basic_user, &self.webhook_basic_password_file) {
            (Some(user), Some(file)) => {
                Some((user.clone(), read_secret(file, "webhook password")?))
            }
            _ => None,
        };
        let floor = Duration::from_millis(300);
        if self.heartbeat_ttl < floor || self.sweep_every < floor || self.lock_lease < floor {
            return Err(ConfigError(
                "--heartbeat-ttl, --sweep-every and --lock-lease must be at least 300ms".into(),
            ));
        }
        if self.policy_workers == 0 || self.policy_queue == 0 {
            return Err(ConfigError(
                "--policy-workers and --policy-queue must be at least 1".into(),
            ));
        }
        if self.max_connections == 0 {
            return Err(ConfigError("--max-connections must be at least 1".into()));
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError("--max-body-bytes must be at least 1024".into()));
        }
        Ok(ServeSettings {
            listen: self.listen,
            database_url: self.database.url.clone(),
            db_wait: self.db_wait,
            connections: ConnectionLimits {
                header_read_timeout: self.header_read_timeout,
                request_timeout: self.request_timeout,
                max_connections: self.max_connections,
                ..ConnectionLimits::default()
            },
            policies: self.policies.clone(),
            kubeconfig: self.kubeconfig.clone(),
            offline: self.offline,
            dry_run: self.dry_run,
            auth: WebhookAuth {
                bearer_token,
                basic,
            },
            max_body_bytes: self.max_body_bytes,
            rego: RegoOptions {
                syntax: if self.v0_compatible {
                    Syntax::V0
                } else {
                    Syntax::V1
                },
                strict_builtin_errors: self.strict_builtin_errors,
            },
            watch_policies: !self.no_watch,
            prometheus_url: self.prometheus_url.clone(),
            alertmanager_url: self.alertmanager_url.clone(),
            escalation_webhook_url: self.escalation_webhook_url.clone(),
            approval_webhook_url: self.approval_webhook_url.clone(),
            external_url: self.external_url.clone(),
            admin_token: secret(&self.admin_token_file, "SALVE_ADMIN_TOKEN", "admin token")?,
            retention: self.retention,
            read_token: secret(&self.read_token_file, "SALVE_READ_TOKEN", "read token")?,
            limits: Limits {
                max_actions_per_hour: self.max_actions_per_hour,
                budgets,
                storm_brake: (self.storm_brake_per_minute > 0).then_some(
                    crate::engine::StormBrake {
                        per_minute: self.storm_brake_per_minute,
                        pause_for: self.storm_brake_pause,
                    },
                ),
                call_timeout: self.call_timeout,
                heartbeat_ttl: self.heartbeat_ttl,
                sweep_every: self.sweep_every,
                lock_lease: self.lock_lease,
                shutdown_grace: self.shutdown_grace,
                policy: PoolLimits {
                    workers: self.policy_workers,
                    queue: self.policy_queue,
                    memory_limit_bytes: self.policy_memory_limit,
                },
                redaction: crate::redact::Redaction::with_extra(&self.redact_keys),
                ..Limits::default()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_with_binary_and_decimal_units() {
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("64MB"), Ok(64_000_000));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("5TiB").is_err());
        assert!(parse_bytes("99999999999999GiB").is_err());
    }
}
