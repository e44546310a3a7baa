//! What a verdict costs in salve, side by side with the bare regorus interpreter.
//!
//! Both evaluate the shipped guardrails (`policies/`) for the same realistic input, from
//! the same JSON document; the bare side is what any regorus user writes (clone the
//! loaded engine, set the input, evaluate `data.salve.deny`), salve's side is
//! `PolicySet::evaluate` (the verdict compiled to regorus's RVM, the input converted
//! once). Prints the median time per verdict of each over several rounds, the ratio, and
//! whether the target (15 µs) is met. Run: `cargo bench --bench policy`.

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use salve::bundle::{Bundle, FileKind};
use salve::policy::{PolicySet, Syntax};
use serde_json::json;

const ROUNDS: usize = 7;
/// The median a verdict of the shipped guardrails may take (issue 15).
const TARGET_MICROS: f64 = 15.0;
const PER_ROUND: u32 = 3_000;

fn input() -> serde_json::Value {
    json!({
        "version": 1, "now": "2026-11-24T03:12:00.000000Z", "mode": "live",
        "alert": {"fingerprint": "88913dd4e3cad305", "status": "firing",
                  "labels": {"alertname": "HighRequestLatency", "namespace": "shop", "deployment": "checkout", "severity": "critical"},
                  "annotations": {"summary": "p99 latency above 500ms on checkout"},
                  "startsAt": "2026-11-24T03:10:00Z", "endsAt": null, "generatorURL": ""},
        "rule": {"name": "latency-scale-up", "file": "rules.yaml", "matchers": ["alertname=\"HighRequestLatency\""],
                 "cooldown_seconds": 600, "max_attempts": 1},
        "action": {"type": "scale", "target": {"kind": "Deployment", "namespace": "shop", "name": "checkout"},
                   "from": {"replicas": 2}, "to": {"replicas": 3}, "description": "scale Deployment shop/checkout from 2 to 3 replicas"},
        "target": {"kind": "Deployment", "namespace": "shop", "name": "checkout", "replicas": 2, "ready_replicas": 2,
                   "available_replicas": 2, "updated_replicas": 2, "generation": 4, "observed_generation": 4,
                   "revision": 3, "paused": false, "labels": {"app": "checkout"}, "annotations": {}},
        "history": {"window_seconds": 86400, "actions_last_hour": 1, "last_action_at": "2026-11-24T02:40:00Z",
                    "remediations": [{"id": "x", "created_at": "2026-11-24T02:40:00Z", "acted_at": "2026-11-24T02:40:01Z",
                                      "acted": true, "rule": "latency-scale-up", "alertname": "HighRequestLatency",
                                      "action": "scale", "state": "applied", "summary": "scaled"}]}
    })
}

fn bare_engine(bundle: &Bundle) -> regorus::Engine {
    let mut engine = regorus::Engine::new();
    for f in bundle.of_kind(FileKind::Rego) {
        engine
            .add_policy(f.relative.clone(), f.text.clone())
            .unwrap();
    }
    let data: serde_json::Value =
        serde_json::from_str(&bundle.of_kind(FileKind::Data).next().unwrap().text).unwrap();
    engine
        .add_data(regorus::Value::from(json!({"guardrails": data})))
        .unwrap();
    engine
}

fn median_ns(mut f: impl FnMut()) -> f64 {
    for _ in 0..200 {
        f();
    }
    let mut rounds: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..PER_ROUND {
                f();
            }
            start.elapsed().as_nanos() as f64 / f64::from(PER_ROUND)
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[ROUNDS / 2]
}

fn main() {
    let bundle = Bundle::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")).unwrap();
    let policy = PolicySet::load(&bundle, Syntax::V1).unwrap();
    let engine = bare_engine(&bundle);
    let input = input();
    assert!(
        policy.evaluate(&input).allowed,
        "the benchmark input must be allowed by the shipped policy"
    );

    let bare = median_ns(|| {
        let mut e = engine.clone();
        e.set_input(regorus::Value::from(black_box(&input).clone()));
        black_box(e.eval_rule("data.salve.deny".to_owned()).unwrap());
    });
    let salve = median_ns(|| {
        black_box(policy.evaluate(black_box(&input)));
    });
    println!(
        "policy evaluation, shipped guardrails, median of {ROUNDS} rounds x {PER_ROUND} verdicts"
    );
    println!(
        "  bare regorus interpreter {:>9.1} µs/verdict",
        bare / 1000.0
    );
    println!(
        "  salve ({})  {:>9.1} µs/verdict",
        policy.evaluator(),
        salve / 1000.0
    );
    println!("  ratio salve/bare         {:>9.2}x", salve / bare);
    println!(
        "  target <= {TARGET_MICROS} µs           {}",
        if salve / 1000.0 <= TARGET_MICROS {
            "met"
        } else {
            "NOT met"
        }
    );
}
