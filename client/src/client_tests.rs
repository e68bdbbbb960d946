//! Unit tests of endpoint handling, rotation and the session token.

use super::*;

#[test]
fn endpoints_are_validated() {
    assert_eq!(
        normalize_endpoint("http://127.0.0.1:7001/").unwrap(),
        "http://127.0.0.1:7001"
    );
    assert_eq!(
        normalize_endpoint(" http://node-0.svc:7000 ").unwrap(),
        "http://node-0.svc:7000"
    );
    // No scheme: plain HTTP.
    assert_eq!(
        normalize_endpoint("localhost:7601").unwrap(),
        "http://localhost:7601"
    );
    assert_eq!(
        normalize_endpoint("127.0.0.1:7001/").unwrap(),
        "http://127.0.0.1:7001"
    );
    assert_eq!(
        normalize_endpoint("https://node-0.svc:7000/").unwrap(),
        "https://node-0.svc:7000"
    );
    for bad in [
        "https://",
        "ftp://a:1",
        ":7001",
        "a:1/v1",
        "http://",
        "http://a:1/v1",
        "http:// a",
    ] {
        assert!(normalize_endpoint(bad).is_err(), "{bad}");
    }
    assert!(Client::new(Vec::<String>::new()).is_err());
}

#[test]
fn rotation_walks_the_endpoints_and_forgets_a_failed_primary() {
    let c = Client::new(["http://127.0.0.1:1", "http://127.0.0.1:2"]).unwrap();
    assert_eq!(c.current_endpoint(), "http://127.0.0.1:1");
    c.rotate("http://127.0.0.1:1");
    assert_eq!(c.current_endpoint(), "http://127.0.0.1:2");
    c.set_primary(Some("http://127.0.0.1:3".into()));
    assert_eq!(c.current_endpoint(), "http://127.0.0.1:3");
    c.rotate("http://127.0.0.1:3");
    assert_eq!(c.known_primary(), None);
    assert_eq!(c.current_endpoint(), "http://127.0.0.1:2");
    c.rotate("http://127.0.0.1:2");
    assert_eq!(c.current_endpoint(), "http://127.0.0.1:1");
}

#[test]
fn token_only_grows() {
    let c = Client::new(["http://127.0.0.1:1"]).unwrap();
    c.observe_token(&SessionToken::at(0, 5));
    c.observe_token(&SessionToken::at(0, 3));
    c.observe_token(&SessionToken::at(2, 1));
    assert_eq!(c.token().to_string(), "0:5,2:1");
}
