//! A real headless Chromium driven through ChromeDriver's W3C WebDriver protocol (Debian's
//! `chromium` and `chromium-driver`), so a test types, clicks and reads what a person
//! would. Only the handful of WebDriver commands the audit page test needs.
//!
//! When either binary is missing, [`Browser::launch`] says so loudly and returns `None`;
//! under CI (`CI` set) it fails instead.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// The key WebDriver uses for an element reference in JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One browser session; ChromeDriver (and with it Chromium) dies with it.
pub struct Browser {
    http: reqwest::Client,
    session: String,
    _driver: Child,
    _profile: tempfile::TempDir,
}

/// An element found on the current page.
pub struct Element<'b> {
    browser: &'b Browser,
    id: String,
}

impl Browser {
    /// Starts ChromeDriver on a free loopback port and opens a headless Chromium session.
    pub async fn launch() -> Option<Browser> {
        let chromium = ["chromium", "chromium-browser"]
            .into_iter()
            .find(|b| super::installed(b, &["--version"]));
        let (Some(chromium), true) = (chromium, super::installed("chromedriver", &["--version"]))
        else {
            super::component_missing(
                "chromium or chromedriver (Debian packages chromium, chromium-driver)",
                "the audit page browser test",
            );
            return None;
        };
        let binary = which(chromium);
        let port = super::real::free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        salve::telemetry::install_crypto_provider();
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        super::eventually(
            "chromedriver to be ready",
            Duration::from_secs(20),
            async || {
                let reply = http.get(format!("{base}/status")).send().await;
                let status: Value = reply
                    .map_err(|e| e.to_string())?
                    .json()
                    .await
                    .map_err(|e| e.to_string())?;
                if status["value"]["ready"] == true {
                    Ok(())
                } else {
                    Err(status.to_string())
                }
            },
        )
        .await;
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": binary, "args": args},
            }}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_owned();
        Some(Browser {
            http,
            session: format!("{base}/session/{session}"),
            _driver: driver,
            _profile: profile,
        })
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if !body.is_null() {
            request = request.json(&body);
        }
        let reply: Value = request.send().await.unwrap().json().await.unwrap();
        assert!(
            reply["value"].get("error").is_none(),
            "WebDriver {path}: {reply}"
        );
        reply["value"].clone()
    }

    /// Ends the session, which closes Chromium; ChromeDriver itself ends on drop.
    pub async fn close(self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            self.http.delete(&self.session).send(),
        )
        .await;
    }

    /// Loads `url` and waits for the page to finish loading.
    pub async fn open(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    /// A GET command whose value is a string (an address, a page source, a text).
    async fn string(&self, path: &str) -> String {
        let value = self.command(reqwest::Method::GET, path, Value::Null).await;
        value.as_str().expect("a string value").to_owned()
    }

    /// The address of the page shown now.
    pub async fn url(&self) -> String {
        self.string("/url").await
    }

    /// Waits (up to 10 s) until the address shown satisfies `wanted` (described by
    /// `what`), as it does once a click's navigation has happened; panics with the
    /// address shown.
    pub async fn wait_for_url(&self, what: &str, wanted: impl Fn(&str) -> bool) {
        super::eventually(what, Duration::from_secs(10), async || {
            let url = self.url().await;
            if wanted(&url) { Ok(()) } else { Err(url) }
        })
        .await;
    }

    /// The page's current DOM as HTML.
    pub async fn source(&self) -> String {
        self.string("/source").await
    }

    /// Every element matching a CSS selector.
    pub async fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        let found = self
            .command(
                reqwest::Method::POST,
                "/elements",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        found
            .as_array()
            .unwrap()
            .iter()
            .map(|e| Element {
                browser: self,
                id: e[ELEMENT].as_str().unwrap().to_owned(),
            })
            .collect()
    }

    /// The first element matching a CSS selector, waiting up to ten seconds for it: a
    /// click on a submit button returns before the next page loads, so the element may
    /// not be there yet. Panics when none appears.
    pub async fn find(&self, css: &str) -> Element<'_> {
        super::eventually(
            &format!("an element matching {css}"),
            Duration::from_secs(10),
            async || match self.find_all(css).await.into_iter().next() {
                Some(element) => Ok(element),
                None => Err(format!("none on {}", self.url().await)),
            },
        )
        .await
    }
}

impl Element<'_> {
    /// Types `text` into the element, as a person at the keyboard would.
    pub async fn type_text(&self, text: &str) {
        self.browser
            .command(
                reqwest::Method::POST,
                &format!("/element/{}/value", self.id),
                json!({ "text": text }),
            )
            .await;
    }

    /// Clicks the element. A link or submit button may return before its page loads:
    /// follow with [`Browser::wait_for_url`].
    pub async fn click(&self) {
        self.browser
            .command(
                reqwest::Method::POST,
                &format!("/element/{}/click", self.id),
                json!({}),
            )
            .await;
    }

    /// The element's text as rendered (what a person reads).
    pub async fn text(&self) -> String {
        self.browser
            .string(&format!("/element/{}/text", self.id))
            .await
    }
}

/// The absolute path of `program` on PATH (ChromeDriver wants the browser binary's path).
fn which(program: &str) -> String {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(program))
                .find(|p| p.is_file())
        })
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| program.to_owned())
}
