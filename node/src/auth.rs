//! Client authentication: access tokens with roles, from `--auth-file`.
//!
//! The file holds one `TOKEN ROLE` per line (`#` starts a comment). Roles are ordered
//! `read < write < admin`; a route names the least role it needs (`api/routes.rs`) and the check
//! happens once, from the request head, before any body is read. Without a file the node is open
//! to anyone who reaches it, as before, and says so at start.
//!
//! The file is read again on SIGHUP and whenever its content changes (checked every
//! `--reload-interval-ms`); a file that does not parse on reload keeps the tokens in force and the
//! reason is logged. Tokens never appear in logs, metrics or answers: parse errors name the line
//! and what is wrong with it, never its text.
//!
//! The cluster secret (the one internal endpoints need) also counts as an admin token, so the
//! failover coordinator and the operator, which hold it, can read `/v1/status` of a node that
//! requires tokens.

use http::{HeaderMap, HeaderValue};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// What a token may do; each role includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads: get, list, read, stream, watch, status, cluster.
    Read,
    /// Writes: put, delete, incr, topics, publish, subscribe, pull.
    Write,
    /// Cluster operations: switchover.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "read" => Some(Role::Read),
            "write" => Some(Role::Write),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

/// Longest token accepted in the file (and compared at all).
pub const MAX_TOKEN_BYTES: usize = 512;

/// The tokens of one version of the auth file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    entries: Vec<(Vec<u8>, Role)>,
}

impl Tokens {
    /// Parses the auth file's text. Errors name the line, never its content (it holds a token).
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut entries: Vec<(Vec<u8>, Role)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(token), Some(role), None) = (words.next(), words.next(), words.next()) else {
                return Err(format!("line {n}: expected `TOKEN ROLE`"));
            };
            let role = Role::parse(role).ok_or_else(|| {
                format!("line {n}: the role must be read, write or admin, got {role:?}")
            })?;
            if token.len() > MAX_TOKEN_BYTES || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "line {n}: a token is 1..={MAX_TOKEN_BYTES} visible ASCII characters"
                ));
            }
            if entries.iter().any(|(t, _)| t == token.as_bytes()) {
                return Err(format!("line {n}: the token of an earlier line again"));
            }
            entries.push((token.as_bytes().to_vec(), role));
        }
        Ok(Tokens { entries })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The role of `given`. Every entry is compared, each in time independent of where the bytes
    /// differ, so timings tell nothing about a token's content.
    pub fn role_of(&self, given: &[u8]) -> Option<Role> {
        let mut found = None;
        for (token, role) in &self.entries {
            if constant_time_eq(token, given) {
                found = Some(*role);
            }
        }
        found
    }
}

/// Equality in time that depends on the lengths only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The node's token check: the file's tokens in force, and where they come from.
pub struct Auth {
    file: Option<PathBuf>,
    /// The tokens and the file text they came from (to notice a change).
    current: RwLock<(Arc<Tokens>, String)>,
    /// The cluster secret: admin on client routes too.
    secret: Option<Vec<u8>>,
}

impl Auth {
    /// Reads `file` (none: every request is allowed).
    pub fn open(file: Option<&Path>, secret: Option<&str>) -> Result<Auth, String> {
        let (tokens, text) = match file {
            Some(p) => {
                let text = read(p)?;
                let tokens = Tokens::parse(&text).map_err(|e| format!("{}: {e}", p.display()))?;
                (tokens, text)
            }
            None => (Tokens::default(), String::new()),
        };
        Ok(Auth {
            file: file.map(Path::to_path_buf),
            current: RwLock::new((Arc::new(tokens), text)),
            secret: secret.map(|s| s.as_bytes().to_vec()),
        })
    }

    /// Whether requests need a token.
    pub fn enabled(&self) -> bool {
        self.file.is_some()
    }

    pub fn tokens(&self) -> Arc<Tokens> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// Reads the file again. `Ok(true)` when the tokens changed; on error the old ones stay.
    pub fn reload(&self) -> Result<bool, String> {
        let Some(path) = &self.file else {
            return Ok(false);
        };
        let text = read(path)?;
        if self.current.read().unwrap_or_else(|p| p.into_inner()).1 == text {
            return Ok(false);
        }
        let tokens = Tokens::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (Arc::new(tokens), text);
        Ok(true)
    }

    /// Allows a request whose `Authorization` header carries a token of at least `need`;
    /// otherwise says why not (the API answers 401 `unauthenticated` or 403 `forbidden`).
    pub fn check(&self, headers: &HeaderMap, need: Role) -> Result<(), Refusal> {
        if !self.enabled() {
            return Ok(());
        }
        let given = crate::headers::header(headers, &http::header::AUTHORIZATION)
            .map(HeaderValue::as_bytes)
            .and_then(|v| v.strip_prefix(b"Bearer "))
            .map(|t| t.trim_ascii());
        let Some(given) = given.filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN_BYTES) else {
            return Err(Refusal::NoToken);
        };
        let from_file = self.tokens().role_of(given);
        let secret = self
            .secret
            .as_deref()
            .is_some_and(|s| constant_time_eq(s, given))
            .then_some(Role::Admin);
        match from_file.max(secret) {
            None => Err(Refusal::UnknownToken),
            Some(role) if role < need => Err(Refusal::RoleTooLow { need, has: role }),
            Some(_) => Ok(()),
        }
    }
}

/// Why a request was not allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    NoToken,
    UnknownToken,
    RoleTooLow { need: Role, has: Role },
}

impl Refusal {
    /// The API error code: `unauthenticated` (401) or `forbidden` (403).
    pub fn code(self) -> &'static str {
        match self {
            Refusal::NoToken | Refusal::UnknownToken => "unauthenticated",
            Refusal::RoleTooLow { .. } => "forbidden",
        }
    }

    /// Never names the token.
    pub fn message(self) -> String {
        match self {
            Refusal::NoToken => {
                "this node requires an access token: send `Authorization: Bearer TOKEN`".into()
            }
            Refusal::UnknownToken => "the access token is not known to this node".into(),
            Refusal::RoleTooLow { need, has } => format!(
                "this request needs the {} role; the token has {}",
                need.name(),
                has.name()
            ),
        }
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(token: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(t) = token {
            h.insert(
                http::header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_file_format() {
        let t = Tokens::parse("# tokens\n\nr1 read\n  w1   write # the app\nadm admin\n").unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t.role_of(b"r1"), Some(Role::Read));
        assert_eq!(t.role_of(b"w1"), Some(Role::Write));
        assert_eq!(t.role_of(b"adm"), Some(Role::Admin));
        assert_eq!(t.role_of(b"r"), None);
        assert_eq!(t.role_of(b"r1 "), None);
        for (bad, why) in [
            ("secret-token", "line 1: expected `TOKEN ROLE`"),
            ("a read\nsecret-token root", "line 2: the role must be"),
            ("a read\nb write extra", "line 2: expected"),
            ("a read\na admin", "line 2: the token of an earlier line"),
        ] {
            let e = Tokens::parse(bad).unwrap_err();
            assert!(e.starts_with(why), "{bad:?}: {e}");
            assert!(
                !e.contains("secret-token"),
                "an error must not show a token: {e}"
            );
        }
        assert!(Tokens::parse(&format!("{} read", "x".repeat(513))).is_err());
    }

    #[test]
    fn roles_are_ordered_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("auth");
        std::fs::write(&file, "r read\nw write\na admin\n").unwrap();
        let auth = Auth::open(Some(&file), Some("cluster-secret")).unwrap();
        let code = |t: Option<&str>, need| auth.check(&headers(t), need).map_err(|e| e.code());
        assert_eq!(code(None, Role::Read), Err("unauthenticated"));
        assert_eq!(code(Some("nope"), Role::Read), Err("unauthenticated"));
        assert_eq!(code(Some("r"), Role::Read), Ok(()));
        assert_eq!(code(Some("r"), Role::Write), Err("forbidden"));
        assert_eq!(code(Some("w"), Role::Write), Ok(()));
        assert_eq!(code(Some("w"), Role::Admin), Err("forbidden"));
        assert_eq!(code(Some("a"), Role::Admin), Ok(()));
        assert_eq!(code(Some("cluster-secret"), Role::Admin), Ok(()));
        let mut basic = HeaderMap::new();
        basic.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Basic cg=="),
        );
        assert_eq!(
            auth.check(&basic, Role::Read).map_err(|e| e.code()),
            Err("unauthenticated")
        );
        let open = Auth::open(None, None).unwrap();
        assert!(open.check(&headers(None), Role::Admin).is_ok());
    }

    #[test]
    fn a_bad_file_on_reload_keeps_the_tokens_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("auth");
        std::fs::write(&file, "old read\n").unwrap();
        let auth = Auth::open(Some(&file), None).unwrap();
        assert_eq!(auth.reload(), Ok(false), "unchanged");
        std::fs::write(&file, "new read\nbroken\n").unwrap();
        assert!(auth.reload().unwrap_err().contains("line 2"));
        assert_eq!(auth.tokens().role_of(b"old"), Some(Role::Read));
        std::fs::write(&file, "new write\n").unwrap();
        assert_eq!(auth.reload(), Ok(true));
        assert_eq!(auth.tokens().role_of(b"old"), None);
        assert_eq!(auth.tokens().role_of(b"new"), Some(Role::Write));
        std::fs::remove_file(&file).unwrap();
        assert!(auth.reload().is_err());
        assert_eq!(auth.tokens().role_of(b"new"), Some(Role::Write));
    }
}
