//! How a command fails: the exit code, and the one line (or, with `--json`, the one JSON
//! document) on stderr that says why.

use serde_json::{Value, json};

use rcluster_client::Error;

#[derive(Debug)]
pub enum Failure {
    /// From the client library: the server's answer, unreachable nodes, an unknown outcome...
    Client(Error),
    /// Input that parsed but cannot be used: a VALUE that is not JSON, a bad token.
    Usage(String),
    /// Whoever read stdout went away (`rcluster list --all | head -1`): stop quietly, as Unix
    /// tools do.
    BrokenPipe,
    /// Ctrl-C, after whatever was done so far was printed.
    Interrupted,
    /// Anything else, with its error code and exit code (a bench where every request failed).
    Other {
        code: &'static str,
        message: String,
        exit: u8,
    },
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Client(e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Failure::BrokenPipe
        } else {
            Failure::Other {
                code: "io",
                message: e.to_string(),
                exit: 1,
            }
        }
    }
}

impl Failure {
    /// 0 for a reader that went away; 1 the server answered an error; 2 usage; 3 unreachable,
    /// outcome unknown or a wait ran out; 130 interrupted.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Client(e) => match e {
                Error::Api { .. } | Error::InvalidResponse(_) => 1,
                Error::InvalidArgument(_) => 2,
                Error::Transport(_) | Error::OutcomeUnknown { .. } | Error::Timeout(_) => 3,
            },
            Failure::Usage(_) => 2,
            Failure::BrokenPipe => 0,
            Failure::Interrupted => 130,
            Failure::Other { exit, .. } => *exit,
        }
    }

    /// The error code of the JSON form: the server's code, else what kind of failure it is.
    pub fn code(&self) -> String {
        match self {
            Failure::Client(e) => match e {
                Error::Api { code, .. } => code.clone(),
                Error::Transport(_) => "unreachable".into(),
                Error::OutcomeUnknown { .. } => "outcome_unknown".into(),
                Error::InvalidResponse(_) => "invalid_response".into(),
                Error::InvalidArgument(_) => "usage".into(),
                Error::Timeout(_) => "timeout".into(),
            },
            Failure::Usage(_) => "usage".into(),
            Failure::BrokenPipe => "broken_pipe".into(),
            Failure::Interrupted => "interrupted".into(),
            Failure::Other { code, .. } => (*code).into(),
        }
    }

    /// The text form, without the `error: ` prefix.
    pub fn message(&self) -> String {
        let text = match self {
            Failure::Client(e) => e.to_string(),
            Failure::Usage(m) => m.clone(),
            Failure::BrokenPipe => "the reader of standard output went away".into(),
            Failure::Interrupted => "interrupted".into(),
            Failure::Other { message, .. } => message.clone(),
        };
        one_line(&text)
    }

    /// `{"error":{"code","message","exit_code",...}}`: the server's status for its errors, the
    /// idempotency key of a write whose outcome is unknown (retry with it).
    pub fn to_json(&self) -> Value {
        let mut e = json!({
            "code": self.code(),
            "message": self.message(),
            "exit_code": self.exit_code(),
        });
        match self {
            Failure::Client(Error::Api {
                status, message, ..
            }) => {
                e["status"] = json!(status);
                e["message"] = json!(one_line(message));
            }
            Failure::Client(Error::OutcomeUnknown {
                idempotency_key,
                message,
            }) => {
                e["idempotency_key"] = json!(idempotency_key);
                e["message"] = json!(one_line(message));
            }
            _ => {}
        }
        json!({ "error": e })
    }

    /// Prints the failure on stderr (nothing for a reader that went away or an interrupt, whose
    /// results are already printed).
    pub fn report(&self, json: bool) {
        if matches!(self, Failure::BrokenPipe | Failure::Interrupted) {
            return;
        }
        if json {
            eprintln!("{}", self.to_json());
        } else {
            eprintln!("error: {}", self.message());
        }
    }
}

pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_and_json_by_kind() {
        let api = Failure::Client(Error::Api {
            status: 412,
            code: "version_mismatch".into(),
            message: "expected 3,\n found 4".into(),
        });
        assert_eq!(api.exit_code(), 1);
        assert_eq!(api.message(), "version_mismatch: expected 3, found 4");
        assert_eq!(
            api.to_json(),
            json!({"error": {"code": "version_mismatch", "message": "expected 3, found 4",
                "status": 412, "exit_code": 1}})
        );
        let unknown = Failure::Client(Error::OutcomeUnknown {
            idempotency_key: "k1".into(),
            message: "timed out".into(),
        });
        assert_eq!(unknown.exit_code(), 3);
        assert_eq!(unknown.to_json()["error"]["code"], "outcome_unknown");
        assert_eq!(unknown.to_json()["error"]["idempotency_key"], "k1");
        assert_eq!(Failure::Usage("bad".into()).exit_code(), 2);
        assert_eq!(Failure::Client(Error::Timeout("x".into())).exit_code(), 3);
        assert_eq!(
            Failure::Client(Error::InvalidArgument("x".into())).code(),
            "usage"
        );
        let pipe: Failure = std::io::Error::from(std::io::ErrorKind::BrokenPipe).into();
        assert_eq!((pipe.exit_code(), pipe.code().as_str()), (0, "broken_pipe"));
        assert_eq!(Failure::Interrupted.exit_code(), 130);
    }
}
