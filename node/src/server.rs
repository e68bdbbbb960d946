//! The node process: recover, listen, serve until SIGTERM/SIGINT, flush the log.

use crate::api::{self, Ctx};
use crate::config::NodeArgs;
use crate::engine::Engine;
use crate::metrics::Metrics;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use std::io::Write;
use std::sync::Arc;
use tokio::net::TcpListener;

pub async fn run(args: NodeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let resolved = args.resolve()?;
    let metrics = Arc::new(Metrics::new());
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
    let routing = Arc::new(
        crate::routing::Routing::open(&args.data_dir, resolved.shard)
            .map_err(|e| format!("cannot read the cluster map: {e}"))?,
    );
    let ctx = Arc::new(Ctx {
        engine: engine.clone(),
        routing,
        limits: args.limits.clone(),
        consistency: resolved.consistency,
    });
    let service = warp::service(api::routes(ctx));
    tracing::info!(%addr, data_dir = %args.data_dir.display(), node = %args.name, "serving");
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
                        // Out of file descriptors and similar: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Small request/response exchanges must not wait for Nagle's algorithm.
                let _ = stream.set_nodelay(true);
                let svc = TowerToHyperService::new(service.clone());
                tokio::spawn(async move {
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc);
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    tracing::info!("shutting down: flushing the log");
    engine.close();
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail on unix");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
