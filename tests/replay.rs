//! `salve replay`: past decisions re-judged under a new policy directory; the flips
//! listed are exactly the decisions the new policy would have decided differently.

mod support;

use std::process::Command;

use chrono::{Duration, Utc};
use salve::cluster::{TargetRef, WorkloadKind};
use salve::store::{EventKind, Store};
use serde_json::{Value, json};
use support::fresh_database;

/// One decision salve made in the past.
struct Past {
    n: u32,
    ns: &'static str,
    name: &'static str,
    action: &'static str,
    to: Value,
    allowed: bool,
    age: Duration,
}

/// Records one past decision the way the engine does: remediation, then policy input and verdict.
async fn past_decision(store: &Store, p: Past) -> String {
    let Past {
        n,
        ns,
        name,
        action,
        to,
        allowed,
        age,
    } = p;
    let at = Utc::now() - age;
    let (_, id) = support::seed_remediation(store, n, (ns, name), action, at).await;
    let target = TargetRef::new(WorkloadKind::Deployment, ns, name).unwrap();
    let input = json!({
        "version": 1, "now": salve::store::timestamp(at), "mode": "live",
        "action": {"type": action, "target": target, "from": {"replicas": 2}, "to": to},
        "target": {"kind": "Deployment", "namespace": ns, "name": name, "replicas": 2,
                   "generation": 1, "observed_generation": 1, "annotations": {}},
        "history": {"actions_last_hour": 0, "remediations": []},
    });
    let verdict = json!({"allowed": allowed, "reasons": if allowed { json!([]) } else { json!(["an old reason"]) }});
    store
        .append_event(
            &id,
            EventKind::PolicyEvaluated,
            &json!({"input": input, "verdict": verdict}),
            at,
        )
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn replay_lists_exactly_the_decisions_that_flip() {
    let dir = tempfile::tempdir().unwrap();
    let database = fresh_database(dir.path()).await;
    let store = Store::open(&database).await.unwrap();
    let hour = Duration::hours(1);
    let same_a = past_decision(
        &store,
        Past {
            n: 1,
            ns: "shop",
            name: "checkout",
            action: "scale",
            to: json!({"replicas": 3}),
            allowed: true,
            age: hour * 30,
        },
    )
    .await;
    let to_deny_scale = past_decision(
        &store,
        Past {
            n: 2,
            ns: "shop",
            name: "cart",
            action: "scale",
            to: json!({"replicas": 12}),
            allowed: true,
            age: hour * 20,
        },
    )
    .await;
    let same_b = past_decision(
        &store,
        Past {
            n: 3,
            ns: "kube-system",
            name: "coredns",
            action: "scale",
            to: json!({"replicas": 3}),
            allowed: false,
            age: hour * 10,
        },
    )
    .await;
    let to_deny_restart = past_decision(
        &store,
        Past {
            n: 4,
            ns: "shop",
            name: "web",
            action: "restart",
            to: json!({"restarted_at": "x"}),
            allowed: true,
            age: hour * 5,
        },
    )
    .await;
    let to_allow = past_decision(
        &store,
        Past {
            n: 5,
            ns: "payments",
            name: "api",
            action: "rollback",
            to: json!({"revision": 1}),
            allowed: false,
            age: hour,
        },
    )
    .await;
    let too_old = past_decision(
        &store,
        Past {
            n: 6,
            ns: "shop",
            name: "old",
            action: "scale",
            to: json!({"replicas": 40}),
            allowed: true,
            age: Duration::days(10),
        },
    )
    .await;
    drop(store);

    // The new policy: the shipped guardrails with a cap of 10, and no restarts in shop.
    let policies = support::policies_with_rules(dir.path(), None);
    let data = policies.join("guardrails/data.json");
    let text = std::fs::read_to_string(&data)
        .unwrap()
        .replace("\"max_replicas\": 50", "\"max_replicas\": 10");
    std::fs::write(&data, text).unwrap();
    std::fs::write(
        policies.join("no_restart.rego"),
        "package salve\n\nimport rego.v1\n\ndeny contains \"no automatic restarts in shop\" if {\n\tinput.action.type == \"restart\"\n\tinput.action.target.namespace == \"shop\"\n}\n",
    )
    .unwrap();

    let run = |output: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_salve"))
            .args([
                "replay",
                "--database",
                &database,
                "--since",
                "7d",
                "--output",
                output,
            ])
            .arg("--policies")
            .arg(&policies)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    };

    let report: Value = serde_json::from_str(&run("json")).unwrap();
    assert_eq!(
        report["evaluated"], 5,
        "the 10-day-old decision is outside --since 7d"
    );
    assert_eq!(
        (
            report["allow_to_deny"].as_u64(),
            report["deny_to_allow"].as_u64(),
            report["unchanged"].as_u64()
        ),
        (Some(2), Some(1), Some(2))
    );
    let flips: Vec<(String, String)> = report["flips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["remediation_id"].as_str().unwrap().to_owned(),
                f["change"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        flips,
        vec![
            (to_deny_scale.clone(), "allow→deny".to_owned()),
            (to_deny_restart.clone(), "allow→deny".to_owned()),
            (to_allow.clone(), "deny→allow".to_owned()),
        ]
    );
    for unlisted in [&same_a, &same_b, &too_old] {
        assert!(!flips.iter().any(|(id, _)| id == unlisted));
    }
    assert_eq!(
        report["flips"][0]["new_reasons"][0],
        "scaling to 12 replicas exceeds the cluster-wide cap of 10"
    );
    assert_eq!(
        report["flips"][1]["new_reasons"][0],
        "no automatic restarts in shop"
    );

    let table = run("table");
    assert!(
        table.contains("allow→deny  rule-scale") && table.contains("Deployment/shop/cart"),
        "{table}"
    );
    assert!(
        table.contains("deny→allow  rule-rollback")
            && table.contains("was denied for: an old reason"),
        "{table}"
    );
    assert!(
        table.contains("5 decisions re-evaluated under policy"),
        "{table}"
    );
    assert!(
        table.contains(": 2 allow→deny, 1 deny→allow, 2 unchanged"),
        "{table}"
    );
}
