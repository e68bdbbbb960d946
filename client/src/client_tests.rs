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

/// A server on 127.0.0.1 that answers every request with `200` and a body that is not JSON.
async fn not_json_server() -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                // Keep-alive: answer each request head (none of these has a body).
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nnot json";
                        if s.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, server)
}

#[tokio::test]
async fn a_call_may_leave_the_reply_undecoded() {
    let (url, server) = not_json_server().await;
    let c = Client::builder([url.as_str()])
        .discover_members(false)
        .build()
        .unwrap();
    let mut call = crate::calls::status();
    let err = c.execute(&call).await.unwrap_err();
    assert!(matches!(err, Error::InvalidResponse(_)), "{err}");
    call.parse_reply = false;
    let reply = c.execute(&call).await.unwrap();
    assert_eq!((reply.status, reply.json), (200, Value::Null));
    server.abort();
}
