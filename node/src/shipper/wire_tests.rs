//! The appends' wire against scripted members on 127.0.0.1: connection reuse, answers that
//! must drop the connection, timeouts, and TLS with the configured trust.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::TcpListener;

/// A member that reads each request (head and body) and writes the next scripted answer;
/// counts the connections it accepted. With `tls`, it serves TLS with that configuration.
async fn scripted_on(
    answers: Vec<&'static [u8]>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let answers = Arc::new(Mutex::new(answers.into_iter()));
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let answers = answers.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => serve(s, answers).await,
                    Some(acceptor) => {
                        if let Ok(s) = acceptor.accept(s).await {
                            serve(s, answers).await;
                        }
                    }
                }
            });
        }
    });
    (url, accepted)
}

async fn scripted(answers: Vec<&'static [u8]>) -> (String, Arc<AtomicUsize>) {
    scripted_on(answers, None).await
}

type Script = Arc<Mutex<std::vec::IntoIter<&'static [u8]>>>;

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, answers: Script) {
    let mut buf = Vec::new();
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
            let len: usize = req
                .headers
                .iter()
                .find(|h| h.name == "content-length")
                .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                .unwrap();
            if buf.len() >= n + len {
                buf.drain(..n + len);
                let next = answers.lock().unwrap().next();
                let Some(a) = next else { return };
                if s.write_all(a).await.is_err() || s.flush().await.is_err() {
                    return;
                }
                continue;
            }
        }
        if s.read_buf(&mut buf).await.unwrap_or(0) == 0 {
            return;
        }
    }
}

fn wire(timeout: Duration) -> Wire {
    let config = TransportConfig {
        request_timeout: timeout,
        ..TransportConfig::default()
    };
    Wire::new(config, &http::HeaderMap::new())
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";

#[tokio::test]
async fn one_connection_carries_request_after_request() {
    let (url, accepted) = scripted(vec![OK, OK, OK]).await;
    let w = wire(Duration::from_secs(5));
    for _ in 0..3 {
        let a = w.post(&url, "/x", b"body").await.unwrap();
        assert_eq!((a.status, a.body.as_slice()), (StatusCode::OK, &b"{}"[..]));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_close_or_an_unreadable_answer_drops_the_connection() {
    let close: &[u8] =
        b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 4\r\n\r\nbusy";
    let chunked: &[u8] =
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
    let garbage: &[u8] = b"SMTP ready\r\n\r\n";
    let (url, accepted) = scripted(vec![close, OK, chunked, OK, garbage, OK]).await;
    let w = wire(Duration::from_secs(5));
    let a = w.post(&url, "/x", b"1").await.unwrap();
    assert_eq!(
        (a.status, a.body.as_slice()),
        (StatusCode::SERVICE_UNAVAILABLE, &b"busy"[..])
    );
    assert!(w.post(&url, "/x", b"2").await.is_ok());
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "closed after `connection: close`"
    );
    let e = w.post(&url, "/x", b"3").await.err().unwrap();
    assert!(e.contains("chunked"), "{e}");
    assert!(w.post(&url, "/x", b"4").await.is_ok());
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        3,
        "dropped after a chunked answer"
    );
    assert!(w.post(&url, "/x", b"5").await.is_err());
    assert!(w.post(&url, "/x", b"6").await.is_ok());
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        4,
        "dropped after a malformed answer"
    );
}

#[tokio::test]
async fn a_silent_member_times_out_and_its_connection_is_not_reused() {
    // The member holds its first connection open without ever answering on it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = listener.accept().await {
            if count.fetch_add(1, Ordering::SeqCst) == 0 {
                held.push(s);
                continue;
            }
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while s.read(&mut buf).await.unwrap_or(0) > 0 {
                    if s.write_all(OK).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let w = wire(Duration::from_millis(300));
    let e = w.post(&url, "/x", b"1").await.err().unwrap();
    assert!(e.contains("no response within"), "{e}");
    assert!(w.post(&url, "/x", b"2").await.is_ok());
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

/// A new CA (PEM) and a certificate it issued for 127.0.0.1, as a TLS server configuration.
fn pki() -> (String, tokio_rustls::TlsAcceptor) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let key = rustls_pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
    let server = rustls::ServerConfig::builder_with_provider(rcluster_client::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key.into())
        .unwrap();
    (ca_pem, tokio_rustls::TlsAcceptor::from(Arc::new(server)))
}

fn wire_trusting(ca_pem: &str) -> Wire {
    let config = TransportConfig {
        request_timeout: Duration::from_secs(5),
        trust: rcluster_client::tls::Trust::from_pem(ca_pem.as_bytes()).unwrap(),
        ..TransportConfig::default()
    };
    Wire::new(config, &http::HeaderMap::new())
}

#[tokio::test]
async fn https_members_are_verified_with_the_configured_trust() {
    let (ca, acceptor) = pki();
    let (url, accepted) = scripted_on(vec![OK, OK, OK], Some(acceptor)).await;
    let w = wire_trusting(&ca);
    for _ in 0..2 {
        let a = w.post(&url, "/x", b"body").await.unwrap();
        assert_eq!((a.status, a.body.as_slice()), (StatusCode::OK, &b"{}"[..]));
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one TLS connection, reused"
    );
    // A member whose certificate another CA issued is refused before anything is sent.
    let (other_ca, _) = pki();
    let e = wire_trusting(&other_ca)
        .post(&url, "/x", b"body")
        .await
        .err()
        .unwrap();
    assert!(e.contains("certificate"), "{e}");
}
