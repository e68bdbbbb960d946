//! `rcluster-operator playground`: N local `rcluster-node` processes driven by the same
//! coordinator runtime (`crate::coordinator`) as the Kubernetes controller: its decisions, failure
//! clocks, switchover requests and failover statistics. What is the playground's own:
//!
//! - [`supervisor`]: the child processes (start, restart after a crash, stop, retire);
//! - [`probe`]: `/v1/status` of every node, sub-second; [`links`]: a connection held open to
//!   every node, whose opening or breaking makes the loop probe at once;
//! - [`coordinate`]: the loop: probe → the runtime decides and acts (state file first, then the
//!   node commands) → nodes that left the member list stop;
//! - [`state`]: the folder (state file, secret, decision log, lock);
//! - [`security`]: `--tls` and `--auth` (certificates and access tokens in the folder);
//! - [`ui`], [`report`]: the status table, decision lines, `/status` and metrics;
//!   [`control`]: the HTTP endpoint.
//!
//! `--shards N` runs N replica groups, each with its own coordinator runtime and record, owning
//! the hash slots of the slot map recorded in the state file (docs/SHARDS.md); shard 0's members
//! are n1..nR (as in a cluster without shards), shard k's sKn1..sKnR.
//!
//! `--replicas` may change when the same folder is started again: each shard's member list
//! follows in a new term (scale up and down, as on Kubernetes), and nodes that leave stop once the
//! change is committed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;

use crate::coordinator::keep_running;
use crate::failover::{AckLevel, Settings, default_switchover_timeout_ms};

pub mod control;
pub mod coordinate;
pub mod launch;
pub mod links;
pub mod probe;
pub mod report;
pub mod security;
pub mod state;
pub mod supervisor;
pub mod traffic;
pub mod ui;

/// Flags of `rcluster-operator playground`.
#[derive(Debug, Clone, Args)]
pub struct PlaygroundArgs {
    /// Members per shard (n1..nN). May change when the same --dir is started again.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=99))]
    pub replicas: u16,
    /// Shards (replica groups), each owning an equal share of the hash slots.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=MAX_SHARDS as i64))]
    pub shards: u16,
    /// Write acknowledgement level of the cluster: async, one, quorum or all.
    #[arg(long, default_value = "quorum", value_parser = parse_ack)]
    pub ack: AckLevel,
    /// Folder for the node data, the state file, the secret and the logs.
    #[arg(long, default_value = "./rcluster-playground")]
    pub dir: PathBuf,
    /// Node i of shard k listens on BASE_PORT+100·k+i; the playground's status/metrics endpoint
    /// on BASE_PORT.
    #[arg(long, default_value_t = 7000)]
    pub base_port: u16,
    /// How long the primary must fail (unreachable or not ready) before a failover.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
    pub detection_window_ms: u64,
    /// How often every node is probed.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(10..))]
    pub probe_interval_ms: u64,
    /// The rcluster-node binary (default: next to this program, else on PATH).
    #[arg(long, value_name = "PATH")]
    pub node_bin: Option<PathBuf>,
    /// async/one only: promote the best reachable node even when acknowledged writes may be lost.
    #[arg(long)]
    pub allow_lossy_promotion: bool,
    /// No live status table (decisions are still printed).
    #[arg(long)]
    pub quiet: bool,
    /// Serve HTTPS: a CA and a node certificate are made in the folder (kept, renewed when a
    /// third of its lifetime remains) and the playground says how to trust the CA.
    #[arg(long)]
    pub tls: bool,
    /// Require access tokens: one per role (read, write, admin) is made in the folder.
    #[arg(long)]
    pub auth: bool,
    /// Extra arguments for every node, after `--` (e.g. `-- --fsync interval`).
    #[arg(last = true, value_name = "NODE_ARGS")]
    pub node_args: Vec<String>,
}

fn parse_ack(s: &str) -> Result<AckLevel, String> {
    match s {
        "async" => Ok(AckLevel::Async),
        "one" => Ok(AckLevel::One),
        "quorum" => Ok(AckLevel::Quorum),
        "all" => Ok(AckLevel::All),
        _ => Err(format!("expected async, one, quorum or all, got {s:?}")),
    }
}

pub fn ack_name(a: AckLevel) -> &'static str {
    match a {
        AckLevel::Async => "async",
        AckLevel::One => "one",
        AckLevel::Quorum => "quorum",
        AckLevel::All => "all",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// Milliseconds since the epoch: the clock of every `*_ms` field the playground records.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The most shards a playground runs (ports stay below BASE_PORT+1700).
pub const MAX_SHARDS: usize = 16;

/// One member: name, URL, port and data folder.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub url: String,
    pub port: u16,
    pub shard: usize,
}

impl Member {
    fn new(base_port: u16, shard: usize, i: usize, tls: bool) -> Member {
        let port = base_port + (100 * shard + i) as u16;
        let scheme = if tls { "https" } else { "http" };
        Member {
            name: member_name(shard, i),
            url: format!("{scheme}://127.0.0.1:{port}"),
            port,
            shard,
        }
    }
}

/// Member `i` (from 1) of `shard`: n1.. for shard 0, as a cluster without shards names them;
/// sKn1.. for shard K.
pub fn member_name(shard: usize, i: usize) -> String {
    if shard == 0 {
        format!("n{i}")
    } else {
        format!("s{shard}n{i}")
    }
}

/// Entry point of the subcommand; the exit code is 0 after a clean stop.
pub fn main(args: PlaygroundArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rcluster-operator playground: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rcluster-operator playground: {e}");
            match e {
                Error::Usage(_) => ExitCode::from(2),
                Error::Io { .. } => ExitCode::FAILURE,
            }
        }
    }
}

async fn run(args: PlaygroundArgs) -> Result<(), Error> {
    let replicas = usize::from(args.replicas);
    let shards = usize::from(args.shards);
    check_ports(args.base_port, shards, replicas)?;
    let bin = node_bin(args.node_bin.as_deref())?;
    let folder = state::Folder::create(&args.dir)?;
    let _lock = folder.lock()?;
    let desired: Vec<Vec<String>> = (0..shards).map(|k| names(k, replicas)).collect();
    let saved = match folder.load()? {
        Some(s) if s.base_port != args.base_port => {
            return Err(Error::Usage(format!(
                "{} holds a cluster on base port {}; start it with --base-port {}, or use \
                 another --dir",
                folder.dir.display(),
                s.base_port,
                s.base_port
            )));
        }
        Some(s)
            if s.shard_count() != shards
                || s.reshard
                    .as_ref()
                    .is_some_and(|r| r.shards as usize != shards) =>
        {
            println!(
                "resharding the cluster in {}: {} shard(s) now, {shards} asked; slots move while \
                 it serves",
                folder.dir.display(),
                s.shard_count()
            );
            reshard(&folder, s, shards, replicas)?
        }
        Some(mut s) => {
            println!(
                "resuming the cluster in {} (term {}, primary {})",
                folder.dir.display(),
                s.coordinator.term,
                s.coordinator.primary.as_deref().unwrap_or("none")
            );
            for k in 0..shards {
                if s.record(k).members.is_empty() {
                    // Written before the record carried the member list: the nodes run with
                    // the list of their flags.
                    s.record_mut(k).members = names(k, s.replicas);
                }
            }
            if s.replicas != replicas {
                println!(
                    "members: {} asked, {} before; the member list follows once the new members run",
                    replicas, s.replicas
                );
            }
            s.replicas = replicas;
            s.ack = args.ack;
            s
        }
        None => {
            let what = if shards == 1 {
                format!("{replicas} nodes")
            } else {
                format!("{shards} shards of {replicas} nodes")
            };
            println!("new cluster of {what} in {}", folder.dir.display());
            state::Saved::new(replicas, args.base_port, args.ack, desired.clone())
        }
    };
    // During a scale-in the shards that give their slots away run until they own none.
    let shards = saved.shard_count();
    let desired: Vec<Vec<String>> = (0..shards).map(|k| names(k, replicas)).collect();
    check_ports(args.base_port, shards, replicas)?;
    // The member lists and the slot map are on disk before any node hears of a term.
    folder.save(&saved)?;
    let secret_path = folder.secret()?;
    let cluster_id = folder.cluster_id()?;
    let (security_args, trust, hints) = security_setup(&folder, &args)?;
    let secret = std::fs::read_to_string(&secret_path)
        .map_err(|source| Error::Io {
            what: format!("cannot read {}", secret_path.display()),
            source,
        })?
        .trim()
        .to_string();

    let launch = launch::Launch {
        args: args.clone(),
        secret_path: secret_path.clone(),
        cluster_id,
        security_args,
    };
    // Per shard: every desired member, and every member the record still holds (it leaves once
    // the change that removes it is committed).
    let members: Vec<Vec<Member>> = (0..shards)
        .map(|k| {
            let running = keep_running(&desired[k], saved.record(k), &[])
                .into_iter()
                .filter_map(ordinal)
                .max()
                .unwrap_or(replicas)
                .max(replicas);
            launch.members(k, running)
        })
        .collect();
    check_ports(
        args.base_port,
        shards,
        members.iter().map(Vec::len).max().unwrap_or(0),
    )?;
    let control_addr = format!("127.0.0.1:{}", args.base_port);
    let listener = tokio::net::TcpListener::bind(&control_addr)
        .await
        .map_err(|e| port_error(args.base_port, e))?;
    let mut specs = Vec::new();
    for group in &members {
        specs.extend(launch.specs(&folder, group)?);
    }
    let supervisor = Arc::new(Mutex::new(supervisor::Supervisor::new(bin, specs)));
    let shared = Arc::new(Mutex::new(control::Shared::default()));
    let metrics = report::PlaygroundMetrics::new().map_err(|e| Error::Io {
        what: "cannot build the metrics registry".into(),
        source: std::io::Error::other(e.to_string()),
    })?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop_tx.send(true);
    });
    let (from, to) = (shared.clone(), shared.clone());
    tokio::spawn(traffic::scrape(
        move || from.lock().unwrap_or_else(|p| p.into_inner()).node_urls(),
        move |p| to.lock().unwrap_or_else(|p| p.into_inner()).traffic.push(p),
        stop_rx.clone(),
    ));
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(control::serve(
        listener,
        shared.clone(),
        supervisor.clone(),
        metrics.operator.clone(),
        async move {
            let _ = server_stop.wait_for(|s| *s).await;
        },
    ));

    let groups = members
        .into_iter()
        .zip(desired)
        .map(|(members, desired)| coordinate::GroupSetup {
            settings: Settings {
                members: desired,
                ack: args.ack,
                detection_window_ms: args.detection_window_ms,
                allow_lossy_promotion: args.allow_lossy_promotion,
                switchover_timeout_ms: default_switchover_timeout_ms(),
            },
            members,
        })
        .collect();
    let probe_timeout = Duration::from_millis((args.detection_window_ms / 2).clamp(50, 1000));
    let control_url = format!("http://{control_addr}");
    let looper = coordinate::Loop::new(coordinate::Setup {
        groups,
        folder,
        saved,
        secret,
        probe_interval: Duration::from_millis(args.probe_interval_ms),
        probe_timeout,
        supervisor: supervisor.clone(),
        shared,
        metrics,
        quiet: args.quiet,
        control_url,
        trust,
        hints,
        launch,
    })?;
    looper.run(stop_rx).await;

    let children = supervisor
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take_children();
    for line in supervisor::terminate(children, Duration::from_secs(10)).await {
        println!("stopped {line}");
    }
    let _ = server.await;
    println!("playground stopped");
    Ok(())
}

/// Starts a change of the shard count: new shards get records (and empty data folders) and own
/// no slot yet; the coordinator then moves slots one range at a time until the shards are even
/// and the shards beyond `shards` own none.
fn reshard(
    folder: &state::Folder,
    mut s: state::Saved,
    shards: usize,
    replicas: usize,
) -> Result<state::Saved, Error> {
    let have = s.shard_count();
    if s.slot_map().slots != rcluster_proto::DEFAULT_SLOTS {
        return Err(Error::Usage(format!(
            "{} holds a slot map of {} slots; resharding needs {}",
            folder.dir.display(),
            s.slot_map().slots,
            rcluster_proto::DEFAULT_SLOTS
        )));
    }
    for k in have..shards {
        for name in names(k, replicas) {
            // A shard removed earlier may have left its folder: a new shard starts empty.
            let dir = folder.path(&name);
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|source| Error::Io {
                    what: format!("cannot clear {}", dir.display()),
                    source,
                })?;
            }
        }
        s.shards.push(state::ShardRecord {
            coordinator: crate::failover::Coordinator {
                members: names(k, replicas),
                ..Default::default()
            },
            history: Default::default(),
        });
    }
    if shards > have {
        let map = s
            .slot_map()
            .with_shards(shards as u32)
            .map_err(|e| Error::Usage(e.to_string()))?;
        s.slots = Some(map);
    }
    for k in 0..s.shard_count() {
        if s.record(k).members.is_empty() {
            s.record_mut(k).members = names(k, s.replicas);
        }
    }
    // Asked again with another count while one runs: the range moving finishes, then the slots
    // move toward the new count.
    let mut r = s
        .reshard
        .take()
        .unwrap_or_else(|| state::Reshard::new(have as u32, shards as u32));
    r.shards = shards as u32;
    s.reshard = Some(r);
    s.replicas = replicas;
    Ok(s)
}

/// The node flags, the coordinator's trust and the lines telling the user how to connect, for
/// `--tls` and `--auth`.
fn security_setup(
    folder: &state::Folder,
    args: &PlaygroundArgs,
) -> Result<(Vec<String>, rcluster_client::tls::Trust, Vec<String>), Error> {
    let mut node_args = Vec::new();
    let mut trust = rcluster_client::tls::Trust::System;
    let mut hints = Vec::new();
    if args.tls {
        let (files, renewed) = security::prepare_tls(folder, now_ms() / 1000)?;
        if renewed {
            println!("issued a node certificate: {}", files.cert.display());
        }
        trust = rcluster_client::tls::Trust::from_pem_file(&files.ca).map_err(Error::Usage)?;
        node_args.extend(files.node_args());
        hints.push(format!(
            "TLS: the nodes serve https; trust their CA: export RCLUSTER_CACERT={}",
            files.ca.display()
        ));
    }
    if args.auth {
        let file = security::prepare_auth(folder)?;
        node_args.extend(["--auth-file".to_string(), file.display().to_string()]);
        hints.push(format!(
            "auth: tokens for the read, write and admin roles in {}/token-*: export RCLUSTER_TOKEN=$(cat {})",
            folder.dir.display(),
            folder.path("token-admin").display()
        ));
    }
    Ok((node_args, trust, hints))
}

/// The members of `shard` in a shard of `n`.
fn names(shard: usize, n: usize) -> Vec<String> {
    (1..=n).map(|i| member_name(shard, i)).collect()
}

/// `i` of member `ni` or `sKni`.
fn ordinal(name: &str) -> Option<usize> {
    let rest = match name.strip_prefix('s') {
        Some(r) => &r[r.find('n')?..],
        None => name,
    };
    rest.strip_prefix('n')?.parse().ok()
}

/// Every node port (BASE_PORT+100·k+i) must fit.
fn check_ports(base_port: u16, shards: usize, replicas: usize) -> Result<(), Error> {
    let highest = usize::from(base_port) + 100 * shards.saturating_sub(1) + replicas;
    if base_port == 0 || highest > usize::from(u16::MAX) {
        return Err(Error::Usage(format!(
            "--base-port {base_port} leaves no room for {shards} shard(s) of {replicas} node ports"
        )));
    }
    Ok(())
}

fn port_error(port: u16, e: std::io::Error) -> Error {
    Error::Usage(format!(
        "cannot listen on 127.0.0.1:{port}: {e}; pick another --base-port \
         (or stop what uses it: an earlier playground's nodes may still run)"
    ))
}

/// `--node-bin`, else `rcluster-node` next to this executable, else on PATH.
fn node_bin(flag: Option<&Path>) -> Result<PathBuf, Error> {
    let on_path = |name: &Path| -> Option<PathBuf> {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    };
    if let Some(p) = flag {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        if p.components().count() == 1
            && let Some(found) = on_path(p)
        {
            return Ok(found);
        }
        return Err(Error::Usage(format!(
            "--node-bin {}: no such file",
            p.display()
        )));
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("rcluster-node")))
        .filter(|p| p.is_file());
    beside
        .or_else(|| on_path(Path::new("rcluster-node")))
        .ok_or_else(|| {
            Error::Usage(
                "cannot find rcluster-node next to this program or on PATH; pass --node-bin".into(),
            )
        })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: PlaygroundArgs,
    }

    #[test]
    fn flags_and_node_args_parse() {
        let cli = Cli::try_parse_from([
            "x",
            "--replicas",
            "5",
            "--ack",
            "all",
            "--quiet",
            "--",
            "--fsync",
            "interval",
        ])
        .unwrap();
        assert_eq!(cli.args.replicas, 5);
        assert_eq!(cli.args.ack, AckLevel::All);
        assert!(cli.args.quiet);
        assert_eq!(cli.args.node_args, ["--fsync", "interval"]);
        assert_eq!(cli.args.detection_window_ms, 1000);
        assert!(Cli::try_parse_from(["x", "--ack", "most"]).is_err());
        assert!(Cli::try_parse_from(["x", "--replicas", "0"]).is_err());
    }

    #[test]
    fn shard_members_have_names_and_ports_of_their_own() {
        let m = Member::new(7000, 0, 2, false);
        assert_eq!((m.name.as_str(), m.port, m.shard), ("n2", 7002, 0));
        let m = Member::new(7000, 3, 1, true);
        assert_eq!((m.name.as_str(), m.port, m.shard), ("s3n1", 7301, 3));
        assert_eq!(ordinal("n12"), Some(12));
        assert_eq!(ordinal("s3n7"), Some(7));
        assert_eq!(ordinal("x"), None);
        assert!(check_ports(7000, MAX_SHARDS, 99).is_ok());
        assert!(check_ports(65000, 8, 3).is_err());
        let cli = Cli::try_parse_from(["x", "--shards", "4", "--replicas", "2"]).unwrap();
        assert_eq!((cli.args.shards, cli.args.replicas), (4, 2));
        assert!(Cli::try_parse_from(["x", "--shards", "0"]).is_err());
    }

    #[test]
    fn a_missing_node_binary_is_a_usage_error() {
        let err = node_bin(Some(Path::new("/nonexistent/rcluster-node"))).unwrap_err();
        assert!(matches!(err, Error::Usage(_)), "{err}");
    }
}
