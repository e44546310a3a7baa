//! Whether a GitOps controller owns a workload's spec.
//!
//! Argo CD and Flux put the cluster back to what Git says, within seconds to minutes: a
//! scale or a rollback salve makes to a workload they manage is undone by their next sync
//! (and salve's verification then sees its change vanish). Policy sees what salve found
//! as `input.target.managed_by`; the shipped guardrails deny such a change unless the
//! rule opts in (`gitops: allow`), which an operator does once the tool is told to leave
//! salve's field alone (README, "Controls").

use std::collections::BTreeMap;

use serde::Serialize;

/// The GitOps controller managing a workload, and how salve knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManagedBy {
    /// `argocd` or `flux`.
    pub tool: &'static str,
    /// The Argo CD Application, or the Flux Kustomization / HelmRelease.
    pub name: String,
    /// The label or annotation that says so.
    pub evidence: String,
}

/// What the workload's labels and annotations say of its GitOps controller.
pub fn managed_by(
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Option<ManagedBy> {
    let found = |tool, key: &str, name: &str| ManagedBy {
        tool,
        name: name.to_owned(),
        evidence: key.to_owned(),
    };
    // Argo CD's default tracking label, then its annotation tracking
    // (`app-name:group/Kind:namespace/name`, or `project_app-name:…` with namespaced apps).
    if let Some(app) = labels.get("argocd.argoproj.io/instance") {
        return Some(found("argocd", "label argocd.argoproj.io/instance", app));
    }
    if let Some(id) = annotations.get("argocd.argoproj.io/tracking-id") {
        let app = id.split_once(':').map_or(id.as_str(), |(app, _)| app);
        return Some(found(
            "argocd",
            "annotation argocd.argoproj.io/tracking-id",
            app,
        ));
    }
    // Flux labels everything it applies with its Kustomization's or HelmRelease's name.
    for (prefix, kind) in [
        ("kustomize.toolkit.fluxcd.io", "Kustomization"),
        ("helm.toolkit.fluxcd.io", "HelmRelease"),
    ] {
        let key = format!("{prefix}/name");
        if let Some(name) = labels.get(&key) {
            let ns = labels
                .get(&format!("{prefix}/namespace"))
                .map(|ns| format!("{ns}/"))
                .unwrap_or_default();
            return Some(found(
                "flux",
                &format!("label {key}"),
                &format!("{kind} {ns}{name}"),
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn argo_cd_and_flux_are_recognised_by_their_own_marks() {
        let none = BTreeMap::new();
        assert_eq!(managed_by(&none, &none), None);
        let helm_only = map(&[("app.kubernetes.io/managed-by", "Helm")]);
        assert_eq!(
            managed_by(&helm_only, &none),
            None,
            "plain Helm does not self-heal"
        );

        let argo = managed_by(&map(&[("argocd.argoproj.io/instance", "shop")]), &none).unwrap();
        assert_eq!((argo.tool, argo.name.as_str()), ("argocd", "shop"));
        let tracked = managed_by(
            &none,
            &map(&[(
                "argocd.argoproj.io/tracking-id",
                "shop-prod:apps/Deployment:shop/checkout",
            )]),
        )
        .unwrap();
        assert_eq!(tracked.name, "shop-prod");
        assert_eq!(
            tracked.evidence,
            "annotation argocd.argoproj.io/tracking-id"
        );

        let flux = managed_by(
            &map(&[
                ("kustomize.toolkit.fluxcd.io/name", "apps"),
                ("kustomize.toolkit.fluxcd.io/namespace", "flux-system"),
            ]),
            &none,
        )
        .unwrap();
        assert_eq!(
            (flux.tool, flux.name.as_str()),
            ("flux", "Kustomization flux-system/apps")
        );
        let helm = managed_by(&map(&[("helm.toolkit.fluxcd.io/name", "shop")]), &none).unwrap();
        assert_eq!(helm.name, "HelmRelease shop");
    }
}
