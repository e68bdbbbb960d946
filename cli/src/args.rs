//! The command line's grammar (clap). Every flag a user can type is defined here, with its help.
//! Flags every command takes are in [`GlobalArgs`]; a new global flag goes there (and into
//! [`crate::commands::client_for`] when the client needs it).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use rcluster_client::types::*;

use crate::bench::BenchCommand;

const VALUE_HELP: &str = "A JSON value: `42`, `true`, `'\"text\"'`, `'{\"a\":1}'`. Text that is \
    not valid JSON is refused unless --string is given. Negative numbers work as they are; other \
    values starting with `-` go after `--`";

const KEY_HELP: &str = "The record's key (any text; `/` is fine). A `{tag}` inside the key picks \
    the slot: keys with the same tag live on one shard";

#[derive(Debug, Parser)]
#[command(
    name = "rcluster",
    version,
    about = "Command line client for rcluster: records, topics, cluster status, switchover and a \
        load generator",
    after_help = "Endpoints: --endpoint (repeatable) or RCLUSTER_ENDPOINTS, comma-separated, e.g. \
        RCLUSTER_ENDPOINTS=127.0.0.1:7001,127.0.0.1:7002. Any node will do: requests reach the \
        primary and the shard that owns the key.\n\
        VALUE arguments are JSON; `rcluster put greeting '\"hello\"'` or \
        `rcluster put greeting hello --string` store the string hello.\n\
        Exit codes: 0 ok; 1 the server answered an error; 2 usage error; 3 no endpoint \
        reachable, the outcome of a write is unknown, or a wait ran out; 130 interrupted.\n\
        Errors are one line on stderr (`error: CODE: MESSAGE`), a JSON document with --json."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags that every command takes, before or after the subcommand.
#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// Node address, HOST:PORT or http://HOST:PORT. Repeat the flag or separate addresses with
    /// commas; RCLUSTER_ENDPOINTS takes the same comma-separated list.
    #[arg(
        long = "endpoint",
        global = true,
        env = "RCLUSTER_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:7001",
        value_name = "URL"
    )]
    pub endpoints: Vec<String>,
    /// The cluster to talk to (its id). Without it, the cluster of the first node that names
    /// one; either way no request goes to, and no redirect is followed to, another cluster's node.
    #[arg(long, global = true, env = "RCLUSTER_CLUSTER_ID", value_name = "ID")]
    pub cluster_id: Option<String>,
    /// Print the raw JSON responses (one JSON document per line for streams), and errors as
    /// JSON on stderr.
    #[arg(long, global = true)]
    pub json: bool,
    /// Per-request timeout in seconds.
    #[arg(long, global = true, default_value_t = 10.0, value_name = "SECS", value_parser = positive_secs)]
    pub timeout: f64,
    /// Start from this session token (its text, or @FILE to read it from a file): session reads
    /// (--consistency session) then see at least what that token saw.
    #[arg(long, global = true, value_name = "TOKEN|@FILE")]
    pub token_in: Option<String>,
    /// After the command, write the session token (what this and --token-in saw) to FILE, for
    /// the next invocation's --token-in @FILE.
    #[arg(long, global = true, value_name = "FILE")]
    pub token_out: Option<PathBuf>,
    /// No `retrying…` or `waiting…` notes on stderr.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Access token, for nodes started with `--auth-file`; its role (read, write or admin)
    /// decides what the commands may do.
    #[arg(
        long = "token",
        global = true,
        env = "RCLUSTER_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub access_token: Option<String>,
    /// PEM file of the CA certificates that `https://` endpoints must be issued by
    /// [default: the system's CAs].
    #[arg(long, global = true, env = "RCLUSTER_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,
}

impl GlobalArgs {
    /// Gives `builder` the access token and the trusted CAs.
    pub fn access(
        &self,
        builder: rcluster_client::ClientBuilder,
    ) -> Result<rcluster_client::ClientBuilder, rcluster_client::Error> {
        let mut builder = builder.access_token(self.access_token.clone());
        if let Some(path) = &self.cacert {
            let trust = rcluster_client::tls::Trust::from_pem_file(path)
                .map_err(|e| rcluster_client::Error::InvalidArgument(format!("--cacert {e}")))?;
            builder = builder.trust(trust);
        }
        Ok(builder)
    }
}

#[derive(Debug, Args, Clone, Default)]
pub struct WriteArgs {
    /// Write acknowledgement level (default: the cluster's).
    #[arg(long, value_enum)]
    pub ack: Option<AckLevel>,
    /// Idempotency key (default: a fresh random one, reused by the automatic retries).
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

impl WriteArgs {
    pub fn options(&self) -> WriteOptions {
        WriteOptions {
            ack: self.ack,
            idempotency_key: self.idempotency_key.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Store a value under a key.
    Put {
        #[arg(help = KEY_HELP)]
        key: String,
        #[arg(help = VALUE_HELP, allow_negative_numbers = true)]
        value: String,
        /// Store VALUE as a JSON string, whatever it looks like.
        #[arg(long)]
        string: bool,
        /// Seconds to live (fractions allowed).
        #[arg(long, value_name = "SECS", value_parser = positive_secs, allow_hyphen_values = true)]
        ttl: Option<f64>,
        /// Only if the current version is N (0: only if the key does not exist).
        #[arg(long, value_name = "N")]
        if_version: Option<u64>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Read a key.
    Get {
        #[arg(help = KEY_HELP)]
        key: String,
        /// linearizable (the primary, confirmed), session (any node that saw your token) or
        /// eventual (any node, at once). Default: the cluster's.
        #[arg(long, value_enum)]
        consistency: Option<Consistency>,
    },
    /// Delete a key.
    Delete {
        #[arg(help = KEY_HELP)]
        key: String,
        /// Only if the current version is N.
        #[arg(long, value_name = "N")]
        if_version: Option<u64>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Apply a transaction: the JSON body of `POST /v1/txn` (docs/API.md) from FILE, or stdin
    /// with `-`.
    Txn {
        /// The request: a file holding `{"compare":[…],"success":[…],"failure":[…]}`, or `-`
        /// for stdin.
        #[arg(value_name = "FILE")]
        file: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Add to an integer atomically (a missing key counts as 0).
    Incr {
        #[arg(help = KEY_HELP)]
        key: String,
        /// The amount to add (negative to subtract).
        #[arg(
            long,
            default_value_t = 1,
            allow_hyphen_values = true,
            value_name = "N"
        )]
        delta: i64,
        /// Fail (and change nothing) if the result would be below N.
        #[arg(long, allow_hyphen_values = true, value_name = "N")]
        min: Option<i64>,
        /// Fail (and change nothing) if the result would be above N.
        #[arg(long, allow_hyphen_values = true, value_name = "N")]
        max: Option<i64>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// List records in key order (across every shard).
    List {
        /// Only keys that start with this text.
        #[arg(long, value_name = "TEXT")]
        prefix: Option<String>,
        /// Only keys after this one (the `next` of the previous page).
        #[arg(long, value_name = "KEY")]
        start_after: Option<String>,
        /// Records per page (server default 100, at most 1000).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Follow `next` through every page.
        #[arg(long)]
        all: bool,
        /// Read consistency (see `get --help`).
        #[arg(long, value_enum)]
        consistency: Option<Consistency>,
    },
    /// Topics: create, delete, list, publish, read, stream.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Create a subscription (a named cursor) on a topic.
    Subscribe {
        /// The topic.
        topic: String,
        /// The subscription's name.
        name: String,
        /// Where the cursor starts: earliest, latest or an offset (default latest).
        #[arg(long, value_name = "WHERE")]
        start: Option<Start>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Delete a subscription.
    Unsubscribe {
        /// The topic.
        topic: String,
        /// The subscription's name.
        name: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Take messages from a subscription and advance its cursor.
    Pull {
        /// The topic.
        topic: String,
        /// The subscription to take messages from.
        #[arg(long, value_name = "NAME")]
        subscriber: String,
        /// At most N messages (server default 100).
        #[arg(long, value_name = "N")]
        max: Option<u32>,
        /// Wait up to MS milliseconds for a message when none is available.
        #[arg(long, value_name = "MS")]
        wait_ms: Option<u64>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Print changes to keys as they are committed.
    Watch {
        /// Only keys that start with this text.
        #[arg(long, value_name = "TEXT")]
        prefix: Option<String>,
        /// Stop after N events.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// The whole cluster from any node: every shard with its slots, primary and term, and every
    /// member with role, term, applied index, lag and readiness.
    Status {
        /// Only the node that answers, with every field of its report.
        #[arg(long)]
        local: bool,
    },
    /// Which slot and shard keys or topics live on, and that shard's primary.
    Slot {
        /// Record keys or topic names (both hash the same way).
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
    /// Hand the primary role to a replica (planned, nothing acknowledged is lost) and wait.
    Switchover {
        /// The replica to promote (default: the most advanced one).
        #[arg(long, value_name = "NAME")]
        to: Option<String>,
        /// How long to wait for the new primary.
        #[arg(long, value_name = "SECS", default_value_t = 30.0, value_parser = positive_secs)]
        wait: f64,
    },
    /// Reshard a running playground to N shards while it serves (on Kubernetes: patch the
    /// cluster resource's spec.shards; the command says how).
    Reshard {
        /// The shard count to reach (1 to 16).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=16))]
        shards: u16,
        /// The playground's control endpoint (default: found from the node that answers, by the
        /// playground's port convention).
        #[arg(long, value_name = "URL", env = "RCLUSTER_PLAYGROUND")]
        playground: Option<String>,
        /// Wait up to SECS for the slots to be where they belong.
        #[arg(long, value_name = "SECS", value_parser = positive_secs)]
        wait: Option<f64>,
    },
    /// Load generator: latency and throughput per API, per second and in total.
    Bench(BenchCommand),
    /// Print a shell completion script: `source <(rcluster completions bash)`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic (no error if it exists).
    Create {
        /// The topic's name: 1 to 128 characters of A-Z a-z 0-9 . _ -
        name: String,
        /// Keep at most N messages (the oldest go first).
        #[arg(long, value_name = "N")]
        max_messages: Option<u64>,
        /// Drop messages older than SECS (whole seconds).
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
        max_age: Option<u64>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Delete a topic and its messages.
    Delete {
        /// The topic.
        name: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// List topics with offsets and subscriptions.
    List,
    /// Publish messages; several VALUEs are published as one batch.
    Publish {
        /// The topic.
        name: String,
        #[arg(help = VALUE_HELP, required = true, allow_negative_numbers = true)]
        values: Vec<String>,
        /// Publish each VALUE as a JSON string, whatever it looks like.
        #[arg(long)]
        string: bool,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Read messages by offset (does not move any cursor).
    Read {
        /// The topic.
        name: String,
        /// The first offset to read (default: the oldest kept).
        #[arg(long, value_name = "OFFSET")]
        from: Option<u64>,
        /// At most N messages (server default 100).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Read consistency (see `get --help`).
        #[arg(long, value_enum)]
        consistency: Option<Consistency>,
    },
    /// Print messages as they are committed.
    Stream {
        /// The topic.
        name: String,
        /// First offset (default: the next one).
        #[arg(long, value_name = "OFFSET")]
        from: Option<u64>,
        /// Stop after N messages.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
}

/// A number of seconds > 0. Negative input gets this message, not clap's "use `--`" tip, because
/// the arguments that use it accept hyphen values.
pub fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("expected a number of seconds > 0, got {s:?}")),
    }
}
