# Tests for guardrails.rego; run them with `salve policy test policies/`.
package salve_test

import rego.v1

import data.salve

# A scale-up salve would normally be allowed to make.
base := {
	"version": 1,
	"now": "2026-11-24T03:12:00Z",
	"mode": "live",
	"alert": {"labels": {"alertname": "HighRequestLatency", "namespace": "shop", "deployment": "checkout"}},
	"rule": {"name": "checkout-latency", "file": "rules.yaml", "cooldown_seconds": 600, "max_attempts": 1},
	"action": {
		"type": "scale",
		"target": {"kind": "Deployment", "namespace": "shop", "name": "checkout"},
		"from": {"replicas": 2},
		"to": {"replicas": 3},
	},
	"target": {
		"kind": "Deployment", "namespace": "shop", "name": "checkout",
		"replicas": 2, "generation": 4, "observed_generation": 4,
		"annotations": {}, "labels": {},
	},
	"history": {"window_seconds": 86400, "remediations": [], "actions_last_hour": 0},
}

test_ordinary_scale_up_is_allowed if {
	count(salve.deny) == 0 with input as base
}

test_protected_namespace_is_denied if {
	some msg in salve.deny with input as object.union(base, {"action": {"target": {"namespace": "kube-system"}}})
	contains(msg, "kube-system is protected")
}

test_opt_out_annotation_is_denied if {
	some msg in salve.deny with input as object.union(base, {"target": {"annotations": {"salve.io/disabled": "true"}}})
	contains(msg, "salve.io/disabled")
}

test_scale_above_cap_is_denied if {
	some msg in salve.deny with input as object.union(base, {"action": {"to": {"replicas": 51}}})
	contains(msg, "cap of 50")
}

test_cap_comes_from_data if {
	count(salve.deny) > 0 with input as base with data.guardrails.max_replicas as 2
}

test_scale_from_zero_is_denied if {
	some msg in salve.deny with input as object.union(base, {"action": {"from": {"replicas": 0}}})
	contains(msg, "scaled to zero")
}

test_rollout_in_progress_is_denied if {
	some msg in salve.deny with input as object.union(base, {"target": {"observed_generation": 3}})
	contains(msg, "rollout is in progress")
}

test_freeze_window_denies_inside_and_not_outside if {
	windows := [{"start": "2026-11-24T00:00:00Z", "end": "2026-11-25T00:00:00Z", "reason": "Black Friday"}]
	some msg in salve.deny with input as base with data.guardrails.freeze_windows as windows
	contains(msg, "Black Friday")
	count(salve.deny) == 0 with input as object.union(base, {"now": "2026-11-26T00:00:00Z"}) with data.guardrails.freeze_windows as windows
}

test_flapping_target_is_denied if {
	some msg in salve.deny with input as object.union(base, {"history": {"actions_last_hour": 3}})
	contains(msg, "3 actions on this target")
}

test_restart_without_replica_fields_is_allowed if {
	restart := object.union(base, {"action": {"type": "restart", "from": {"restarted_at": null}, "to": {"restarted_at": "2026-11-24T03:12:00Z"}}})
	count(salve.deny) == 0 with input as restart
}

# salve putting back its own change is allowed during its failed rollout and past the
# flapping limit; a protected namespace still refuses it.
revert := object.union(base, {
	"action": {"type": "revert", "from": {"replicas": 3}, "to": {"replicas": 2}},
	"target": {"generation": 5, "observed_generation": 4},
	"history": {"actions_last_hour": 3},
})

test_a_revert_of_salves_own_change_is_allowed if {
	count(salve.deny) == 0 with input as revert
}

test_a_revert_in_a_protected_namespace_is_denied if {
	some msg in salve.deny with input as object.union(revert, {"action": {"target": {"namespace": "kube-system"}}})
	contains(msg, "kube-system is protected")
}

managed := {"target": {"managed_by": {"tool": "argocd", "name": "shop", "evidence": "label argocd.argoproj.io/instance"}}}

test_gitops_managed_workload_is_denied_by_default if {
	some msg in salve.deny with input as object.union(base, managed)
	contains(msg, "is managed by argocd (shop, label argocd.argoproj.io/instance)")
	contains(msg, "give rule checkout-latency `gitops: allow`")
}

test_gitops_managed_workload_is_allowed_when_the_rule_opts_in if {
	count(salve.deny) == 0 with input as object.union(object.union(base, managed), {"rule": {"gitops": "allow"}})
}

test_gitops_revert_of_salves_own_change_passes if {
	count(salve.deny) == 0 with input as object.union(object.union(base, managed), {"action": {"type": "revert"}})
}
