//! Browser sessions for the audit page.
//!
//! A browser cannot send a bearer header, so `/ui/login` takes the read token (or the
//! admin token) through a form and answers with a session cookie: `HttpOnly` (no script
//! reads it), `SameSite=Strict` (no other site's page can make the browser send it),
//! scoped to the pages' path, `Secure` when salve is reached over https, valid for
//! [`LIFETIME`]. The cookie holds no token: it is an expiry time signed with HMAC-SHA256
//! keyed by the token it was issued for, so it proves the holder knew a token, and a new
//! token (a rotated Secret) ends every session issued under the old one. The cookie
//! opens the audit pages and the read API only; admin endpoints take a bearer token.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Secret;
use crate::http::ExternalUrl;

/// The cookie's name.
pub const COOKIE: &str = "salve_session";

/// How long a login lasts: a night's shift.
pub const LIFETIME: chrono::Duration = chrono::Duration::hours(12);

const CONTEXT: &[u8] = b"salve-ui-session\0";

fn mac(token: &Secret, expires: i64) -> Hmac<Sha256> {
    // HMAC takes a key of any length; this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(token.0.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
    mac.update(CONTEXT);
    mac.update(expires.to_string().as_bytes());
    mac
}

/// A session value for someone who gave `token`, valid until `now + LIFETIME`.
pub fn issue(token: &Secret, now: DateTime<Utc>) -> String {
    let expires = (now + LIFETIME).timestamp();
    let tag = mac(token, expires).finalize().into_bytes();
    format!(
        "{expires}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag)
    )
}

/// Whether `value` is an unexpired session issued for one of `tokens`.
pub fn valid(value: &str, tokens: &[&Secret], now: DateTime<Utc>) -> bool {
    let Some((expires, tag)) = value.split_once('.') else {
        return false;
    };
    let (Ok(expires), Ok(tag)) = (
        expires.parse::<i64>(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(tag),
    ) else {
        return false;
    };
    if expires <= now.timestamp() || expires > (now + LIFETIME).timestamp() {
        return false;
    }
    tokens
        .iter()
        .any(|t| mac(t, expires).verify_slice(&tag).is_ok())
}

/// The session cookie in a request's `Cookie` headers, if any.
pub fn from_headers(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// The `Set-Cookie` value that starts a session (or, with `None`, ends it).
pub fn set_cookie(value: Option<&str>, external: &ExternalUrl) -> String {
    let secure = if external.is_https() { "; Secure" } else { "" };
    let path = external.path("/ui");
    match value {
        Some(v) => format!(
            "{COOKIE}={v}; Path={path}; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
            LIFETIME.num_seconds()
        ),
        None => format!("{COOKIE}=; Path={path}; Max-Age=0; HttpOnly; SameSite=Strict{secure}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_valid_for_its_token_until_it_expires() {
        let token = Secret("read-token".into());
        let other = Secret("another".into());
        let now = Utc::now();
        let value = issue(&token, now);
        assert!(valid(&value, &[&token], now));
        assert!(valid(
            &value,
            &[&other, &token],
            now + chrono::Duration::hours(11)
        ));
        assert!(!valid(&value, &[&other], now), "a rotated token ends it");
        assert!(!valid(&value, &[&token], now + LIFETIME), "expired");
        let (expires, tag) = value.split_once('.').unwrap();
        let later = format!("{}.{tag}", expires.parse::<i64>().unwrap() + 3600);
        assert!(!valid(&later, &[&token], now), "the expiry is signed");
        assert!(!valid("garbage", &[&token], now));
        assert!(!value.contains("read-token"));
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_scoped() {
        let external = ExternalUrl::parse("https://ops.example/salve").unwrap();
        let c = set_cookie(Some("v"), &external);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        assert!(c.contains("Path=/salve/ui"), "{c}");
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            axum::http::header::COOKIE,
            "a=b; salve_session=123.abc".parse().unwrap(),
        );
        assert_eq!(from_headers(&headers), Some("123.abc"));
    }
}
