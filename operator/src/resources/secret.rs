//! Secret `<cluster>-secret`: the cluster token that guards the nodes' internal endpoints.
//!
//! Generated once. Rotating it by accident would lock replicas out of the primary, so the builder
//! always carries over the token of the Secret that exists (including one a user created
//! beforehand) and only asks for a new one when there is none.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::{BuildError, Owner, component, secret_name};
use crate::crd::ReplicatedCluster;

/// Key (file name) of the token in the Secret.
pub const TOKEN_KEY: &str = "token";
/// Random bytes in a new token (hex-encoded: twice as many characters).
const TOKEN_BYTES: usize = 32;

/// A fresh random token: 64 lower-case hex characters.
pub fn generate_token() -> Result<String, BuildError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| BuildError::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The token `existing` already holds, if it holds a usable one.
pub fn existing_token(existing: Option<&Secret>) -> Option<ByteString> {
    existing?
        .data
        .as_ref()?
        .get(TOKEN_KEY)
        .filter(|t| !t.0.is_empty())
        .cloned()
}

/// The Secret to apply: the existing token when there is one, otherwise `new_token()`.
pub fn build(
    cluster: &ReplicatedCluster,
    existing: Option<&Secret>,
    new_token: impl FnOnce() -> Result<String, BuildError>,
) -> Result<Secret, BuildError> {
    let owner = Owner::new(cluster)?;
    let token = match existing_token(existing) {
        Some(token) => token,
        None => ByteString(new_token()?.into_bytes()),
    };
    Ok(Secret {
        metadata: owner.meta(secret_name(&owner.name), component::SECRET),
        type_: Some("Opaque".to_string()),
        data: Some(BTreeMap::from([(TOKEN_KEY.to_string(), token)])),
        ..Secret::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::test_support::cluster;

    fn token_of(s: &Secret) -> String {
        String::from_utf8(s.data.as_ref().unwrap()[TOKEN_KEY].0.clone()).unwrap()
    }

    #[test]
    fn new_cluster_gets_a_generated_token() {
        let s = build(&cluster("{}"), None, || Ok("fresh".into())).unwrap();
        assert_eq!(s.metadata.name.as_deref(), Some("demo-secret"));
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        assert_eq!(token_of(&s), "fresh");
        assert_eq!(
            s.metadata.labels.unwrap()["app.kubernetes.io/component"],
            "secret"
        );
    }

    #[test]
    fn existing_token_is_kept_and_no_new_one_is_made() {
        let c = cluster("{}");
        let first = build(&c, None, || Ok("original".into())).unwrap();
        let again = build(&c, Some(&first), || panic!("token must not be regenerated")).unwrap();
        assert_eq!(token_of(&again), "original");
        assert_eq!(again, first);
    }

    #[test]
    fn a_user_created_secret_keeps_its_token() {
        let user = Secret {
            data: Some(BTreeMap::from([
                (TOKEN_KEY.to_string(), ByteString(b"mine".to_vec())),
                ("other".to_string(), ByteString(b"x".to_vec())),
            ])),
            ..Secret::default()
        };
        let s = build(&cluster("{}"), Some(&user), || Ok("fresh".into())).unwrap();
        assert_eq!(token_of(&s), "mine");
        assert_eq!(s.data.unwrap().len(), 1);
    }

    #[test]
    fn empty_or_missing_token_is_replaced() {
        let empty = Secret {
            data: Some(BTreeMap::from([(
                TOKEN_KEY.to_string(),
                ByteString(vec![]),
            )])),
            ..Secret::default()
        };
        let no_data = Secret::default();
        for existing in [&empty, &no_data] {
            let s = build(&cluster("{}"), Some(existing), || Ok("fresh".into())).unwrap();
            assert_eq!(token_of(&s), "fresh");
        }
    }

    #[test]
    fn generator_errors_are_returned() {
        let err = build(&cluster("{}"), None, || {
            Err(BuildError::Random("no entropy".into()))
        });
        assert!(matches!(err, Err(BuildError::Random(_))));
    }

    #[test]
    fn generated_tokens_are_long_random_hex() {
        let a = generate_token().unwrap();
        let b = generate_token().unwrap();
        assert_eq!(a.len(), 64);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
    }
}
