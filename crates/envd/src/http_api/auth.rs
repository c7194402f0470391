//! Who may use `/files`: the access token in `X-Access-Token`, or a URL
//! signature the SDK computes from the same token (`downloadUrl`/`uploadUrl`),
//! so that a URL can be handed to a browser without the token itself.

use base64::Engine;
use http::HeaderMap;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use crate::state::EnvdState;

pub const ACCESS_TOKEN_HEADER: &str = "x-access-token";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Read,
    Write,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Write => "write",
        }
    }
}

/// What a request presented to prove it may touch a file.
#[derive(Debug, Default)]
pub struct FileAuth<'a> {
    /// The `path` query parameter exactly as sent ("" when absent).
    pub path: &'a str,
    /// The `username` query parameter exactly as sent: the SDK signs ""
    /// when it leaves the user to envd's default.
    pub username: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub expiration: Option<i64>,
}

/// `"v1_" + base64_nopad(sha256("{path}:{op}:{user}:{token}[:{expiration}]"))`,
/// the format of the E2B SDKs' `getSignature`.
pub fn signature(
    path: &str,
    op: Operation,
    username: &str,
    token: &str,
    expiration: Option<i64>,
) -> String {
    let raw = match expiration {
        Some(exp) => format!("{path}:{}:{username}:{token}:{exp}", op.as_str()),
        None => format!("{path}:{}:{username}:{token}", op.as_str()),
    };
    let digest = Sha256::digest(raw.as_bytes());
    format!(
        "v1_{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

pub fn header_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(ACCESS_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

/// Lets the request through when no token is set, when the header carries
/// the token, or when the signature matches and has not expired.
pub fn authorize_file(
    state: &EnvdState,
    headers: &HeaderMap,
    auth: &FileAuth<'_>,
    op: Operation,
) -> Result<(), ApiError> {
    let Some(token) = state.access_token() else {
        return Ok(());
    };
    if let Some(given) = header_token(headers) {
        return if state.token_ok(Some(given)) {
            Ok(())
        } else {
            Err(ApiError::unauthorized(
                "access token present in header but does not match",
            ))
        };
    }
    let Some(given) = auth.signature else {
        return Err(ApiError::unauthorized(
            "missing signature query parameter (or the X-Access-Token header)",
        ));
    };
    let expected = signature(
        auth.path,
        op,
        auth.username.unwrap_or(""),
        &token,
        auth.expiration,
    );
    if !constant_time_eq(expected.as_bytes(), given.as_bytes()) {
        return Err(ApiError::unauthorized("invalid signature"));
    }
    if let Some(expiration) = auth.expiration {
        if expiration < chrono::Utc::now().timestamp() {
            return Err(ApiError::unauthorized("signature is already expired"));
        }
    }
    Ok(())
}

/// Requires the token header once a token is set (for `/envs` and `/init`).
pub fn require_token(state: &EnvdState, headers: &HeaderMap) -> Result<(), ApiError> {
    if state.token_ok(header_token(headers)) {
        Ok(())
    } else if header_token(headers).is_some() {
        Err(ApiError::unauthorized("invalid access token"))
    } else {
        Err(ApiError::unauthorized(
            "missing access token: send it in the X-Access-Token header",
        ))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::InitRequest;

    fn state_with_token(token: &str) -> EnvdState {
        let state = EnvdState::default();
        state.apply_init(InitRequest {
            access_token: Some(token.to_string()),
            ..Default::default()
        });
        state
    }

    #[test]
    fn signature_matches_the_sdk_formula() {
        // Computed independently: printf '%s' '/home/user/a.txt:read::secret' | sha256sum | xxd -r -p | base64
        assert_eq!(
            signature("/home/user/a.txt", Operation::Read, "", "secret", None),
            "v1_HEW7fDvq8wDd0bCgcYpP4vKMGjo6waU8ir2ibcmhKGY"
        );
        assert_ne!(
            signature("a", Operation::Read, "", "t", None),
            signature("a", Operation::Write, "", "t", None)
        );
        assert_ne!(
            signature("a", Operation::Read, "", "t", None),
            signature("a", Operation::Read, "", "t", Some(1))
        );
        assert!(!signature("a", Operation::Read, "user", "t", Some(1)).ends_with('='));
    }

    #[test]
    fn no_token_means_no_auth() {
        let state = EnvdState::default();
        assert!(authorize_file(
            &state,
            &HeaderMap::new(),
            &FileAuth::default(),
            Operation::Read
        )
        .is_ok());
    }

    #[test]
    fn header_token_or_signature() {
        let state = state_with_token("tok");
        let mut headers = HeaderMap::new();
        let auth = FileAuth {
            path: "x.txt",
            ..Default::default()
        };
        let err = authorize_file(&state, &headers, &auth, Operation::Read).unwrap_err();
        assert_eq!(err.status, http::StatusCode::UNAUTHORIZED);

        headers.insert(ACCESS_TOKEN_HEADER, "tok".parse().unwrap());
        assert!(authorize_file(&state, &headers, &auth, Operation::Read).is_ok());
        headers.insert(ACCESS_TOKEN_HEADER, "wrong".parse().unwrap());
        assert!(authorize_file(&state, &headers, &auth, Operation::Read).is_err());

        let headers = HeaderMap::new();
        let sig = signature("x.txt", Operation::Read, "", "tok", None);
        let signed = FileAuth {
            path: "x.txt",
            signature: Some(&sig),
            ..Default::default()
        };
        assert!(authorize_file(&state, &headers, &signed, Operation::Read).is_ok());
        assert!(
            authorize_file(&state, &headers, &signed, Operation::Write).is_err(),
            "a read signature does not allow writing"
        );
        let as_root = FileAuth {
            username: Some("root"),
            ..signed
        };
        assert!(authorize_file(&state, &headers, &as_root, Operation::Read).is_err());
    }

    #[test]
    fn expired_signatures_are_refused() {
        let state = state_with_token("tok");
        let past = chrono::Utc::now().timestamp() - 10;
        let sig = signature("x", Operation::Write, "user", "tok", Some(past));
        let auth = FileAuth {
            path: "x",
            username: Some("user"),
            signature: Some(&sig),
            expiration: Some(past),
        };
        let err = authorize_file(&state, &HeaderMap::new(), &auth, Operation::Write).unwrap_err();
        assert_eq!(err.message, "signature is already expired");

        let future = chrono::Utc::now().timestamp() + 60;
        let sig = signature("x", Operation::Write, "user", "tok", Some(future));
        let auth = FileAuth {
            signature: Some(&sig),
            expiration: Some(future),
            ..auth
        };
        assert!(authorize_file(&state, &HeaderMap::new(), &auth, Operation::Write).is_ok());
    }
}
