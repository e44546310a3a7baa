//! salve: a self-healing remediation engine for Kubernetes.
//!
//! Alertmanager posts an alert; salve stores it, then carries it through one-way stages:
//!
//! ```text
//! ingest ──► decide (rules) ──► guard (policy) ──► execute (cluster) ──► remember (store)
//! ```
//!
//! - [`ingest`]: the webhook. Acknowledges only what is committed.
//! - [`rules`]: which alert gets which action on which workload (Alertmanager matchers).
//! - [`policy`]: Rego guardrails evaluated in-process by regorus; failing closed.
//! - [`cluster`]: the Kubernetes API behind a small trait; dry-run first, conditional writes.
//! - [`engine`]: the remediation state machine that drives the stages, one workload at a time.
//! - [`store`]: the knowledge base (SQLite or PostgreSQL) that makes every step auditable.
//! - [`api`]: the audit API and health endpoints.
//!
//! [`app::Salve`] wires them together; `main.rs` only parses the command line.

pub mod alert;
pub mod api;
pub mod app;
pub mod bundle;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod controls;
pub mod crash;
pub mod engine;
pub mod http;
pub mod ingest;
pub mod knowledge;
pub mod notify;
pub mod policy;
pub mod redact;
pub mod reload;
pub mod remediation;
pub mod report;
pub mod rules;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod verify;
