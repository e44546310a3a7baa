//! Telling humans, once per remediation.
//!
//! The escalation is claimed in the store first (at most one per remediation, so per
//! incident, across replicas), then sent through every notifier, and the delivery is
//! recorded on the timeline.

use chrono::Utc;
use serde_json::{Value, json};
use tracing::warn;

use super::ladder::Run;
use super::{Engine, EngineError, stored_target};
use crate::notify::Escalation;
use crate::store::EventKind;

impl Engine {
    /// Tells humans about this run, once per remediation.
    pub(super) async fn escalate(
        &self,
        run: &Run<'_>,
        reason: &str,
        summary: &str,
    ) -> Result<(), EngineError> {
        let escalation = Escalation {
            remediation_id: run.id.clone(),
            incident_id: run.incident.id.clone(),
            rule: run.rule.name.clone(),
            target: run.target.clone(),
            reason: reason.to_owned(),
            summary: summary.to_owned(),
            alert: run.incident.alert.clone(),
            audit_url: self.audit_url(&run.id),
        };
        self.deliver_escalation(&escalation).await
    }

    /// A link to a remediation's audit record.
    pub(super) fn audit_url(&self, id: &str) -> String {
        format!(
            "{}/api/v1/remediations/{id}",
            self.inner.external_url.trim_end_matches('/')
        )
    }

    /// Sends an escalation through every notifier, unless this remediation already had one.
    pub(super) async fn deliver_escalation(&self, e: &Escalation) -> Result<(), EngineError> {
        let store = &self.inner.store;
        let id = &e.remediation_id;
        if !store.claim_escalation(id, &e.reason, Utc::now()).await? {
            return Ok(());
        }
        let mut delivered = Vec::new();
        for notifier in &self.inner.notifiers {
            let result = notifier.notify(e).await;
            if let Err(err) = &result {
                warn!(remediation = %id, notifier = %notifier.name(), error = %err, "escalation not delivered");
            }
            delivered
                .push(json!({"to": notifier.name(), "ok": result.is_ok(), "error": result.err()}));
        }
        if self.inner.notifiers.is_empty() {
            warn!(remediation = %id, "escalation recorded, but no notifier is configured (--alertmanager-url)");
        }
        let delivered = Value::Array(delivered);
        store.set_escalation_delivery(id, &delivered).await?;
        let detail = json!({"reason": e.reason, "delivered": delivered});
        Ok(store
            .append_event(id, EventKind::Escalation, &detail, Utc::now())
            .await?)
    }

    /// Escalates a remediation from its stored record (recovery has no [`Run`]).
    pub(super) async fn escalate_stored(
        &self,
        id: &str,
        reason: &str,
        summary: &str,
    ) -> Result<(), EngineError> {
        let store = &self.inner.store;
        let Some(r) = store.remediation(id).await? else {
            return Ok(());
        };
        let (Some(incident), Some(target)) = (
            store.incident(&r.incident_id).await?,
            stored_target(&r.target.kind, &r.target.namespace, &r.target.name),
        ) else {
            return Ok(());
        };
        let escalation = Escalation {
            audit_url: self.audit_url(id),
            remediation_id: id.to_owned(),
            incident_id: r.incident_id.clone(),
            rule: r.rule.clone(),
            target,
            reason: reason.to_owned(),
            summary: summary.to_owned(),
            alert: incident.alert,
        };
        self.deliver_escalation(&escalation).await
    }
}
