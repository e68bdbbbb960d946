//! Secret `<cluster>-secret`: the cluster token that guards the nodes' internal endpoints, and the
//! cluster id every node carries (nodes and clients refuse traffic meant for another cluster).
//!
//! Both are generated once. Rotating either by accident would lock replicas out of the primary,
//! so the builder always carries over the values of the Secret that exists (including one a user
//! created beforehand) and only generates the ones it lacks.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::{BuildError, Owner, component, secret_name};
use crate::crd::ReplicatedCluster;

/// Key (file name) of the token in the Secret.
pub const TOKEN_KEY: &str = "token";
/// Key of the cluster id in the Secret (the nodes get it as `RCLUSTER_CLUSTER_ID`).
pub const CLUSTER_ID_KEY: &str = "cluster-id";
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
    existing_value(existing, TOKEN_KEY)
}

fn existing_value(existing: Option<&Secret>, key: &str) -> Option<ByteString> {
    existing?
        .data
        .as_ref()?
        .get(key)
        .filter(|t| !t.0.is_empty())
        .cloned()
}

/// The Secret to apply: the existing token and cluster id when there are some; `random()` makes
/// the missing ones (a cluster id is the cluster's name and 12 random hex characters).
pub fn build(
    cluster: &ReplicatedCluster,
    existing: Option<&Secret>,
    random: impl Fn() -> Result<String, BuildError>,
) -> Result<Secret, BuildError> {
    let owner = Owner::new(cluster)?;
    let token = match existing_token(existing) {
        Some(token) => token,
        None => ByteString(random()?.into_bytes()),
    };
    let cluster_id = match existing_value(existing, CLUSTER_ID_KEY) {
        Some(id) => id,
        None => {
            let suffix: String = random()?.chars().take(12).collect();
            ByteString(format!("{}-{suffix}", owner.name).into_bytes())
        }
    };
    Ok(Secret {
        metadata: owner.meta(secret_name(&owner.name), component::SECRET),
        type_: Some("Opaque".to_string()),
        data: Some(BTreeMap::from([
            (TOKEN_KEY.to_string(), token),
            (CLUSTER_ID_KEY.to_string(), cluster_id),
        ])),
        ..Secret::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::test_support::cluster;

    fn token_of(s: &Secret) -> String {
        value_of(s, TOKEN_KEY)
    }

    fn value_of(s: &Secret, key: &str) -> String {
        String::from_utf8(s.data.as_ref().unwrap()[key].0.clone()).unwrap()
    }

    #[test]
    fn new_cluster_gets_a_generated_token() {
        let s = build(&cluster("{}"), None, || Ok("fresh".into())).unwrap();
        assert_eq!(s.metadata.name.as_deref(), Some("demo-secret"));
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        assert_eq!(token_of(&s), "fresh");
        assert_eq!(value_of(&s, CLUSTER_ID_KEY), "demo-fresh");
        assert_eq!(
            s.metadata.labels.unwrap()["app.kubernetes.io/component"],
            "secret"
        );
    }

    #[test]
    fn an_existing_cluster_gets_an_id_once_and_keeps_it() {
        let c = cluster("{}");
        // A Secret from before cluster ids: its token stays, an id is added.
        let old = Secret {
            data: Some(BTreeMap::from([(
                TOKEN_KEY.to_string(),
                ByteString(b"original".to_vec()),
            )])),
            ..Secret::default()
        };
        let s = build(&c, Some(&old), || Ok("0123456789abcdef".into())).unwrap();
        assert_eq!(token_of(&s), "original");
        assert_eq!(value_of(&s, CLUSTER_ID_KEY), "demo-0123456789ab");
        let again = build(&c, Some(&s), || panic!("nothing is regenerated")).unwrap();
        assert_eq!(again, s);
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
        let keys: Vec<String> = s.data.unwrap().into_keys().collect();
        assert_eq!(keys, [CLUSTER_ID_KEY, TOKEN_KEY]);
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
