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
        "denied: scale Deployment kube-system/coredns by +1 replicas (kept between 2 and 10)"
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

/// With a read token, a person logs in through the form: the token goes into a password
/// field once, the browser keeps an HttpOnly session cookie, and the pages open; a
/// wrong token is refused on the page, and logging out closes them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_logs_in_to_the_audit_page_with_the_read_token() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let s = spawn_salve(Options {
        read_token: Some("read-token-3a9f".into()),
        ..Options::default()
    })
    .await;
    s.post_alerts(&firing_for(
        "HighRequestLatency",
        "kube-system",
        "coredns",
        "0000000000000b01",
    ))
    .await;
    // The helpers read with the token; the browser has none yet.
    s.finished(1).await;

    // No session: the list sends the browser to the form.
    browser.open(&format!("{}/ui", s.url)).await;
    browser
        .wait_for_url("the login form", |u| u.ends_with("/ui/login"))
        .await;
    assert!(browser.find_all("tr.remediation").await.is_empty());

    browser
        .find("input[name=token]")
        .await
        .type_text("not-the-token")
        .await;
    browser.find("button[type=submit]").await.click().await;
    let error = browser.find("#error").await.text().await;
    assert!(error.contains("not the read token"), "{error}");

    browser
        .find("input[name=token]")
        .await
        .type_text("read-token-3a9f")
        .await;
    browser.find("button[type=submit]").await.click().await;
    let list = format!("{}/ui", s.url);
    browser.wait_for_url("the list", |u| u == list).await;
    let rows = browser.find_all("tr.remediation").await;
    assert_eq!(rows.len(), 1, "{}", browser.source().await);
    browser.find("tr.remediation a").await.click().await;
    browser
        .wait_for_url("a remediation's page", |u| u.contains("/ui/remediations/"))
        .await;
    assert_eq!(browser.find(".state").await.text().await, "denied");
    assert!(
        !browser.source().await.contains("read-token-3a9f"),
        "the token is not on the page"
    );

    // Log out: the pages are closed again.
    browser.open(&list).await;
    browser.find("form.logout button").await.click().await;
    browser
        .wait_for_url("the login form", |u| u.ends_with("/ui/login"))
        .await;
    browser.open(&list).await;
    browser
        .wait_for_url("the login form again", |u| u.ends_with("/ui/login"))
        .await;
    browser.close().await;
}

/// What the browser gets, header by header: the session cookie's attributes, the
/// pages' security headers, and what the cookie does not open.
#[tokio::test]
async fn the_session_cookie_is_http_only_strict_and_opens_only_reads() {
    let s = spawn_salve(Options {
        read_token: Some("read-token-77".into()),
        admin_token: Some("admin-token-88".into()),
        ..Options::default()
    })
    .await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let first = http.get(format!("{}/ui", s.url)).send().await.unwrap();
    assert_eq!(first.status(), 303);
    assert_eq!(first.headers()["location"], "/ui/login");

    let wrong = http
        .post(format!("{}/ui/login", s.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=guess")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());

    let login = http
        .post(format!("{}/ui/login", s.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=read-token-77")
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    assert_eq!(login.headers()["location"], "/ui");
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age="] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    assert!(!cookie.contains("read-token-77"), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_owned();

    let page = http
        .get(format!("{}/ui", s.url))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");

    // The cookie is for reading: it opens no admin endpoint.
    let reload = http
        .post(format!("{}/-/reload", s.url))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 401);
    // A forged or tampered cookie opens nothing.
    let (expires, tag) = session
        .trim_start_matches("salve_session=")
        .split_once('.')
        .unwrap();
    let forged = format!(
        "salve_session={}.{tag}",
        expires.parse::<i64>().unwrap() + 60
    );
    let refused = http
        .get(format!("{}/ui", s.url))
        .header("cookie", forged)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 303);
}

/// Behind a proxy at `https://ops.example/salve`, salve serves under `/salve` and every
/// link it emits carries the prefix: the escalation's link to the audit page, the page's
/// own links and forms.
#[tokio::test]
async fn behind_a_prefix_every_route_and_link_carries_it() {
    let capture = support::Capture::start().await;
    let s = spawn_salve(Options {
        external_url: Some(salve::http::ExternalUrl::parse("https://ops.example/salve/").unwrap()),
        escalation_webhook_url: Some(capture.url.clone()),
        ..Options::default()
    })
    .await;
    assert!(s.url.ends_with("/salve"), "{}", s.url);
    s.post_alerts(&firing_for(
        "HighRequestLatency",
        "kube-system",
        "coredns",
        "0000000000000c01",
    ))
    .await;
    let done = s.finished(1).await;
    let id = done[0]["id"].as_str().unwrap();
    let sent = capture.received(1).await;
    assert_eq!(
        sent[0]["audit_url"],
        format!("https://ops.example/salve/ui/remediations/{id}")
    );

    let (status, _) = s.get("/healthz").await;
    assert_eq!(status, 200);
    let root = s.url.trim_end_matches("/salve");
    let outside = s.http.get(format!("{root}/healthz")).send().await.unwrap();
    assert_eq!(outside.status(), 404, "only the prefix is served");
    let page = s
        .http
        .get(format!("{}/ui", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&format!("href=\"/salve/ui/remediations/{id}\"")),
        "{page}"
    );
    assert!(page.contains("action=\"/salve/ui\""), "{page}");
}

/// A change that waits for approval is decided on its page: a read session sees the
/// request but cannot decide; the admin token's session approves it, and salve writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_with_the_admin_token_approves_a_change_on_its_page() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let kube = support::FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    let s = spawn_salve(Options {
        kube: Some(kube.clone()),
        rules: Some(
            r#"
rules:
  - name: scale-with-approval
    matchers: ['alertname="HighRequestLatency"']
    target: { kind: Deployment, name: "{{ deployment }}" }
    action: { scale: { by: 1, max: 10 } }
    mode: approve
    verify: { within: 20s, every: 200ms }
"#
            .into(),
        ),
        read_token: Some("read-token-5c1".into()),
        admin_token: Some("admin-token-9d2".into()),
        ..Options::default()
    })
    .await;
    s.post_alerts(&firing_for(
        "HighRequestLatency",
        "shop",
        "checkout",
        "0000000000000c01",
    ))
    .await;
    let items = s.reached(1, &["awaiting_approval"]).await;
    let page = format!(
        "{}/ui/remediations/{}",
        s.url,
        items[0]["id"].as_str().unwrap()
    );
    let log_in = async |token: &str| {
        browser.open(&format!("{}/ui/login", s.url)).await;
        browser
            .find("input[name=token]")
            .await
            .type_text(token)
            .await;
        browser.find("button[type=submit]").await.click().await;
        let list = format!("{}/ui", s.url);
        browser.wait_for_url("the list", |u| u == list).await;
    };

    log_in("read-token-5c1").await;
    browser.open(&page).await;
    let request = browser.find("#request").await.text().await;
    assert!(
        request.contains("salve would scale Deployment shop/checkout from 2 to 3 replicas")
            && request.contains("rule scale-with-approval is in mode approve"),
        "{request}"
    );
    browser
        .find("#approve input[name=by]")
        .await
        .type_text("erin")
        .await;
    browser.find("#approve button").await.click().await;
    let refused = browser.find("#error").await.text().await;
    assert!(
        refused.contains("deciding takes the admin token"),
        "{refused}"
    );
    assert!(
        kube.writes().iter().all(|w| w.dry_run()),
        "{:?}",
        kube.writes()
    );

    browser.open(&format!("{}/ui", s.url)).await;
    browser.find("form.logout button").await.click().await;
    browser
        .wait_for_url("the login form", |u| u.ends_with("/ui/login"))
        .await;
    log_in("admin-token-9d2").await;
    browser.open(&page).await;
    browser
        .find("#approve input[name=by]")
        .await
        .type_text("erin")
        .await;
    browser.find("#approve button").await.click().await;
    browser
        .wait_for_url("back on the remediation's page", |u| u == page)
        .await;
    let items = s.settled(1).await;
    assert_eq!(items[0]["state"], "verifying", "{:#}", items[0]);
    assert_eq!(
        kube.writes()
            .iter()
            .filter(|w| !w.dry_run() && w.is_write())
            .count(),
        1,
        "{:?}",
        kube.writes()
    );
    browser.open(&page).await;
    assert!(
        browser
            .source()
            .await
            .contains("approved by erin (audit page)"),
        "the approver is on the timeline"
    );
    browser.close().await;
}

/// The morning after: the list's counts and median time to heal, the alert's name,
/// status and summary on each row; the knowledge page's actions and heal rates, a link
/// from it to the remediations behind a row, and on a remediation's page the policy
/// input in words, the Kubernetes calls, the verification's polls and the workload's
/// previous remediation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_morning_after_counts_knowledge_and_a_remediation_read_at_a_glance() {
    let Some(browser) = Browser::launch().await else {
        return;
    };
    let kube = support::FakeKube::start().await;
    kube.add_deployment("shop", "checkout", 2, "checkout:1.4");
    kube.add_deployment("kube-system", "coredns", 2, "coredns:1.11");
    let s = spawn_salve(Options {
        kube: Some(kube.clone()),
        rules: Some(
            r#"
rules:
  - name: checkout-latency
    matchers: ['alertname="HighRequestLatency"']
    target: { kind: Deployment, name: "{{ deployment }}" }
    action: { scale: { by: 1, max: 10 } }
    verify: { within: 1500ms, every: 200ms }
    cooldown: 0s
"#
            .into(),
        ),
        ..Options::default()
    })
    .await;
    // 1: not healed in time, escalated.
    s.post_alerts(&firing_for(
        "HighRequestLatency",
        "shop",
        "checkout",
        "0000000000000d01",
    ))
    .await;
    s.reached(1, &["escalated"]).await;
    // 2: healed (the alert resolves while salve verifies).
    let second = firing_for("HighRequestLatency", "shop", "checkout", "0000000000000d02");
    s.post_alerts(&second).await;
    s.reached(2, &["verifying", "escalated"]).await;
    s.post_alerts(&support::resolved(&second)).await;
    // 3: denied by the shipped guardrails (a protected namespace).
    s.post_alerts(&firing_for(
        "HighRequestLatency",
        "kube-system",
        "coredns",
        "0000000000000d03",
    ))
    .await;
    let items = s.reached(3, &["healed", "escalated", "denied"]).await;
    let healed_id = items
        .iter()
        .find(|r| r["state"] == "healed")
        .unwrap_or_else(|| panic!("{items:#?}"))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let escalated_id = items.iter().find(|r| r["state"] == "escalated").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    browser.open(&format!("{}/ui", s.url)).await;
    let count = async |id: &str| browser.find(&format!("#{id} b")).await.text().await;
    assert_eq!(count("count-all").await, "3");
    assert_eq!(count("count-healed").await, "1");
    assert_eq!(count("count-escalated").await, "1");
    assert_eq!(count("count-denied").await, "1");
    assert_eq!(count("count-failed").await, "0");
    assert_eq!(count("count-awaiting_approval").await, "0");
    let median = count("median-heal").await;
    assert!(median.ends_with('s') && median != "-", "{median}");
    let rows = browser.find_all("tr.remediation").await;
    assert_eq!(rows.len(), 3);
    let newest = rows[0].text().await;
    assert!(
        newest.contains("HighRequestLatency")
            && newest.contains("p99 latency above 500ms")
            && newest.contains("firing")
            && newest.contains("denied"),
        "{newest}"
    );
    let healed_row = rows[1].text().await;
    assert!(
        healed_row.contains("resolved") && healed_row.contains("healed"),
        "{healed_row}"
    );

    // The knowledge page, from the navigation.
    browser
        .find("nav a[href$='/ui/knowledge']")
        .await
        .click()
        .await;
    browser
        .wait_for_url("the knowledge page", |u| u.ends_with("/ui/knowledge"))
        .await;
    let table = browser.find("#knowledge").await.text().await;
    assert!(
        table.contains("HighRequestLatency")
            && table.contains("checkout-latency")
            && table.contains("scale:by=1")
            && table.contains("1 of 2")
            && table.contains("50%"),
        "{table}"
    );
    assert_eq!(browser.find_all("#knowledge svg.trend").await.len(), 1);
    assert!(browser.find_all("script").await.is_empty());
    browser.find("#knowledge a.behind").await.click().await;
    browser
        .wait_for_url("the remediations behind the row", |u| {
            u.contains("alertname=HighRequestLatency") && u.contains("rule=checkout-latency")
        })
        .await;
    // Behind the row: the two that tried the action (the denied one is the same rule's).
    assert_eq!(browser.find_all("tr.remediation").await.len(), 3);
    browser
        .find(&format!("a[href$='/ui/remediations/{healed_id}']"))
        .await
        .click()
        .await;
    browser
        .wait_for_url("the healed remediation", |u| u.ends_with(&healed_id))
        .await;
    let policy = browser.find("section.policy").await.text().await;
    assert!(policy.contains("Allowed by policy"), "{policy}");
    let calls = browser.find("#calls").await.text().await;
    assert!(
        calls.contains("PATCH /apis/apps/v1/namespaces/shop/deployments/checkout/scale?dryRun=All (dry run) -> 200")
            && calls.contains("PATCH /apis/apps/v1/namespaces/shop/deployments/checkout/scale -> 200"),
        "{calls}"
    );
    assert!(
        !browser
            .find_all("section.verification svg.polls circle.poll")
            .await
            .is_empty()
    );
    let source = browser.source().await;
    assert!(
        // The first remediation's scale stood (escalated, not reverted): 3 to 4 now.
        source.contains("<dt>action.from.replicas</dt><dd>3</dd>")
            && source.contains("<dt>action.to.replicas</dt><dd>4</dd>"),
        "the input in words: {}",
        source.split("class=\"input\"").nth(1).unwrap_or(&source)
    );
    browser.find("#prev").await.click().await;
    browser
        .wait_for_url("the workload's previous remediation", |u| {
            u.ends_with(&escalated_id)
        })
        .await;
    assert!(browser.find_all("#next").await.len() == 1);
    browser.close().await;
}
