use super::*;
use crate::certs::Issued;
use crate::certs::tests::verify;
use crate::resources::test_support::cluster;

const NOW: u64 = 1_800_000_000;

fn text(s: &Secret, key: &str) -> String {
    String::from_utf8(s.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

fn named<'a>(p: &'a Planned, name: &str) -> &'a Secret {
    p.apply
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("{name} not planned"))
}

/// What the API server would return after the planned applies.
fn stored(p: &Planned) -> Existing {
    let get = |n: &str| {
        p.apply
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(n))
            .cloned()
    };
    Existing {
        ca: get("demo-ca"),
        tls: get("demo-tls"),
        tokens: get("demo-tokens"),
    }
}

fn issued_of(tls: &Secret) -> Issued {
    Issued {
        cert_pem: text(tls, TLS_CERT_KEY),
        key_pem: text(tls, TLS_KEY_KEY),
        not_before: 0,
        not_after: 0,
    }
}

fn ca_of(ca: &Secret) -> Ca {
    Ca {
        subject: "rcluster shop/demo CA".into(),
        cert_pem: text(ca, CA_CERT_KEY),
        key_pem: text(ca, CA_KEY_KEY),
    }
}

#[test]
fn nothing_is_made_when_both_are_off_or_the_user_names_the_secrets() {
    for spec in [
        "{}",
        "{tls: {enabled: true, secretName: mine}, auth: {enabled: true, secretName: theirs}}",
    ] {
        let p = plan(&cluster(spec), 1, &Existing::default(), NOW).unwrap();
        assert!(p.apply.is_empty() && p.made.is_empty(), "{spec}");
        assert_eq!(p.ca_pem, None);
    }
}

#[test]
fn the_secrets_are_made_once_and_the_certificate_serves_every_pod_and_service() {
    let c = cluster("{shards: 2, tls: {enabled: true}, auth: {enabled: true}}");
    let first = plan(&c, 2, &Existing::default(), NOW).unwrap();
    assert_eq!(
        first.made,
        [
            Made::Ca,
            Made::Certificate {
                not_after: NOW + CERT_LIFETIME_SECS,
                renewed: false
            },
            Made::Tokens
        ]
    );
    let (ca, tls, tokens) = (
        named(&first, "demo-ca"),
        named(&first, "demo-tls"),
        named(&first, "demo-tokens"),
    );
    assert_eq!(tls.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(text(tls, CA_CERT_KEY), text(ca, CA_CERT_KEY));
    assert_eq!(
        first.ca_pem.as_deref(),
        Some(text(ca, CA_CERT_KEY).as_str())
    );
    let (ca, issued) = (ca_of(ca), issued_of(tls));
    for host in [
        "demo-0.demo-headless.shop.svc",
        "demo-s1-7.demo-headless.shop.svc",
        "demo-2.demo-headless.shop.svc.cluster.local",
        "demo-client.shop.svc",
        "demo-s1-rw.shop.svc.cluster.local",
        "demo-ro",
        "localhost",
        "127.0.0.1",
    ] {
        verify(&ca, &issued, host, NOW + 10).unwrap_or_else(|e| panic!("{host}: {e}"));
    }
    assert!(verify(&ca, &issued, "other-0.other-headless.shop.svc", NOW).is_err());
    assert!(verify(&ca, &issued, "demo-0.demo-headless.elsewhere.svc", NOW).is_err());

    // Tokens: one per role, and the nodes' file lists each with its role.
    let file = text(tokens, AUTH_KEY);
    for role in ROLES {
        let t = text(tokens, role);
        assert_eq!(t.len(), 64);
        assert!(file.contains(&format!("{t} {role}\n")), "{file}");
    }

    // Found complete: nothing is made again, nothing applied.
    let again = plan(&c, 2, &stored(&first), NOW + 3600).unwrap();
    assert!(again.apply.is_empty(), "{:?}", again.made);
    assert_eq!(again.ca_pem, first.ca_pem);
}

#[test]
fn the_certificate_is_renewed_by_the_same_ca_when_a_third_of_its_life_is_left() {
    let c = cluster("{tls: {enabled: true}}");
    let first = plan(&c, 1, &Existing::default(), NOW).unwrap();
    let before_due = NOW + CERT_LIFETIME_SECS * 2 / 3 - 3600;
    assert!(
        plan(&c, 1, &stored(&first), before_due)
            .unwrap()
            .apply
            .is_empty()
    );

    let due = NOW + CERT_LIFETIME_SECS * 2 / 3 + 3600;
    let renewed = plan(&c, 1, &stored(&first), due).unwrap();
    assert_eq!(
        renewed.made,
        [Made::Certificate {
            not_after: due + CERT_LIFETIME_SECS,
            renewed: true
        }]
    );
    assert_eq!(renewed.apply.len(), 1, "the CA stays");
    let tls = named(&renewed, "demo-tls");
    assert_ne!(
        text(tls, TLS_CERT_KEY),
        text(named(&first, "demo-tls"), TLS_CERT_KEY)
    );
    let ca = ca_of(named(&first, "demo-ca"));
    verify(
        &ca,
        &issued_of(tls),
        "demo-1.demo-headless.shop.svc",
        due + 10,
    )
    .unwrap();
}

#[test]
fn changed_names_or_a_lost_ca_mean_a_new_certificate() {
    let c = cluster("{tls: {enabled: true}}");
    let first = plan(&c, 1, &Existing::default(), NOW).unwrap();
    // More shards: their Services need names in the certificate.
    let more = plan(&c, 2, &stored(&first), NOW).unwrap();
    assert!(matches!(
        more.made[..],
        [Made::Certificate { renewed: true, .. }]
    ));
    // The CA Secret deleted: a new CA, and a certificate it signed.
    let mut lost = stored(&first);
    lost.ca = None;
    let again = plan(&c, 1, &lost, NOW).unwrap();
    assert_eq!(again.made.len(), 2);
    assert_ne!(again.ca_pem, first.ca_pem);
}

#[test]
fn tokens_handed_out_are_kept_and_only_missing_ones_made() {
    let c = cluster("{auth: {enabled: true}}");
    let first = plan(&c, 1, &Existing::default(), NOW).unwrap();
    let mut partial = stored(&first);
    let secret = partial.tokens.as_mut().unwrap();
    let write = text(secret, "write");
    secret.data.as_mut().unwrap().remove("admin");
    let p = plan(&c, 1, &partial, NOW).unwrap();
    let tokens = named(&p, "demo-tokens");
    assert_eq!(text(tokens, "write"), write);
    let admin = text(tokens, "admin");
    assert_eq!(admin.len(), 64);
    assert!(text(tokens, AUTH_KEY).contains(&format!("{admin} admin\n")));
}

#[test]
fn a_user_tls_secret_must_carry_its_ca() {
    let mut s = Secret::default();
    assert!(user_ca(&s, "mine").unwrap_err().contains("ca.crt"));
    s.data = data(&[(CA_CERT_KEY, "PEM")]);
    assert_eq!(user_ca(&s, "mine").unwrap(), "PEM");
}
