//! Telemetry: tracing logs (text or JSON) and the small HTTP server with `/metrics` (the
//! operator's registry) and `/healthz`.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;
use warp::Filter;
use warp::http::StatusCode;

use crate::metrics::Metrics;

/// Installs the global subscriber. `RUST_LOG` overrides `level` when set.
pub fn init_tracing(level: &str, json: bool) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(v),
        _ => EnvFilter::try_new(level),
    }
    .map_err(|e| format!("invalid log level {level:?}: {e}"))?;
    // Colours only for a terminal: a pipe or a log file gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let result = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    result.map_err(|e| format!("cannot install the log subscriber: {e}"))
}

/// What `/healthz` reports.
#[derive(Debug, Default)]
pub struct Health {
    pub leader: AtomicBool,
}

/// `/metrics` and `/healthz`. Healthy means the process serves; a replica waiting for the
/// Lease is healthy too (it must not be restarted for waiting), and the body says which it is.
pub fn routes(
    metrics: Metrics,
    health: Arc<Health>,
) -> impl Filter<Extract = (impl warp::Reply,), Error = warp::Rejection> + Clone {
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .map(move || match metrics.encode() {
            Ok(text) => warp::reply::with_header(
                warp::reply::with_status(text, StatusCode::OK),
                "content-type",
                "text/plain; version=0.0.4",
            ),
            Err(e) => warp::reply::with_header(
                warp::reply::with_status(
                    format!("cannot encode metrics: {e}\n"),
                    StatusCode::INTERNAL_SERVER_ERROR,
                ),
                "content-type",
                "text/plain",
            ),
        });
    let healthz = warp::path!("healthz").and(warp::get()).map(move || {
        let role = if health.leader.load(Ordering::Relaxed) {
            "leader"
        } else {
            "standby"
        };
        format!("ok ({role})\n")
    });
    metrics.or(healthz)
}

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    warp::serve(routes(metrics, health))
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_metrics_and_health_until_shutdown() {
        let metrics = Metrics::new().unwrap();
        let health = Arc::new(Health::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, metrics.clone(), health.clone(), async {
            let _ = stopped.await;
        }));

        let res = get(addr, "/healthz").await;
        assert!(res.starts_with("HTTP/1.1 200"), "{res}");
        assert!(res.ends_with("ok (standby)\n"), "{res}");
        health.leader.store(true, Ordering::Relaxed);
        assert!(get(addr, "/healthz").await.ends_with("ok (leader)\n"));

        metrics.failovers.inc();
        let res = get(addr, "/metrics").await;
        assert!(res.starts_with("HTTP/1.1 200"), "{res}");
        assert!(res.contains("text/plain; version=0.0.4"), "{res}");
        assert!(res.contains("rcluster_operator_failovers_total 1"), "{res}");
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));

        stop.send(()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), server)
            .await
            .expect("server stops on shutdown")
            .unwrap();
    }
}
