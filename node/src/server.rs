//! The node process: recover, listen (plain or TLS), serve until SIGTERM/SIGINT, flush the log.
//! SIGHUP (and a change found by the periodic check) reloads the access tokens and the TLS
//! certificate.

use crate::admission::{Admission, Admit, ReservedSlot, Slot};
use crate::api::{self, Ctx};
use crate::auth::Auth;
use crate::config::NodeArgs;
use crate::connection::{
    self, ClosingSlot, ConnMetrics, Guarded, GuardedIo, Shared, Socket, Timeouts,
};
use crate::engine::Engine;
use crate::fds;
use crate::http1;
use crate::metrics::Metrics;
use crate::threads::Lanes;
use crate::tls::ServerTls;
use bytes::{Bytes, BytesMut};
use hyper_util::rt::TokioIo;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub async fn run(args: NodeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let resolved = args.resolve()?;
    let auth = Arc::new(
        Auth::open(
            args.auth_file.as_deref(),
            resolved.cluster.secret.as_deref(),
        )
        .map_err(|e| format!("--auth-file {e}"))?,
    );
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(Arc::new(
            ServerTls::open(cert, key).map_err(|e| format!("--tls-cert/--tls-key: {e}"))?,
        )),
        _ => None,
    };
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
    if auth.enabled() {
        tracing::info!(
            tokens = auth.tokens().len(),
            "client requests need an access token"
        );
    } else {
        tracing::warn!(
            "no --auth-file: any client that reaches this node may read, write and ask for \
             switchovers"
        );
    }
    let metrics = Arc::new(Metrics::new());
    let threads = crate::threads::count(args.worker_threads);
    metrics.worker_threads.set(threads as i64);
    tracing::info!(worker_threads = threads, "runtime started");
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
    tokio::spawn(reload_on_change(
        auth.clone(),
        tls.clone(),
        Duration::from_millis(args.reload_interval_ms.max(10)),
    ));
    tokio::spawn(crate::shipper::run(engine.clone()));
    let routing = Arc::new(
        crate::routing::Routing::open(&args.data_dir, resolved.shard)
            .map_err(|e| format!("cannot read the cluster map: {e}"))?,
    );
    let ctx = Arc::new(Ctx {
        engine: engine.clone(),
        auth,
        limits: args.limits.clone(),
        body_timeout: args.connections.body_timeout(),
        consistency: resolved.consistency,
        // Leaked: a process has one cluster id for its life, and every answer states it.
        cluster_id: engine
            .cluster
            .id
            .clone()
            .map(|id| &*Box::leak(id.into_boxed_str())),
        routing,
    });
    let serving = Arc::new(Serving {
        service: api::service(ctx),
        timeouts: Timeouts {
            header: args.connections.header_timeout(),
            idle: args.connections.idle_timeout(),
            body: args.connections.body_timeout(),
        },
        secret: engine.cluster.secret.clone(),
        metrics: conn_metrics,
        tls: tls.clone(),
    });
    let mut lanes = {
        let serving = serving.clone();
        Lanes::start(
            threads,
            Arc::new(move |stream, slot| {
                tokio::spawn(serving.clone().serve_slot(stream, slot));
            }),
        )?
    };
    let admission = Admission::new(max_connections);
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, data_dir = %args.data_dir.display(), node = %args.name, max_connections, scheme, "serving");
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "rcluster-node ready on {scheme}://{addr}")?;
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
                        lanes.serve(stream, slot);
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

/// Reloads the access tokens and the TLS certificate on SIGHUP, and whenever the periodic check
/// finds their files changed (a Kubernetes Secret volume is updated in place; nobody signals the
/// node then). A file that does not load keeps what is in force and says why.
async fn reload_on_change(auth: Arc<Auth>, tls: Option<Arc<ServerTls>>, every: Duration) {
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot handle SIGHUP; files are reloaded when they change");
            None
        }
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let signalled = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        match auth.reload() {
            Ok(true) => tracing::info!(tokens = auth.tokens().len(), "access tokens reloaded"),
            Ok(false) if signalled && auth.enabled() => {
                tracing::info!("SIGHUP: the auth file is unchanged")
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "the auth file was not reloaded; the tokens in force stay")
            }
        }
        if let Some(tls) = &tls {
            match tls.reload() {
                Ok(true) => tracing::info!("TLS certificate reloaded"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the TLS certificate was not reloaded; the one in force stays")
                }
            }
        }
    }
}

/// What every connection is served with.
struct Serving<S> {
    service: S,
    timeouts: Timeouts,
    /// The cluster secret: the reserved lane serves internal calls that carry it.
    secret: Option<String>,
    metrics: ConnMetrics,
    /// The listener's TLS (none: plain HTTP).
    tls: Option<Arc<ServerTls>>,
}

/// How long the reserved lane waits for a request head before answering 503.
const RESERVED_HEAD_WAIT: Duration = Duration::from_secs(2);

impl<S> Serving<S>
where
    S: hyper::service::Service<
            http::Request<connection::RequestBody>,
            Response = crate::answer::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    async fn serve<IO: Socket>(
        &self,
        stream: IO,
        prefix: Bytes,
        shared: Arc<Shared>,
        keep_alive: bool,
    ) {
        let io = GuardedIo::new(
            stream,
            prefix,
            shared.clone(),
            self.timeouts,
            self.metrics.clone(),
        );
        let svc = Guarded::new(self.service.clone(), shared);
        let mut io = io;
        // The reserved lane's connections (probes, closed after one answer) are hyper's.
        if keep_alive {
            match http1::serve(&mut io, &svc, self.timeouts.body).await {
                http1::Next::Closed => return,
                http1::Next::Hyper(rest) => io.unread(rest),
            }
        }
        let conn = hyper::server::conn::http1::Builder::new()
            .max_buf_size(connection::MAX_HEAD_BYTES)
            .keep_alive(keep_alive)
            .serve_connection(TokioIo::new(io), svc);
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }

    /// Serves an admitted connection to its end, on the connection thread it was given to.
    async fn serve_slot(self: Arc<Self>, stream: TcpStream, slot: Slot) {
        let shared = slot.shared();
        if self.tls.is_none() {
            self.serve(stream, Bytes::new(), shared, true).await;
        } else {
            let handshake = self.handshake(stream, self.timeouts.header);
            let tls = tokio::select! {
                s = handshake => s,
                _ = shared.evicted() => {
                    self.metrics.closed("evicted");
                    None
                }
            };
            if let Some(s) = tls {
                self.serve(s, Bytes::new(), shared, true).await;
            }
        }
        drop(slot);
    }

    /// The TLS handshake of a new connection, within `wait`. A client that speaks plain HTTP to
    /// the TLS port is told so in plain HTTP.
    async fn handshake(
        &self,
        stream: TcpStream,
        wait: Duration,
    ) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
        let acceptor = self.tls.as_ref()?.acceptor();
        let work = async {
            let mut first = [0u8; 1];
            // 0x16: a TLS handshake record. Anything else is most likely an HTTP request line.
            if matches!(stream.peek(&mut first).await, Ok(1) if first[0] != 0x16) {
                let answer = connection::error_bytes(
                    400,
                    "tls_required",
                    "this node serves HTTPS: use an https:// URL",
                );
                let _ = stream.try_write(&answer);
                connection::linger(stream);
                return Err(None);
            }
            acceptor.accept(stream).await.map_err(Some)
        };
        match tokio::time::timeout(wait, work).await {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                if let Some(e) = e {
                    tracing::debug!(error = %e, "TLS handshake failed");
                }
                self.metrics.closed("tls_handshake");
                None
            }
            Err(_) => {
                self.metrics.closed("header_timeout");
                None
            }
        }
    }

    /// Over the connection limit: reads the request head, serves it when it is a health probe
    /// or an authenticated internal call, and answers 503 otherwise.
    async fn serve_reserved(&self, stream: TcpStream, slot: ReservedSlot) {
        let wait = self.timeouts.header.min(RESERVED_HEAD_WAIT);
        if self.tls.is_none() {
            return self.serve_reserved_on(stream, slot, wait).await;
        }
        let tls = tokio::select! {
            s = self.handshake(stream, wait) => s,
            _ = slot.given_way() => None,
        };
        if let Some(s) = tls {
            self.serve_reserved_on(s, slot, wait).await;
        }
    }

    async fn serve_reserved_on<IO: Socket>(
        &self,
        mut stream: IO,
        mut slot: ReservedSlot,
        wait: Duration,
    ) {
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
            Some(Some(Lane::Other)) | None => return self.refuse_on(stream).await,
        };
        slot.serve();
        self.serve(stream, head.freeze(), Shared::new(), keep_alive)
            .await;
    }
}

impl<S> Serving<S> {
    /// Answers 503 too_many_connections without reading anything and closes. Over TLS the
    /// answer needs a handshake first; a few such refusals run at once, the others just close.
    fn refuse(&self, stream: TcpStream) {
        self.metrics.closed("too_many_connections");
        let Some(tls) = &self.tls else {
            let _ = stream.try_write(&too_many());
            connection::linger(stream);
            return;
        };
        let Some(slot) = ClosingSlot::take() else {
            return;
        };
        let acceptor = tls.acceptor();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tokio::time::timeout(RESERVED_HEAD_WAIT, async {
                if let Ok(mut s) = acceptor.accept(stream).await
                    && s.write_all(&too_many()).await.is_ok()
                {
                    connection::drain(&mut s).await;
                }
            })
            .await;
        });
    }

    /// The reserved lane's refusal, once the head was read (over TLS or not).
    async fn refuse_on<IO: Socket>(&self, mut stream: IO) {
        self.metrics.closed("too_many_connections");
        let _ = tokio::time::timeout(RESERVED_HEAD_WAIT, stream.write_all(&too_many())).await;
        if connection::unread_input(stream.tcp()) {
            let _ =
                tokio::time::timeout(Duration::from_secs(1), connection::drain(&mut stream)).await;
        } else {
            let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
        }
    }
}

fn too_many() -> Bytes {
    connection::error_bytes(
        503,
        "too_many_connections",
        "the node is at its connection limit; retry later",
    )
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
