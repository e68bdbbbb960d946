//! What every example shares: its arguments, a client, and retrying a write whose outcome is
//! unknown with the same idempotency key until the answer is known.

use std::future::Future;
use std::time::{Duration, Instant};

use rcluster_client::{AckLevel, Client, Error, WriteOptions};

/// `example [--rounds N] [--ttl-secs S] [--followed N] [URL...]` (default: the playground's first node).
pub struct Args {
    pub urls: Vec<String>,
    pub rounds: u64,
    pub ttl_secs: f64,
    /// Timeline: how many authors the reader follows.
    pub followed: u64,
}

impl Args {
    pub fn parse(default_rounds: u64) -> Args {
        let mut args = Args {
            urls: Vec::new(),
            rounds: default_rounds,
            ttl_secs: 86_400.0,
            followed: 4,
        };
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            let mut num = |what: &str| -> f64 {
                it.next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| fail(&format!("{what} needs a number")))
            };
            match a.as_str() {
                "--rounds" => args.rounds = num("--rounds") as u64,
                "--ttl-secs" => args.ttl_secs = num("--ttl-secs"),
                "--followed" => args.followed = num("--followed") as u64,
                url if url.starts_with("http") => args.urls.push(url.to_string()),
                other => fail(&format!("unknown argument {other:?}")),
            }
        }
        if args.urls.is_empty() {
            args.urls.push("http://127.0.0.1:7001".into());
        }
        args
    }

    /// A client that learns the other members from the nodes it is given.
    pub fn client(&self) -> Client {
        Client::builder(self.urls.clone())
            .request_timeout(Duration::from_secs(3))
            .retry_deadline(Duration::from_secs(20))
            .build()
            .unwrap_or_else(|e| fail(&e.to_string()))
    }
}

/// Prints one readable line and exits with 1.
pub fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1)
}

/// A write acknowledged by a majority, retried safely under `key`.
pub fn quorum(key: String) -> WriteOptions {
    WriteOptions {
        ack: Some(AckLevel::Quorum),
        idempotency_key: Some(key),
    }
}

/// Runs `op` until its outcome is known (a failover makes some answers "unknown"): the write
/// carries an idempotency key, so a retry returns the first result instead of applying twice.
pub async fn until_known<T, F, Fut>(mut op: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let started = Instant::now();
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(
                e @ Error::Api {
                    status: 400..=499, ..
                },
            ) => return Err(e),
            Err(e) if started.elapsed() > Duration::from_secs(90) => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
