//! `salve migrate`: forward-only migrations apply to an empty database and are a no-op on
//! a current one, on whichever backend the suite runs.

mod support;

use std::process::Command;

use sqlx::{Connection, Row};

#[tokio::test]
async fn migrate_applies_to_an_empty_database_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let database = support::fresh_database(dir.path()).await;
    for _ in 0..2 {
        let out = Command::new(env!("CARGO_BIN_EXE_salve"))
            .args(["migrate", "--database", &database])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "migrations applied\n");
    }
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&database).await.unwrap();
    let applied: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM _sqlx_migrations WHERE success = TRUE")
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .try_get("n")
            .unwrap();
    let files =
        std::fs::read_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations"))
            .unwrap()
            .count() as i64;
    assert_eq!(applied, files, "every migration file applied exactly once");
    for table in [
        "deliveries",
        "incidents",
        "remediations",
        "remediation_events",
        "attempts",
        "escalations",
        "target_locks",
    ] {
        let sql = format!("SELECT COUNT(*) AS n FROM {table}");
        let n: i64 = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .try_get("n")
            .unwrap();
        assert_eq!(n, 0, "{table} exists and is empty");
    }
}
