//! Webhook authentication, as Alertmanager's `http_config` sends it.
//!
//! Alertmanager can send `Authorization: Bearer <token>` (`authorization:` or the older
//! `bearer_token`) or HTTP basic auth (`basic_auth:`). salve accepts whichever is
//! configured; with neither configured the webhook is open, which is only sensible on
//! loopback (the default listen address). Secrets are compared in constant time and
//! never logged.

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use subtle::ConstantTimeEq;

/// The credentials the webhook accepts.
#[derive(Clone, Default)]
pub struct WebhookAuth {
    pub bearer_token: Option<String>,
    pub basic: Option<(String, String)>,
}

impl std::fmt::Debug for WebhookAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookAuth")
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "basic",
                &self.basic.as_ref().map(|(u, _)| (u, "<redacted>")),
            )
            .finish()
    }
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

impl WebhookAuth {
    /// Whether any credential is required.
    pub fn is_required(&self) -> bool {
        self.bearer_token.is_some() || self.basic.is_some()
    }

    /// Whether the request's `Authorization` header satisfies one configured credential.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        self.check(headers).is_ok()
    }

    /// Admits the request, or says why not in words safe to log (the scheme, never the
    /// credentials).
    pub fn check(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        if !self.is_required() {
            return Ok(());
        }
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err("no Authorization header");
        };
        let Ok(value) = value.to_str() else {
            return Err("an Authorization header that is not text");
        };
        self.matches(value)
    }

    fn matches(&self, value: &str) -> Result<(), &'static str> {
        let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
        let credentials = credentials.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            let Some(token) = &self.bearer_token else {
                return Err("a bearer token, but only basic auth is configured");
            };
            return match same(token.as_bytes(), credentials.as_bytes()) {
                true => Ok(()),
                false => Err("a wrong bearer token"),
            };
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let Some((user, pass)) = &self.basic else {
                return Err("basic auth, but only a bearer token is configured");
            };
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(credentials) else {
                return Err("basic auth that is not base64");
            };
            let expected = format!("{user}:{pass}");
            return match same(expected.as_bytes(), &decoded) {
                true => Ok(()),
                false => Err("wrong basic auth credentials"),
            };
        }
        Err("an Authorization scheme that is neither Bearer nor Basic")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn open_when_nothing_is_configured() {
        assert!(WebhookAuth::default().admits(&HeaderMap::new()));
    }

    #[test]
    fn bearer_token_must_match() {
        let auth = WebhookAuth {
            bearer_token: Some("s3cret".into()),
            basic: None,
        };
        assert!(auth.admits(&headers("Bearer s3cret")));
        assert!(auth.admits(&headers("bearer s3cret")));
        assert!(!auth.admits(&headers("Bearer s3cre")));
        assert!(!auth.admits(&HeaderMap::new()));
        assert!(!auth.admits(&headers("Basic czNjcmV0")));
    }

    #[test]
    fn basic_auth_must_match() {
        let auth = WebhookAuth {
            bearer_token: None,
            basic: Some(("alertmanager".into(), "pw".into())),
        };
        let good = base64::engine::general_purpose::STANDARD.encode("alertmanager:pw");
        let bad = base64::engine::general_purpose::STANDARD.encode("alertmanager:nope");
        assert!(auth.admits(&headers(&format!("Basic {good}"))));
        assert!(!auth.admits(&headers(&format!("Basic {bad}"))));
        assert!(!auth.admits(&headers("Bearer pw")));
    }
}
