//! The client library's error type.

use crate::transport::TransportError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The server answered with an error (`{"error":{"code","message"}}`).
    #[error("{code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// No endpoint answered (connect failure or timeout) and no write may have been applied.
    #[error("could not reach the cluster: {0}")]
    Transport(#[from] TransportError),
    /// Retries ran out after an attempt whose outcome is unknown: the write may or may
    /// not have been applied. Retrying with the same idempotency key is safe.
    #[error("outcome unknown (idempotency key {idempotency_key}): {message}")]
    OutcomeUnknown {
        idempotency_key: String,
        message: String,
    },
    /// The server answered something this client cannot understand.
    #[error("invalid response: {0}")]
    InvalidResponse(String),
    /// The caller passed something unusable (bad endpoint URL, bad name...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A wait for the cluster to reach a state ran out (e.g. a switchover that did not finish);
    /// the change may still happen later.
    #[error("timed out: {0}")]
    Timeout(String),
}

impl Error {
    /// The API error code (`version_mismatch`, `not_found`...), if the server answered one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Builds an API error from a non-2xx response body. Bodies that are not the JSON
    /// error shape (a proxy's page, say) still give a usable code and message.
    pub fn from_response(status: u16, body: &[u8]) -> Error {
        #[derive(serde::Deserialize)]
        struct Inner {
            code: String,
            #[serde(default)]
            message: String,
        }
        #[derive(serde::Deserialize)]
        struct Outer {
            error: Inner,
        }
        match serde_json::from_slice::<Outer>(body) {
            Ok(o) => Error::Api {
                status,
                code: o.error.code,
                message: o.error.message,
            },
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let text: String = text.trim().chars().take(200).collect();
                Error::Api {
                    status,
                    code: format!("http_{status}"),
                    message: if text.is_empty() {
                        "no error body".into()
                    } else {
                        text
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_error_body_is_parsed() {
        let e = Error::from_response(
            412,
            br#"{"error":{"code":"version_mismatch","message":"expected 3, found 4"}}"#,
        );
        assert_eq!(e.code(), Some("version_mismatch"));
        assert_eq!(e.status(), Some(412));
        assert_eq!(e.to_string(), "version_mismatch: expected 3, found 4");
    }

    #[test]
    fn other_bodies_give_an_http_code() {
        let e = Error::from_response(502, b"Bad Gateway\n");
        assert_eq!(e.code(), Some("http_502"));
        assert_eq!(e.to_string(), "http_502: Bad Gateway");
        let e = Error::from_response(500, b"");
        assert_eq!(e.to_string(), "http_500: no error body");
    }
}
