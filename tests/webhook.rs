//! The webhook's contract with Alertmanager: 2xx only after commit, 400 with a reason
//! for what can never be accepted (Alertmanager does not retry 4xx), 401 without the
//! configured credentials, 503 when storage is unavailable (Alertmanager retries 5xx).

mod support;

use std::time::Duration;

use base64::Engine as _;
use salve::ingest::WebhookAuth;
use sqlx::Connection;
use support::{Options, eventually, fixture, spawn_salve};

#[tokio::test]
async fn a_malformed_payload_gets_400_with_the_reason_and_stores_nothing() {
    let s = spawn_salve(Options::default()).await;
    let good = fixture("firing-from-prometheus-rule.json");
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
        f(&mut v);
        v.to_string()
    };
    let cases = [
        ("not json".to_owned(), "invalid webhook payload"),
        (good[..good.len() / 2].to_owned(), "EOF"),
        (
            edit(&|v| v["version"] = "3".into()),
            "unsupported webhook payload version \"3\"",
        ),
        (
            edit(&|v| {
                v["alerts"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("fingerprint");
            }),
            "missing field `fingerprint`",
        ),
        (
            edit(&|v| v["alerts"][0]["status"] = "burning".into()),
            "neither \"firing\" nor \"resolved\"",
        ),
        (
            edit(&|v| v["alerts"][0]["startsAt"] = "yesterday".into()),
            "alerts[0].startsAt",
        ),
        (
            edit(&|v| v["alerts"] = serde_json::json!([])),
            "holds no alerts",
        ),
        // PostgreSQL text cannot hold NUL: the same 400 on both backends, never a 500
        // that Alertmanager would retry forever.
        (
            edit(&|v| v["alerts"][0]["labels"]["alertname"] = "High\u{0}Latency".into()),
            "alerts[0] (alertname=\"High\\0Latency\"",
        ),
        (
            edit(&|v| v["groupKey"] = "{}:{alertname=\"a\u{0}\"}".into()),
            "groupKey contains a NUL character",
        ),
        (
            edit(&|v| v["receiver"] = "sal\u{0}ve".into()),
            "receiver contains a NUL character",
        ),
        (
            edit(&|v| v["truncatedAlerts"] = serde_json::json!(u64::MAX)),
            "truncatedAlerts 18446744073709551615 is out of range",
        ),
        (
            edit(&|v| v["alerts"][0]["startsAt"] = "2026- 1-24T15:37:00.558Z".into()),
            "is not an RFC 3339 time",
        ),
    ];
    for (body, reason) in cases {
        assert_ne!(body, good);
        let (status, answer) = s.post_alerts(&body).await;
        assert_eq!(status, 400, "{answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.contains(reason),
            "{error:?} should mention {reason:?}"
        );
    }
    assert_eq!(s.salve.store.delivery_count().await.unwrap(), 0);
    assert!(s.remediations().await.is_empty());
}

#[tokio::test]
async fn a_configured_bearer_token_or_basic_auth_is_required() {
    let s = spawn_salve(Options {
        auth: WebhookAuth {
            bearer_token: Some("t0ken".into()),
            basic: Some(("alertmanager".into(), "pa55".into())),
        },
        ..Options::default()
    })
    .await;
    let body = fixture("firing-single-api-posted.json");
    let post = |auth: Option<String>| {
        let mut req = s
            .http
            .post(format!("{}/api/v1/alerts", s.url))
            .body(body.clone());
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    let basic = |u: &str, p: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    };

    let none = post(None).await.unwrap();
    assert_eq!(none.status(), 401);
    assert!(none.headers().contains_key("www-authenticate"));
    assert_eq!(
        post(Some("Bearer wrong".into())).await.unwrap().status(),
        401
    );
    assert_eq!(
        post(Some(basic("alertmanager", "nope")))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        s.salve.store.delivery_count().await.unwrap(),
        0,
        "refused requests store nothing"
    );

    assert_eq!(
        post(Some("Bearer t0ken".into())).await.unwrap().status(),
        200
    );
    assert_eq!(
        post(Some(basic("alertmanager", "pa55")))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(s.salve.store.delivery_count().await.unwrap(), 2);
}

#[tokio::test]
async fn an_oversized_body_is_refused() {
    let s = spawn_salve(Options::default()).await;
    let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let (status, _) = s.post_alerts(&huge).await;
    assert_eq!(status, 413);
}

#[tokio::test]
async fn storage_trouble_answers_503_so_alertmanager_retries() {
    if std::env::var("SALVE_TEST_DATABASE").as_deref() == Ok("postgres") {
        // The lock below is SQLite's; PostgreSQL's outage path is the same code (StoreError::Unavailable).
        eprintln!("storage_trouble_answers_503: exercised on SQLite only");
        return;
    }
    let s = spawn_salve(Options::default()).await;
    // Another process holds SQLite's write lock longer than salve's busy timeout.
    let mut blocker = sqlx::SqliteConnection::connect(&s.database).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut blocker)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let resp = s
        .http
        .post(format!("{}/api/v1/alerts", s.url))
        .body(fixture("firing-single-api-posted.json"))
        .send()
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(resp.status(), 503);
    // Alertmanager gives up after 10 s and then cannot tell "busy" from "down": salve
    // answers after at most its database wait (3 s by default), with margin for the test.
    assert!(
        waited < std::time::Duration::from_millis(4500),
        "answered 503 only after {waited:?}"
    );
    assert!(resp.headers().contains_key("retry-after"));
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    drop(blocker);
    // Once the database is back the same delivery is accepted. The one answered 503 may
    // have been committed as the lock was released (its batch was already waiting for
    // it): then the retry is a re-send. Either way there is one incident, and it is
    // decided at once, not left for the slow sweep.
    let (status, ack) = s
        .post_alerts(&fixture("firing-single-api-posted.json"))
        .await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(
        ack["new_incidents"].as_u64().unwrap() + ack["repeated"].as_u64().unwrap(),
        1,
        "{ack}"
    );
    let (_, incidents) = s.get("/api/v1/alerts").await;
    assert_eq!(
        incidents["items"].as_array().unwrap().len(),
        1,
        "{incidents}"
    );
    eventually(
        "the incident to be decided",
        std::time::Duration::from_secs(5),
        async || {
            let (_, incidents) = s.get("/api/v1/alerts").await;
            match incidents["items"][0]["decision"].as_str() {
                Some("undecided") | None => Err(format!("{incidents}")),
                Some(_) => Ok(()),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_resolved_notification_closes_the_incident_without_acting() {
    let s = spawn_salve(Options::default()).await;
    let (status, ack) = s
        .post_alerts(&fixture("resolved-truncated-group.json"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        ack["new_incidents"], 0,
        "a resolved alert is never remediated"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(s.remediations().await.is_empty());
    // Nothing is left "undecided": salve never saw these fire, and says so.
    let (_, incidents) = s.get("/api/v1/alerts").await;
    let incidents = incidents["items"].as_array().unwrap();
    assert!(!incidents.is_empty());
    for i in incidents {
        assert_eq!(i["decision"], "resolved_before_decision", "{i:#}");
    }
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let s = spawn_salve(Options::default()).await;
    let health = s
        .http
        .get(format!("{}/healthz", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let (status, ready) = s.get("/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(ready["mode"], "offline");
    assert_eq!(ready["policy_hash"].as_str().unwrap().len(), 64);
    let (missing, _) = s.get("/api/v1/remediations/nope").await;
    assert_eq!(missing, 404);
}

#[tokio::test]
async fn the_audit_api_needs_the_read_or_admin_token_when_one_is_set() {
    let s = spawn_salve(Options {
        read_token: Some("r3ad".into()),
        admin_token: Some("adm1n".into()),
        ..Options::default()
    })
    .await;
    for path in [
        "/api/v1/remediations",
        "/api/v1/alerts",
        "/api/v1/openapi.json",
    ] {
        let url = format!("{}{path}", s.url);
        assert_eq!(
            s.http.get(&url).send().await.unwrap().status(),
            401,
            "{path}"
        );
        assert_eq!(
            s.http
                .get(&url)
                .bearer_auth("nope")
                .send()
                .await
                .unwrap()
                .status(),
            401,
            "{path}"
        );
        assert_eq!(
            s.http
                .get(&url)
                .bearer_auth("r3ad")
                .send()
                .await
                .unwrap()
                .status(),
            200,
            "{path}"
        );
        assert_eq!(
            s.http
                .get(&url)
                .bearer_auth("adm1n")
                .send()
                .await
                .unwrap()
                .status(),
            200,
            "{path}"
        );
    }
    // The read token does not reload; probes stay open.
    let reload = format!("{}/-/reload", s.url);
    assert_eq!(
        s.http
            .post(&reload)
            .bearer_auth("r3ad")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        s.http
            .get(format!("{}/healthz", s.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let s = spawn_salve(Options::default()).await;
    let (status, doc) = s.get("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.0.3");
    for path in [
        "/api/v1/alerts",
        "/api/v1/remediations",
        "/api/v1/remediations/{id}",
        "/-/reload",
        "/readyz",
        "/metrics",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} undocumented");
    }
    let params: Vec<&str> = doc["paths"]["/api/v1/remediations"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for filter in [
        "namespace",
        "target",
        "alertname",
        "rule",
        "outcome",
        "state",
        "since",
        "until",
        "cursor",
    ] {
        assert!(params.contains(&filter), "{filter} undocumented");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_the_environment_are_enforced_and_never_logged() {
    salve::telemetry::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let policies = support::policies_with_rules(dir.path(), None);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = dir.path().join("salve.log");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_salve"))
        .args([
            "serve",
            "--offline",
            "--no-watch",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .arg("--policies")
        .arg(&policies)
        .arg("--database")
        .arg(format!(
            "sqlite://{}",
            dir.path().join("salve.db").display()
        ))
        .env("SALVE_WEBHOOK_TOKEN", "hook-s3cret")
        .env("SALVE_READ_TOKEN", "read-s3cret")
        .env("RUST_LOG", "debug")
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let started = std::time::Duration::from_secs(20);
    eventually("salve to start", started, async || {
        let reply = http.get(format!("{base}/healthz")).send().await;
        reply.map(drop).map_err(|e| e.to_string())
    })
    .await;
    let body = fixture("firing-single-api-posted.json");
    let post = |token: &'static str| {
        http.post(format!("{base}/api/v1/alerts"))
            .bearer_auth(token)
            .body(body.clone())
            .send()
    };
    assert_eq!(post("wrong").await.unwrap().status(), 401);
    assert_eq!(post("hook-s3cret").await.unwrap().status(), 200);
    let list = format!("{base}/api/v1/remediations");
    assert_eq!(http.get(&list).send().await.unwrap().status(), 401);
    assert_eq!(
        http.get(&list)
            .bearer_auth("read-s3cret")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    child.kill().await.unwrap();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("listening"), "{logged}");
    assert!(
        !logged.contains("hook-s3cret") && !logged.contains("read-s3cret"),
        "a token was logged:\n{logged}"
    );
}

/// Reads from a raw connection until the server closes it (or `limit` passes); what it sent.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, limit: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let closed = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    closed
        .ok()
        .map(|()| String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test]
async fn idle_half_sent_and_surplus_connections_do_not_hold_the_port() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let s = spawn_salve(Options {
        connections: salve::server::ConnectionLimits {
            header_read_timeout: Duration::from_millis(400),
            request_timeout: Duration::from_millis(800),
            max_connections: 3,
            ..Default::default()
        },
        ..Options::default()
    })
    .await;
    let addr = s.salve.addr;

    // Connected and silent; half a request head; a whole head and half a body.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let mut half_head = TcpStream::connect(addr).await.unwrap();
    half_head
        .write_all(b"POST /api/v1/alerts HTTP/1.1\r\nHost: salve\r\n")
        .await
        .unwrap();
    let mut half_body = TcpStream::connect(addr).await.unwrap();
    half_body
        .write_all(
            b"POST /api/v1/alerts HTTP/1.1\r\nHost: salve\r\nContent-Length: 1000\r\n\r\n{\"vers",
        )
        .await
        .unwrap();

    // All three slots are held: a fourth client waits in the accept queue, unanswered.
    let mut surplus = TcpStream::connect(addr).await.unwrap();
    surplus
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: salve\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_until_closed(&mut surplus, Duration::from_millis(150)).await,
        None,
        "a fourth connection was served beyond the cap of three"
    );

    // The server closes each of them on its own, and the waiting client is then served.
    let limit = Duration::from_secs(5);
    assert_eq!(
        read_until_closed(&mut idle, limit).await.as_deref(),
        Some("")
    );
    assert!(read_until_closed(&mut half_head, limit).await.is_some());
    let answer = read_until_closed(&mut half_body, limit).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    let answer = read_until_closed(&mut surplus, limit).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert_eq!(s.salve.store.delivery_count().await.unwrap(), 0);
}

#[tokio::test]
async fn sixty_four_concurrent_webhooks_are_all_acknowledged_stored_and_decided() {
    // Group commit (src/store/writer.rs, whose unit tests show that writes waiting
    // together commit together and see each other) under concurrent webhooks.
    // Through the webhook: 64 at once, every one acknowledged, stored and decided.
    let s = spawn_salve(Options::default()).await;
    let posts = (0..64u32).map(|i| {
        let body = support::firing_for(
            "HighRequestLatency",
            "web",
            &format!("web-{i}"),
            &format!("{i:016x}"),
        );
        let s = &s;
        async move { s.post_alerts(&body).await.0 }
    });
    let answers = futures::future::join_all(posts).await;
    assert!(answers.iter().all(|a| *a == 200), "{answers:?}");
    assert_eq!(s.salve.store.delivery_count().await.unwrap(), 64);
    assert_eq!(s.settled(64).await.len(), 64);
}
