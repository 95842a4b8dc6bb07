//! What a registry and its token service answer, decoded without the network: the token
//! reply, the `errors` body of a failure, an upload session's `Location`, and a blob's
//! `Content-Length`. (Manifests and indexes are the store's own parsers; `WWW-Authenticate` is
//! `auth::parse_challenge`.) The client in `mod.rs` and `auth` call these; the `oci_replies`
//! fuzz target feeds them hostile bytes.

use super::super::error::{RemoteError, Result};
use super::super::http::{self, decode_json};
use serde::Deserialize;

/// A token service's answer (docker's `token`, OAuth2's `access_token`).
#[derive(Clone, Debug, Deserialize)]
pub struct TokenReply {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub access_token: Option<String>,
}

/// The token, if it is one that can go into an `Authorization` header: non-empty printable
/// ASCII under 64 KiB.
pub fn check_token(url: &str, t: TokenReply) -> Result<String> {
    t.token
        .or(t.access_token)
        .filter(|t| !t.is_empty() && t.len() < 64 << 10 && t.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| RemoteError::bad_reply(url, "no usable token in the reply"))
}

pub fn token(url: &str, body: &[u8]) -> Result<String> {
    check_token(url, decode_json(url, body)?)
}

#[derive(Deserialize)]
struct Errors {
    #[serde(default)]
    errors: Vec<ErrorItem>,
}

#[derive(Deserialize)]
struct ErrorItem {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// `code: message; ...` from a distribution error body (`{"errors":[{"code","message"}]}`),
/// `None` when the body is no such document or lists nothing. Not yet cut to printable text.
pub fn error_detail(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Errors>(body)
        .ok()
        .map(|e| {
            e.errors
                .iter()
                .map(|i| format!("{}: {}", i.code, i.message))
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|s| !s.is_empty())
}

/// The next URL of an upload session: `location` resolved against `request_url`, and on the
/// registry's own origin (`registry_base`), since the session URL receives the token.
pub fn upload_location(
    request_url: &str,
    registry_base: &str,
    location: Option<&str>,
) -> Result<String> {
    let loc = location
        .and_then(|l| http::join_location(request_url, l))
        .ok_or_else(|| RemoteError::bad_reply(request_url, "upload answer without a Location"))?;
    if http::origin(&loc).is_none() || http::origin(&loc) != http::origin(registry_base) {
        // a session URL on another host would receive our token
        return Err(RemoteError::bad_reply(
            request_url,
            format!(
                "upload location {} is on another host",
                http::shown_url(&loc)
            ),
        ));
    }
    Ok(loc)
}

/// Whether a blob's `HEAD` answer matches the size we hold: an absent or unreadable
/// `Content-Length` is no evidence against it.
pub fn blob_size_matches(content_length: Option<&str>, size: u64) -> bool {
    content_length
        .and_then(|v| v.parse::<u64>().ok())
        .is_none_or(|l| l == size)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTH: &str = "https://auth.example/token";

    #[test]
    fn token_replies() {
        // docker's token auth: `token`, with `access_token` as the OAuth2 alias
        let both = br#"{"token":"abc.def","access_token":"other","expires_in":300}"#;
        assert_eq!(token(AUTH, both).unwrap(), "abc.def");
        assert_eq!(
            token(AUTH, br#"{"access_token":"ghs_1"}"#).unwrap(),
            "ghs_1"
        );
        for body in [
            r#"{}"#.to_string(),
            r#"{"token":""}"#.into(),
            r#"{"token":"a b"}"#.into(),
            r#"{"token":"a\r\nX-Injected: 1"}"#.into(),
            format!(r#"{{"token":"{}"}}"#, "t".repeat(64 << 10)),
        ] {
            match token(AUTH, body.as_bytes()) {
                Err(RemoteError::BadReply { message, .. }) => {
                    assert!(message.contains("no usable token"), "{message}")
                }
                other => panic!("{body:.40}: {other:?}"),
            }
        }
        assert!(matches!(
            token(AUTH, br#"{"token":5}"#),
            Err(RemoteError::BadReply { .. })
        ));
    }

    #[test]
    fn error_bodies() {
        let body =
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}},
            {"code":"DENIED"}]}"#;
        assert_eq!(
            error_detail(body).as_deref(),
            Some("MANIFEST_UNKNOWN: manifest unknown; DENIED: ")
        );
        assert_eq!(error_detail(br#"{"errors":[]}"#), None);
        assert_eq!(error_detail(br#"{"errors":"x"}"#), None);
        assert_eq!(error_detail(b"404 page not found"), None);
    }

    #[test]
    fn upload_locations_stay_on_the_registry() {
        let base = "http://127.0.0.1:5000";
        let req = "http://127.0.0.1:5000/v2/a/blobs/uploads/";
        assert_eq!(
            upload_location(req, base, Some("/v2/a/blobs/uploads/u1?_state=s")).unwrap(),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/u1?_state=s"
        );
        assert_eq!(
            upload_location(req, base, Some("u2")).unwrap(),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/u2"
        );
        assert_eq!(
            upload_location(req, base, Some("http://127.0.0.1:5000/x")).unwrap(),
            "http://127.0.0.1:5000/x"
        );
        for bad in [
            Some("https://127.0.0.1:5000/x"),
            Some("http://evil.example/x"),
            Some("//evil.example/x"),
            None,
        ] {
            assert!(
                matches!(
                    upload_location(req, base, bad),
                    Err(RemoteError::BadReply { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn blob_sizes() {
        assert!(blob_size_matches(Some("4096"), 4096));
        assert!(!blob_size_matches(Some("4095"), 4096));
        assert!(blob_size_matches(None, 4096));
        assert!(blob_size_matches(Some("-1"), 4096));
    }
}
