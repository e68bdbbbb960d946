//! The node process: recover, listen, serve until SIGTERM/SIGINT, flush the log.

use crate::admission::{Admission, Admit, ReservedSlot};
use crate::api::{self, Ctx};
use crate::config::NodeArgs;
use crate::connection::{self, ConnMetrics, Guarded, GuardedIo, Shared, Timeouts};
use crate::engine::Engine;
use crate::fds;
use crate::metrics::Metrics;
use bytes::{Bytes, BytesMut};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

pub async fn run(args: NodeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let resolved = args.resolve()?;
    let soft = fds::raise_limit().map_err(|e| format!("cannot read the descriptor limit: {e}"))?;
    let max_connections = fds::connection_budget(args.connections.max_connections, soft)?;
    if max_connections < args.connections.max_connections {
        tracing::warn!(
            wanted = args.connections.max_connections,
            serving = max_connections,
            descriptor_limit = soft,
            "the descriptor limit leaves room for fewer connections than --max-connections"
        );
    }
    fds::keep_spares();
    let metrics = Arc::new(Metrics::new());
    let conn_metrics = ConnMetrics::register(&metrics.registry);
    let engine = Engine::open(resolved.engine, resolved.cluster, metrics)
        .map_err(|e| format!("cannot open data dir {}: {e}", args.data_dir.display()))?;
    let listener = match args.listen_fd {
        Some(fd) => crate::listen::inherited(fd)?,
        None => TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?,
    };
    let addr = listener.local_addr()?;
    tokio::spawn(engine.clone().run_maintenance());
    tokio::spawn(crate::shipper::run(engine.clone()));
    let routing = Arc::new(
        crate::routing::Routing::open(&args.data_dir, resolved.shard)
            .map_err(|e| format!("cannot read the cluster map: {e}"))?,
    );
    let ctx = Arc::new(Ctx {
        engine: engine.clone(),
        routing,
        limits: args.limits.clone(),
        body_timeout: args.connections.body_timeout(),
        consistency: resolved.consistency,
    });
    let serving = Arc::new(Serving {
        service: TowerToHyperService::new(warp::service(api::routes(ctx))),
        timeouts: Timeouts {
            header: args.connections.header_timeout(),
            idle: args.connections.idle_timeout(),
        },
        secret: engine.cluster.secret.clone(),
        metrics: conn_metrics,
    });
    let admission = Admission::new(max_connections);
    tracing::info!(%addr, data_dir = %args.data_dir.display(), node = %args.name, max_connections, "serving");
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "rcluster-node ready on http://{addr}")?;
        out.flush()?;
    }
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of descriptors despite the budget, and similar: back off briefly
                        // instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                // Small request/response exchanges must not wait for Nagle's algorithm.
                let _ = stream.set_nodelay(true);
                match admission.admit() {
                    Admit::Serve(slot) => {
                        let serving = serving.clone();
                        tokio::spawn(async move {
                            serving.serve(stream, Bytes::new(), slot.shared(), true).await;
                            drop(slot);
                        });
                    }
                    Admit::Reserved(slot) => {
                        let serving = serving.clone();
                        tokio::spawn(async move { serving.serve_reserved(stream, slot).await });
                    }
                    Admit::Refuse => serving.refuse(stream),
                }
            }
            _ = &mut shutdown => break,
        }
    }
    tracing::info!("shutting down: flushing the log");
    engine.close();
    Ok(())
}

/// What every connection is served with.
struct Serving<S> {
    service: S,
    timeouts: Timeouts,
    /// The cluster secret: the reserved lane serves internal calls that carry it.
    secret: Option<String>,
    metrics: ConnMetrics,
}

/// How long the reserved lane waits for a request head before answering 503.
const RESERVED_HEAD_WAIT: Duration = Duration::from_secs(2);

impl<S> Serving<S>
where
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = warp::reply::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    async fn serve(&self, stream: TcpStream, prefix: Bytes, shared: Arc<Shared>, keep_alive: bool) {
        let io = GuardedIo::new(
            stream,
            prefix,
            shared.clone(),
            self.timeouts,
            self.metrics.clone(),
        );
        let svc = Guarded::new(self.service.clone(), shared);
        let conn = hyper::server::conn::http1::Builder::new()
            .max_buf_size(connection::MAX_HEAD_BYTES)
            .keep_alive(keep_alive)
            .serve_connection(TokioIo::new(io), svc);
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }

    /// Over the connection limit: reads the request head, serves it when it is a health probe
    /// or an authenticated internal call, and answers 503 otherwise.
    async fn serve_reserved(&self, mut stream: TcpStream, mut slot: ReservedSlot) {
        let wait = self.timeouts.header.min(RESERVED_HEAD_WAIT);
        let mut head = BytesMut::with_capacity(2048);
        let read_head = tokio::time::timeout(wait, async {
            loop {
                match stream.read_buf(&mut head).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
                match classify(&head, self.secret.as_deref()) {
                    Some(kind) => return Some(kind),
                    None if head.len() >= 8192 => return Some(Lane::Other),
                    None => {}
                }
            }
        });
        let kind = tokio::select! {
            kind = read_head => kind.ok(),
            _ = slot.given_way() => Some(Some(Lane::Other)),
        };
        let keep_alive = match kind {
            Some(Some(Lane::Probe)) => false,
            Some(Some(Lane::Internal)) => true,
            Some(None) => return,
            Some(Some(Lane::Other)) | None => return self.refuse(stream),
        };
        slot.serve();
        self.serve(stream, head.freeze(), Shared::new(), keep_alive)
            .await;
    }
}

impl<S> Serving<S> {
    /// Answers 503 too_many_connections without reading anything and closes.
    fn refuse(&self, stream: TcpStream) {
        self.metrics.closed("too_many_connections");
        let answer = connection::error_bytes(
            503,
            "too_many_connections",
            "the node is at its connection limit; retry later",
        );
        let _ = stream.try_write(&answer);
        connection::linger(stream);
    }
}

enum Lane {
    Probe,
    Internal,
    Other,
}

/// Classifies a request head; `None` while it is incomplete.
fn classify(head: &[u8], secret: Option<&str>) -> Option<Lane> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Partial) => return None,
        Err(_) => return Some(Lane::Other),
        Ok(httparse::Status::Complete(_)) => {}
    }
    let path = req.path.unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default();
    let probe = matches!(req.method, Some("GET" | "HEAD"))
        && matches!(path, "/livez" | "/readyz" | "/metrics");
    if probe {
        return Some(Lane::Probe);
    }
    let authorized = path.starts_with("/internal/")
        && req.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("authorization") && api::bearer_matches(secret, h.value)
        });
    Some(if authorized {
        Lane::Internal
    } else {
        Lane::Other
    })
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail on unix");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
