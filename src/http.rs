//! The HTTP error model shared by the webhook and the audit API.
//!
//! Each variant is one status code, chosen for what the caller should do next:
//! Alertmanager retries 5xx and never 4xx, so a payload that can never be accepted is
//! a 400 with its reason, and a database hiccup is a 503 (with `Retry-After`) so the
//! alert comes back. Internal errors are logged with their cause and shown as a plain
//! 500, never with internals.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::store::StoreError;

/// Why a request was refused, in the words the client was given (never credentials,
/// never internals): attached to every error response so the webhook's access log can
/// say why it refused a delivery without parsing the body back.
#[derive(Debug, Clone)]
pub struct Refusal(pub String);

/// An error an HTTP handler returns.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The request can never succeed as sent; the message says why.
    #[error("{0}")]
    BadRequest(String),
    /// Credentials are missing or wrong.
    #[error("authentication required")]
    Unauthorized,
    /// Authenticated (or not), but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// No such thing.
    #[error("{0}")]
    NotFound(String),
    /// The request is valid but the thing is not in a state to take it (an approval
    /// already decided, or expired).
    #[error("{0}")]
    Conflict(String),
    /// Transient trouble; try again.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else; details go to the log only.
    #[error("internal error")]
    Internal(String),
}

impl From<StoreError> for HttpError {
    fn from(e: StoreError) -> HttpError {
        if e.is_transient() {
            HttpError::Unavailable(format!("the knowledge base is unavailable, try again: {e}"))
        } else {
            HttpError::Internal(e.to_string())
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = match &self {
            HttpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HttpError::Unauthorized => StatusCode::UNAUTHORIZED,
            HttpError::Forbidden(_) => StatusCode::FORBIDDEN,
            HttpError::NotFound(_) => StatusCode::NOT_FOUND,
            HttpError::Conflict(_) => StatusCode::CONFLICT,
            HttpError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        if let HttpError::Unavailable(cause) = &self {
            tracing::warn!(%cause, "answering 503");
        }
        let mut response = (status, Json(json!({"error": self.to_string()}))).into_response();
        response.extensions_mut().insert(Refusal(self.to_string()));
        match self {
            HttpError::Unauthorized => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"salve\", Basic realm=\"salve\""),
                );
            }
            HttpError::Unavailable(_) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        response
    }
}

/// Where people reach salve (`--external-url`, as Alertmanager's `--web.external-url`):
/// every link salve sends out is built from it, and its path is the prefix salve serves
/// under, so it works behind a proxy that forwards `https://ops.example/salve/` unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalUrl {
    /// Without a trailing slash.
    base: String,
    /// The path part, without a trailing slash: "" at the root, "/salve" under a prefix.
    prefix: String,
    https: bool,
}

impl ExternalUrl {
    /// Reads `--external-url`: an absolute http(s) URL without query or fragment.
    pub fn parse(text: &str) -> Result<ExternalUrl, String> {
        let url = reqwest::Url::parse(text)
            .map_err(|e| format!("--external-url {text:?} is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!(
                "--external-url {text:?} must be an http:// or https:// URL with a host"
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "--external-url {text:?} must not have a query or fragment"
            ));
        }
        let prefix = url.path().trim_end_matches('/').to_owned();
        Ok(ExternalUrl {
            base: url.as_str().trim_end_matches('/').to_owned(),
            prefix,
            https: url.scheme() == "https",
        })
    }

    /// The default when none is given: `http://HOST:PORT` with the listen address, or
    /// this host's name when listening on every interface (as Alertmanager does).
    pub fn default_for(listen: std::net::SocketAddr, host_name: &str) -> ExternalUrl {
        let host = if listen.ip().is_unspecified() {
            host_name.to_owned()
        } else {
            match listen.ip() {
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                ip => ip.to_string(),
            }
        };
        ExternalUrl {
            base: format!("http://{host}:{}", listen.port()),
            prefix: String::new(),
            https: false,
        }
    }

    /// The absolute URL of `path` (which starts with `/`).
    pub fn link(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The root-relative path of `path` under the prefix, for links inside salve's pages.
    pub fn path(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }

    /// The prefix salve serves under ("" at the root).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether people reach salve over TLS (its cookies are then `Secure`).
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The URL itself, without a trailing slash.
    pub fn as_str(&self) -> &str {
        &self.base
    }
}

#[cfg(test)]
mod tests {
    use super::ExternalUrl;

    #[test]
    fn external_urls_give_links_and_a_prefix() {
        let u = ExternalUrl::parse("https://ops.example/salve/").unwrap();
        assert_eq!(
            u.link("/ui/remediations/1"),
            "https://ops.example/salve/ui/remediations/1"
        );
        assert_eq!(u.path("/ui"), "/salve/ui");
        assert!(u.is_https());
        let root = ExternalUrl::parse("http://salve.example:9095").unwrap();
        assert_eq!(root.path("/ui"), "/ui");
        assert_eq!(root.prefix(), "");
        assert!(ExternalUrl::parse("salve.example").is_err());
        assert!(ExternalUrl::parse("https://x.example/?a=b").is_err());
        let any = ExternalUrl::default_for("0.0.0.0:9095".parse().unwrap(), "salve-0");
        assert_eq!(any.link("/ui"), "http://salve-0:9095/ui");
        let local = ExternalUrl::default_for("127.0.0.1:9095".parse().unwrap(), "h");
        assert_eq!(local.as_str(), "http://127.0.0.1:9095");
    }
}
