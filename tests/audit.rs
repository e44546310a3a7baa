//! The audit trail shows tampering; retention prunes payloads by sealing them; a
//! database at the previous schema version upgrades in place.

mod support;

use std::process::Command;

use chrono::{Duration, Utc};
use salve::alert::Delivery;
use salve::store::Store;
use sha2::{Digest, Sha256};
use sqlx::{Connection, Row};
use support::{Options, firing_for, fixture, spawn_salve};

fn verify(database: &str) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_salve"))
        .args(["audit", "verify", "--database", database])
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
    )
}

async fn sql(database: &str, statement: &str) {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(database).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap();
}

async fn detail_of(database: &str, chain_seq: i64) -> String {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(database).await.unwrap();
    let sql = format!("SELECT detail FROM remediation_events WHERE chain_seq = {chain_seq}");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .try_get("detail")
        .unwrap()
}

#[tokio::test]
async fn editing_deleting_or_truncating_audit_events_is_detected_at_the_right_row() {
    let s = spawn_salve(Options::default()).await;
    for i in 0..3 {
        s.post_alerts(&firing_for(
            "HighRequestLatency",
            "shop",
            &format!("web-{i}"),
            &format!("{:016x}", 0xc0 + i),
        ))
        .await;
    }
    s.finished(3).await;
    let db = s.database.clone();
    let (code, out) = verify(&db);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ok: 12 events, chain intact"), "{out}");

    // Someone edits the verdict recorded in event 5.
    let original = detail_of(&db, 5).await;
    sql(
        &db,
        "UPDATE remediation_events SET detail = detail || ' ' WHERE chain_seq = 5",
    )
    .await;
    assert_ne!(
        detail_of(&db, 5).await,
        original,
        "the row was really edited"
    );
    let (code, out) = verify(&db);
    assert_eq!(code, 1);
    assert!(
        out.starts_with("BROKEN at chain event 5 ")
            && out.contains("does not match its hash (edited)"),
        "{out}"
    );
    assert!(out.contains("4 events before it are intact"), "{out}");

    // ... and covers it by recomputing that event's hash: the next link breaks.
    let forged = {
        let mut conn = sqlx::AnyConnection::connect(&db).await.unwrap();
        let r = sqlx::query("SELECT remediation_id, seq, at, kind, detail, prev_hash FROM remediation_events WHERE chain_seq = 5")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        salve::store::chain::event_hash(
            &r.try_get::<String, _>("prev_hash").unwrap(),
            5,
            &r.try_get::<String, _>("remediation_id").unwrap(),
            r.try_get("seq").unwrap(),
            &r.try_get::<String, _>("at").unwrap(),
            &r.try_get::<String, _>("kind").unwrap(),
            &r.try_get::<String, _>("detail").unwrap(),
        )
    };
    sql(
        &db,
        &format!("UPDATE remediation_events SET hash = '{forged}' WHERE chain_seq = 5"),
    )
    .await;
    let (code, out) = verify(&db);
    assert_eq!(code, 1);
    assert!(
        out.starts_with("BROKEN at chain event 6 ") && out.contains("link to the previous event"),
        "{out}"
    );

    // Deleting an event leaves a gap; removing the last events shows against the head.
    sql(&db, "DELETE FROM remediation_events WHERE chain_seq >= 5").await;
    let (code, out) = verify(&db);
    assert_eq!(code, 1);
    assert!(
        out.contains("head records event 12 (events removed from the end)"),
        "{out}"
    );
    sql(&db, "DELETE FROM remediation_events WHERE chain_seq = 2").await;
    let (code, out) = verify(&db);
    assert!(
        code == 1
            && out.starts_with("BROKEN at chain event 3 ")
            && out.contains("events 2..2 are missing"),
        "{out}"
    );
}

#[tokio::test]
async fn retention_prunes_old_payloads_by_sealing_and_keeps_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let database = support::fresh_database(dir.path()).await;
    let store = Store::open(&database).await.unwrap();
    let old_body = fixture("firing-from-prometheus-rule.json");
    let old = Delivery::parse(old_body.as_bytes()).unwrap();
    store
        .record_delivery(&old, Utc::now() - Duration::days(100))
        .await
        .unwrap();
    drop(store);
    let s = spawn_salve(Options {
        database: Some(database.clone()),
        ..Options::default()
    })
    .await;
    s.finished(1).await;
    s.post_alerts(&fixture("firing-single-api-posted.json"))
        .await;
    s.finished(2).await;

    let mut prune = Command::new(env!("CARGO_BIN_EXE_salve"));
    prune.args([
        "audit",
        "prune",
        "--older-than",
        "90d",
        "--database",
        &database,
    ]);
    let out = support::output_beside_salve(prune).await;
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success() && text.starts_with("pruned 1 payloads"),
        "{text}"
    );

    let mut conn = sqlx::AnyConnection::connect(&database).await.unwrap();
    let rows = sqlx::query(
        "SELECT payload, payload_sha256, pruned_at FROM deliveries ORDER BY received_at",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let payload: String = rows[0].try_get("payload").unwrap();
    let sha: String = rows[0].try_get("payload_sha256").unwrap();
    assert_eq!(payload, "", "the old raw payload is gone");
    let expected: String = Sha256::digest(old_body.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(sha, expected, "its hash proves what it was");
    assert!(
        rows[1]
            .try_get::<Option<String>, _>("pruned_at")
            .unwrap()
            .is_none(),
        "recent payloads stay"
    );
    assert!(!rows[1].try_get::<String, _>("payload").unwrap().is_empty());
    let seals: i64 = sqlx::query("SELECT COUNT(*) AS n FROM retention_seals WHERE deliveries = 1")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
    assert_eq!(seals, 1);
    assert_eq!(
        s.remediations().await.len(),
        2,
        "remediation summaries are kept"
    );
    assert_eq!(verify(&database).0, 0, "the chain is untouched by pruning");
}

#[tokio::test]
async fn a_database_at_the_previous_version_upgrades_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let database = support::fresh_database(dir.path()).await;
    // Version 1 only: the first migration file alone.
    let v1 = dir.path().join("migrations-v1");
    std::fs::create_dir_all(&v1).unwrap();
    let first = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations/0001_remediation_spine.sql");
    std::fs::copy(&first, v1.join("0001_remediation_spine.sql")).unwrap();
    sqlx::any::install_default_drivers();
    let create = if database.starts_with("sqlite:") {
        format!("{database}?mode=rwc")
    } else {
        database.clone()
    };
    let mut conn = sqlx::AnyConnection::connect(&create).await.unwrap();
    sqlx::migrate::Migrator::new(v1.as_path())
        .await
        .unwrap()
        .run(&mut conn)
        .await
        .unwrap();
    for statement in [
        "INSERT INTO deliveries (id, received_at, receiver, status, group_key, alert_count, truncated_alerts, payload) VALUES ('d1', '2026-11-01T00:00:00.000000Z', 'salve', 'firing', 'g', 1, 0, '{}')",
        "INSERT INTO incidents (id, fingerprint, starts_at, alertname, status, alert, first_seen_at, last_seen_at, delivery_count, first_delivery_id, decision, decision_reason) VALUES ('i1', 'f', '2026-11-01T00:00:00.000000Z', 'HighRequestLatency', 'firing', '{}', '2026-11-01T00:00:00.000000Z', '2026-11-01T00:00:00.000000Z', 1, 'd1', 'remediation', '')",
        "INSERT INTO remediations (id, incident_id, created_at, updated_at, alertname, rule_name, rule_file, action, target_kind, target_namespace, target_name, mode, state, summary, reasons) VALUES ('r1', 'i1', '2026-11-01T00:00:00.000000Z', '2026-11-01T00:00:00.000000Z', 'HighRequestLatency', 'old-rule', 'rules.yaml', 'scale', 'Deployment', 'shop', 'checkout', 'live', 'healed', 'healed: old', '[]')",
        "INSERT INTO remediation_events (id, remediation_id, seq, at, kind, detail) VALUES ('e1', 'r1', 1, '2026-11-01T00:00:00.000000Z', 'rule_matched', '{}')",
    ] {
        sqlx::query(statement).execute(&mut conn).await.unwrap();
    }
    drop(conn);

    let s = spawn_salve(Options {
        database: Some(database.clone()),
        ..Options::default()
    })
    .await;
    let (_, old) = s.get("/api/v1/remediations/r1").await;
    assert_eq!(
        old["summary"], "healed: old",
        "data at the previous version survives"
    );
    s.post_alerts(&fixture("firing-single-api-posted.json"))
        .await;
    s.finished(2).await;
    let (code, out) = verify(&database);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("(1 earlier events predate the chain)"),
        "{out}"
    );
}
