//! Who may call the API from a browser: the checks that stop a web page from driving the
//! broker (cross-site request forgery, DNS rebinding).
//!
//! A page on any site can make the browser send a "simple" cross-origin request (a form's
//! `text/plain` or form-encoded POST, or a body with no type at all) without asking first, and a
//! page on a name the attacker rebinds to 127.0.0.1 is same-origin with the broker as far as
//! the browser knows. So, before any handler runs:
//!
//! - **Host** must name the broker: an IP address (a rebinding attack needs a name the
//!   attacker controls, so a literal address is never one), `localhost` or a `*.localhost`
//!   name (browsers resolve those to loopback themselves), or one of
//!   [`super::HttpConfig::allowed_hosts`] (the name a reverse proxy forwards; `*` allows any).
//!   A request without `Host` (HTTP/1.0 tools) passes: browsers always send it.
//! - **Origin**, when present (browsers send it on every cross-origin request and every
//!   non-GET), must be the listener's own origin: its `host:port` is the request's `Host`, or
//!   its host is one of the allowed hosts. `Origin: null` (sandboxed frames, files) is refused.
//! - A **state-changing request with a body** (POST, PUT, PATCH, DELETE) must say
//!   `content-type: application/json` (or a `+json` type). No browser sends that cross-origin
//!   without a CORS preflight, which this API never grants. Requests without a body (a purge,
//!   a delete) are covered by the Origin check.
//!
//! Refusals are `403 unauthorised` (Host, Origin) and `415 invalid_argument` (content type), in
//! the API's error body.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use weir_proto::ErrorCode;

use super::error::ApiError;

/// The checks, with the configured extra host names (lower case).
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestGuard {
    allowed_hosts: Vec<String>,
}

impl RequestGuard {
    pub(crate) fn new(allowed_hosts: &[String]) -> RequestGuard {
        RequestGuard {
            allowed_hosts: allowed_hosts
                .iter()
                .map(|host| host.trim().to_ascii_lowercase())
                .collect(),
        }
    }

    /// Refuses a request a browser could have been made to send on another site's behalf.
    pub(crate) fn check(&self, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
        let host = match headers.get(header::HOST) {
            Some(value) => Some(
                value
                    .to_str()
                    .map_err(|_| forbidden("the Host header is not text".into()))?,
            ),
            None => None,
        };
        if let Some(host) = host
            && !self.host_allowed(hostname(host))
        {
            return Err(forbidden(format!(
                "the Host header '{host}' names neither this broker's address nor localhost; a reverse proxy's name must be allowed with --http-allowed-hosts"
            )));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("(not text)");
            let authority = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"));
            let same_origin = authority.is_some_and(|authority| {
                host.is_some_and(|host| host.eq_ignore_ascii_case(authority))
                    || self.listed(hostname(authority))
            });
            if !same_origin {
                return Err(forbidden(format!(
                    "cross-origin requests are refused: the Origin '{origin}' is not this listener's origin"
                )));
            }
        }
        if changes_state(method) && has_body(headers) {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok());
            if !content_type.is_some_and(is_json) {
                return Err(ApiError {
                    status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    code: ErrorCode::InvalidArgument,
                    message: format!(
                        "a {method} body must be JSON, sent with 'content-type: application/json' (got {})",
                        content_type.map_or("none".to_owned(), |value| format!("'{value}'"))
                    ),
                });
            }
        }
        Ok(())
    }

    fn host_allowed(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.');
        name.trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok()
            || name.eq_ignore_ascii_case("localhost")
            || name.to_ascii_lowercase().ends_with(".localhost")
            || self.listed(name)
    }

    fn listed(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.');
        self.allowed_hosts
            .iter()
            .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(name))
    }
}

/// The axum middleware running [`RequestGuard::check`] before every handler.
pub(crate) async fn guard(
    State(guard): State<Arc<RequestGuard>>,
    request: Request,
    next: Next,
) -> Response {
    match guard.check(request.method(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

fn forbidden(message: String) -> ApiError {
    ApiError {
        status: StatusCode::FORBIDDEN,
        code: ErrorCode::Unauthorised,
        message,
    }
}

/// The host of a `Host` header or an origin's authority, without the port (IPv6 addresses
/// keep their brackets).
fn hostname(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _port)| host)
}

fn changes_state(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// Whether the request says it carries a body: a non-zero length, or a chunked one.
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|length| length.trim() != "0")
}

/// `application/json`, or any `+json` type, with or without parameters.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for &(name, value) in pairs {
            map.insert(name, HeaderValue::from_static(value));
        }
        map
    }

    fn status(
        guard: &RequestGuard,
        method: Method,
        pairs: &[(&'static str, &'static str)],
    ) -> Option<StatusCode> {
        guard
            .check(&method, &headers(pairs))
            .err()
            .map(|error| error.status)
    }

    #[test]
    fn hosts_must_be_addresses_localhost_or_allowed() {
        let guard = RequestGuard::new(&["weir.example.com".into()]);
        for host in [
            "127.0.0.1:15680",
            "10.1.2.3",
            "[::1]:15680",
            "localhost:15680",
            "LOCALHOST",
            "app.localhost:80",
            "weir.example.com",
            "Weir.Example.Com:443",
        ] {
            let mut map = HeaderMap::new();
            map.insert(header::HOST, HeaderValue::from_str(host).unwrap());
            assert!(guard.check(&Method::GET, &map).is_ok(), "{host}");
        }
        for host in ["evil.com:15680", "localhost.evil.com", "127.0.0.1.nip.io"] {
            let mut map = HeaderMap::new();
            map.insert(header::HOST, HeaderValue::from_str(host).unwrap());
            assert_eq!(
                guard.check(&Method::GET, &map).unwrap_err().status,
                StatusCode::FORBIDDEN,
                "{host}"
            );
        }
        assert!(RequestGuard::new(&["*".into()]).host_allowed("anything.example"));
    }

    #[test]
    fn only_the_listeners_own_origin_passes() {
        let guard = RequestGuard::new(&["weir.example.com".into()]);
        let host = ("host", "127.0.0.1:15680");
        assert_eq!(
            status(
                &guard,
                Method::POST,
                &[host, ("origin", "http://127.0.0.1:15680")]
            ),
            None
        );
        assert_eq!(
            status(
                &guard,
                Method::POST,
                &[host, ("origin", "https://weir.example.com")]
            ),
            None
        );
        for origin in [
            "http://evil.com",
            "null",
            "http://127.0.0.1:8080",
            "file://",
        ] {
            let map = {
                let mut map = headers(&[host]);
                map.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
                map
            };
            assert_eq!(
                guard.check(&Method::DELETE, &map).unwrap_err().status,
                StatusCode::FORBIDDEN,
                "{origin}"
            );
        }
    }

    #[test]
    fn bodies_that_change_state_must_be_json() {
        let guard = RequestGuard::default();
        let body = ("content-length", "2");
        assert_eq!(
            status(
                &guard,
                Method::POST,
                &[body, ("content-type", "application/json")]
            ),
            None
        );
        assert_eq!(
            status(
                &guard,
                Method::POST,
                &[body, ("content-type", "Application/JSON; charset=utf-8")]
            ),
            None
        );
        assert_eq!(
            status(
                &guard,
                Method::POST,
                &[body, ("content-type", "application/merge-patch+json")]
            ),
            None
        );
        for content_type in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ] {
            let mut map = headers(&[body]);
            map.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            assert_eq!(
                guard.check(&Method::POST, &map).unwrap_err().status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            );
        }
        assert_eq!(
            status(&guard, Method::PUT, &[("transfer-encoding", "chunked")]),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert_eq!(
            status(&guard, Method::POST, &[body]),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        // No body: nothing to check; reads are never refused for their type.
        assert_eq!(
            status(&guard, Method::POST, &[("content-length", "0")]),
            None
        );
        assert_eq!(status(&guard, Method::DELETE, &[]), None);
        assert_eq!(
            status(&guard, Method::GET, &[body, ("content-type", "text/plain")]),
            None
        );
    }
}
