# Default guardrails: what salve must never do, whatever a rule asks.
#
# Every rule below adds a human-readable message to `deny`. An empty `deny` set
# allows the change; any message refuses it and is recorded as the reason.
# Limits and freeze windows live in guardrails/data.json (mounted as data.guardrails),
# so operators change numbers without touching Rego.
#
# Messages use sprintf with %v and %s only: those never fail, whatever the input
# holds, and they keep the verdict compiled (fast); see policies/README.md.
package salve

import rego.v1

# Namespaces that belong to the platform, not to the workloads salve heals.
deny contains msg if {
	input.action.target.namespace in data.guardrails.protected_namespaces
	msg := sprintf("namespace %s is protected: salve never changes it", [input.action.target.namespace])
}

# A workload's owners can opt it out with an annotation, no policy change needed.
deny contains msg if {
	input.target.annotations["salve.io/disabled"] == "true"
	msg := sprintf("%s %s/%s is annotated salve.io/disabled=true", [input.target.kind, input.target.namespace, input.target.name])
}

# A cluster-wide cap, whatever a rule's own max says.
deny contains msg if {
	input.action.type == "scale"
	input.action.to.replicas > data.guardrails.max_replicas
	msg := sprintf("scaling to %v replicas exceeds the cluster-wide cap of %v", [input.action.to.replicas, data.guardrails.max_replicas])
}

# Zero replicas is a decision someone made; an alert is no reason to undo it.
deny contains msg if {
	input.action.type == "scale"
	input.action.from.replicas == 0
	msg := "the workload is scaled to zero on purpose; salve does not bring it back"
}

# Never pile a change on top of a rollout that has not finished. salve putting back its
# own change (a revert) is exempt: that rollout is the one that went wrong.
deny contains msg if {
	input.action.type != "revert"
	input.target.observed_generation < input.target.generation
	msg := sprintf("a rollout is in progress (generation %v, observed %v): wait for it to finish", [input.target.generation, input.target.observed_generation])
}

# Change freezes (release weekends, incidents handled by hand).
deny contains msg if {
	some window in data.guardrails.freeze_windows
	now := time.parse_rfc3339_ns(input.now)
	now >= time.parse_rfc3339_ns(window.start)
	now < time.parse_rfc3339_ns(window.end)
	msg := sprintf("change freeze until %s: %s", [window.end, window.reason])
}

# Flapping protection: a target that needed several actions in an hour needs a human.
# A revert of salve's own change is not another action on the workload's behalf.
deny contains msg if {
	input.action.type != "revert"
	input.history.actions_last_hour >= data.guardrails.max_actions_per_target_per_hour
	msg := sprintf("%v actions on this target in the last hour (limit %v): a human should look", [input.history.actions_last_hour, data.guardrails.max_actions_per_target_per_hour])
}

# A GitOps controller (Argo CD, Flux) puts the workload back to what Git says at its next
# sync, undoing salve's change while salve verifies it. A rule opts in with `gitops: allow`
# once the controller leaves salve's field alone (README, "Controls"). A revert puts back
# salve's own change and passes.
deny contains msg if {
	input.action.type != "revert"
	input.target.managed_by
	not input.rule.gitops == "allow"
	msg := sprintf("%s %s/%s is managed by %s (%s, %s): its next sync would undo the change; give rule %s `gitops: allow` once %s leaves this field to salve", [input.target.kind, input.target.namespace, input.target.name, input.target.managed_by.tool, input.target.managed_by.name, input.target.managed_by.evidence, input.rule.name, input.target.managed_by.tool])
}
