//! The audit page in a real browser: Debian's headless Chromium driven through
//! ChromeDriver. A person loads the list, types a namespace into the filter form and
//! submits it, opens a remediation from its link, and reads its timeline. Skips loudly
//! without Chromium and ChromeDriver; under CI it must run.

mod support;

use support::browser::Browser;
use support::{Options, firing_for, spawn_salve};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_can_filter_the_audit_page_and_open_a_remediation() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let s = spawn_salve(Options::default()).await;
    for (i, (namespace, name, fingerprint)) in [
        ("shop", "checkout", "0000000000000a01"),
        ("payments", "api", "0000000000000a02"),
        ("kube-system", "coredns", "0000000000000a03"),
    ]
    .into_iter()
    .enumerate()
    {
        s.post_alerts(&firing_for(
            "HighRequestLatency",
            namespace,
            name,
            fingerprint,
        ))
        .await;
        // One at a time, so "newest first" has one right answer.
        s.finished(i + 1).await;
    }

    browser.open(&format!("{}/ui", s.url)).await;
    assert_eq!(
        browser.find("h1").await.text().await,
        "salve: what was done"
    );
    let rows = browser.find_all("tr.remediation").await;
    assert_eq!(rows.len(), 3);
    let mut shown = Vec::new();
    for row in &rows {
        shown.push(row.text().await);
    }
    assert!(
        shown[0].contains("Deployment/kube-system/coredns"),
        "newest first: {shown:?}"
    );
    assert!(
        shown[0].contains("namespace kube-system is protected: salve never changes it"),
        "the deny reason is on the list: {shown:?}"
    );

    // Filter as a person does: type into the form and press the button.
    browser
        .find("input[name=namespace]")
        .await
        .type_text("kube-system")
        .await;
    browser.find("button[type=submit]").await.click().await;
    browser
        .wait_for_url("the filtered list", |u| u.contains("namespace=kube-system"))
        .await;
    let rows = browser.find_all("tr.remediation").await;
    assert_eq!(rows.len(), 1, "{}", browser.source().await);
    let row = rows[0].text().await;
    assert!(row.contains("Deployment/kube-system/coredns"), "{row}");
    assert!(row.contains("denied"), "{row}");
    assert!(!browser.source().await.contains("Deployment/shop/checkout"));

    // Open the remediation from its link and read the timeline.
    browser.find("tr.remediation a").await.click().await;
    browser
        .wait_for_url("a remediation's page", |u| u.contains("/ui/remediations/"))
        .await;
    assert_eq!(browser.find(".state").await.text().await, "denied");
    let summary = browser.find("#summary").await.text().await;
    assert_eq!(
        summary,
        "denied: scale Deployment kube-system/coredns by +1 replicas (within 2..=10)"
    );
    let mut timeline = Vec::new();
    for event in browser.find_all("#timeline tr.event").await {
        timeline.push(event.text().await);
    }
    let timeline = timeline.join("\n");
    assert!(
        timeline.contains("rule latency-scale-up matched"),
        "{timeline}"
    );
    assert!(timeline.contains("pending -> denied"), "{timeline}");
    assert!(
        timeline.contains("namespace kube-system is protected"),
        "the verdict's reasons are in the timeline: {timeline}"
    );
    assert!(
        browser.find_all("script").await.is_empty(),
        "the page needs no script"
    );

    // And back to the list from the detail page.
    browser.find("a[href='/ui']").await.click().await;
    let list = format!("{}/ui", s.url);
    browser
        .wait_for_url("the unfiltered list", |u| u == list)
        .await;
    assert_eq!(browser.find_all("tr.remediation").await.len(), 3);

    // A filter that can never match is explained on a page, with the form to fix it.
    browser.open(&format!("{}/ui?state=bogus", s.url)).await;
    let error = browser.find("#error").await.text().await;
    assert!(error.contains("unknown state \"bogus\""), "{error}");
    assert!(browser.find_all("tr.remediation").await.is_empty());
    assert_eq!(browser.find_all("input[name=state]").await.len(), 1);
    browser.close().await;
}

/// Errors on the audit page are pages a person can read, with the API's status codes.
#[tokio::test]
async fn audit_page_errors_are_pages_with_the_api_status() {
    let s = spawn_salve(Options::default()).await;
    for (path, status) in [
        ("/ui?state=bogus", 400),
        ("/ui/remediations/no-such-remediation", 404),
    ] {
        let reply = s.http.get(format!("{}{path}", s.url)).send().await.unwrap();
        assert_eq!(reply.status().as_u16(), status, "{path}");
        let content_type = reply.headers()[reqwest::header::CONTENT_TYPE].clone();
        assert_eq!(content_type, "text/html; charset=utf-8", "{path}");
        assert!(reply.text().await.unwrap().contains("id=error"), "{path}");
    }
}
