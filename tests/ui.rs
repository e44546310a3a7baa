//! The audit page in a real browser (Debian's headless Chromium): load the list, filter
//! it, open a remediation, and check what a person would see. Skips loudly without
//! Chromium; under CI it must run.

mod support;

use support::{Options, firing_for, spawn_salve};

fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser"].into_iter().find(|b| {
        std::process::Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").is_err(),
            "chromium is required under CI (Debian package chromium)"
        );
        eprintln!(
            "\n*** SKIPPED: chromium not found; the audit page browser test did not run ***\n"
        );
    }
    found
}

/// The DOM Chromium renders for `url`.
async fn render(browser: &str, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_can_filter_the_audit_page_and_open_a_remediation() {
    let Some(browser) = chromium() else { return };
    let s = spawn_salve(Options::default()).await;
    s.post_alerts(&firing_for(
        "HighRequestLatency",
        "shop",
        "checkout",
        "0000000000000a01",
    ))
    .await;
    s.post_alerts(&firing_for(
        "HighRequestLatency",
        "payments",
        "api",
        "0000000000000a02",
    ))
    .await;
    s.post_alerts(&firing_for(
        "HighRequestLatency",
        "kube-system",
        "coredns",
        "0000000000000a03",
    ))
    .await;
    s.finished(3).await;

    let all = render(browser, &format!("{}/ui", s.url)).await;
    assert!(all.contains("<h1>salve: what was done</h1>"), "{all}");
    assert_eq!(all.matches("class=\"remediation\"").count(), 3, "{all}");
    assert!(all.contains("namespace kube-system is protected: salve never changes it"));

    // Filtering is the page's GET form: namespace=kube-system.
    let filtered = render(browser, &format!("{}/ui?namespace=kube-system", s.url)).await;
    assert_eq!(
        filtered.matches("class=\"remediation\"").count(),
        1,
        "{filtered}"
    );
    assert!(filtered.contains("Deployment/kube-system/coredns"));
    assert!(!filtered.contains("Deployment/shop/checkout"));
    assert!(
        filtered.contains("value=\"kube-system\""),
        "the form keeps the filter"
    );

    // Open the remediation from its link.
    let href = filtered
        .split("href=\"/ui/remediations/")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a link to the remediation");
    let detail = render(browser, &format!("{}/ui/remediations/{href}", s.url)).await;
    assert!(
        detail.contains("<span class=\"state denied\">denied</span>"),
        "{detail}"
    );
    assert!(detail.contains("rule latency-scale-up matched"));
    assert!(
        detail.contains(
            "scale Deployment kube-system/coredns by +1 replicas (within 2..=10) -&gt; denied"
        ),
        "{detail}"
    );
    assert!(detail.contains("pending -&gt; denied"), "{detail}");
    assert!(!detail.contains("<script"), "the page needs no script");
}
