//! The `rcluster` command line.
//!
//! Exit codes: 0 ok; 1 the server answered an error (one line `error: <code>: <message>` on
//! stderr); 2 usage error; 3 no endpoint could be reached, a write's outcome is unknown, or a
//! switchover did not finish within `--wait`.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use crate::bench::BenchArgs;
use rcluster_client::calls::{self, Call};
use rcluster_client::types::*;
use rcluster_client::{Client, Error, RetryPolicy};

const VALUE_HELP: &str = "JSON value; text that is not valid JSON is stored as a JSON string \
    (`hello` = `\"hello\"`, while `42` is a number and `'\"42\"'` a string). \
    Negative numbers work as they are; other values starting with `-` go after `--`";

#[derive(Debug, Parser)]
#[command(
    name = "rcluster",
    version,
    about = "Command line client for rcluster: records, topics, status and a load generator",
    after_help = "VALUE arguments are JSON; text that is not valid JSON is taken as a string, \
        so `rcluster put greeting hello` stores \"hello\".\n\
        Exit codes: 0 ok, 1 the server answered an error, 2 usage error, \
        3 no endpoint reachable, the outcome of a write is unknown, or a switchover did not \
        finish in time."
)]
pub struct Cli {
    /// Node URL (repeatable); writes follow the primary the nodes name.
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
    /// Print the raw JSON responses (one JSON document per line for streams).
    #[arg(long, global = true)]
    pub json: bool,
    /// Per-request timeout in seconds.
    #[arg(long, global = true, default_value_t = 10.0, value_name = "SECS", value_parser = positive_secs)]
    pub timeout: f64,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone, Default)]
pub struct WriteArgs {
    /// Write acknowledgement level (default: the node's).
    #[arg(long, value_enum)]
    pub ack: Option<AckLevel>,
    /// Idempotency key (default: a fresh random one, reused by the automatic retries).
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

impl WriteArgs {
    fn options(&self) -> WriteOptions {
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
        key: String,
        #[arg(help = VALUE_HELP, allow_negative_numbers = true)]
        value: String,
        /// Seconds to live (fractions allowed).
        #[arg(long, value_name = "SECS", value_parser = positive_secs)]
        ttl: Option<f64>,
        /// Only if the current version is N (0: only if the key does not exist).
        #[arg(long, value_name = "N")]
        if_version: Option<u64>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Read a key.
    Get {
        key: String,
        #[arg(long, value_enum)]
        consistency: Option<Consistency>,
    },
    /// Delete a key.
    Delete {
        key: String,
        #[arg(long, value_name = "N")]
        if_version: Option<u64>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Add to an integer atomically (a missing key counts as 0).
    Incr {
        key: String,
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
    /// List records in key order.
    List {
        #[arg(long)]
        prefix: Option<String>,
        #[arg(long, value_name = "KEY")]
        start_after: Option<String>,
        /// Records per page (server default 100, at most 1000).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Follow `next` through every page.
        #[arg(long)]
        all: bool,
        #[arg(long, value_enum)]
        consistency: Option<Consistency>,
    },
    /// Topics: create, delete, list, publish, read, stream.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Create a subscription (a named cursor) on a topic.
    Subscribe {
        topic: String,
        name: String,
        /// earliest, latest or an offset.
        #[arg(long)]
        start: Option<Start>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Delete a subscription.
    Unsubscribe {
        topic: String,
        name: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Take messages from a subscription and advance its cursor.
    Pull {
        topic: String,
        #[arg(long, value_name = "NAME")]
        subscriber: String,
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
        #[arg(long)]
        prefix: Option<String>,
        /// Stop after N events.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Show the node's role, term, log positions and members.
    Status,
    /// Hand the primary role to a replica (planned, nothing acknowledged is lost) and wait.
    Switchover {
        /// The replica to promote (default: the most advanced one).
        #[arg(long, value_name = "NAME")]
        to: Option<String>,
        /// How long to wait for the new primary.
        #[arg(long, value_name = "SECS", default_value_t = 30.0, value_parser = positive_secs)]
        wait: f64,
    },
    /// Load generator: closed-loop workers, latency and throughput per API.
    Bench(BenchArgs),
}

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic (no error if it exists).
    Create {
        name: String,
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
        name: String,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// List topics with offsets and subscriptions.
    List,
    /// Publish messages; several VALUEs are published as one batch.
    Publish {
        name: String,
        #[arg(help = VALUE_HELP, required = true, allow_negative_numbers = true)]
        values: Vec<String>,
        #[command(flatten)]
        write: WriteArgs,
    },
    /// Read messages by offset (does not move any cursor).
    Read {
        name: String,
        #[arg(long, value_name = "OFFSET")]
        from: Option<u64>,
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        #[arg(long, value_enum)]
        consistency: Option<Consistency>,
    },
    /// Print messages as they are committed.
    Stream {
        name: String,
        /// First offset (default: the next one).
        #[arg(long, value_name = "OFFSET")]
        from: Option<u64>,
        /// Stop after N messages.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
}

fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("expected a number of seconds > 0, got {s:?}")),
    }
}

/// Entry point of the `rcluster` binary.
pub fn main() {
    let code = match Cli::try_parse() {
        Ok(cli) => run(cli),
        Err(e) => {
            // --help and --version are "errors" that exit 0; usage errors exit 2.
            let _ = e.print();
            if e.use_stderr() { 2 } else { 0 }
        }
    };
    std::process::exit(i32::from(code));
}

/// Runs a parsed command line and returns the exit code.
pub fn run(cli: Cli) -> u8 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 3;
        }
    };
    match rt.block_on(execute(cli)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {}", one_line(&e.to_string()));
            exit_code(&e)
        }
    }
}

/// 1: the server answered an error; 2: bad arguments; 3: unreachable, outcome unknown, or a
/// wait (switchover) ran out.
pub fn exit_code(e: &Error) -> u8 {
    match e {
        Error::Api { .. } | Error::InvalidResponse(_) => 1,
        Error::InvalidArgument(_) => 2,
        Error::Transport(_) | Error::OutcomeUnknown { .. } | Error::Timeout(_) => 3,
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The client the commands use; `bench` builds its own per worker.
pub fn client_for(
    endpoints: &[String],
    timeout_secs: f64,
    retry: RetryPolicy,
    cluster_id: Option<String>,
) -> Result<Client, Error> {
    Client::builder(endpoints.iter().cloned())
        .request_timeout(Duration::from_secs_f64(timeout_secs))
        .retry(retry)
        .cluster_id(cluster_id)
        .build()
}

async fn execute(cli: Cli) -> Result<(), Error> {
    let client = client_for(
        &cli.endpoints,
        cli.timeout,
        RetryPolicy::default(),
        cli.cluster_id.clone(),
    )?;
    let json = cli.json;
    let call = match cli.command {
        Command::Bench(args) => {
            return bench::run(&cli.endpoints, cli.timeout, &client, args, json).await;
        }
        Command::Watch { prefix, count } => {
            let events = client.open_stream(&calls::watch(prefix.as_deref())).await?;
            return output::print_events(events, count, json, output::watch_line).await;
        }
        Command::Topic(TopicCommand::Stream { name, from, count }) => {
            let events = client.open_stream(&calls::stream(&name, from)?).await?;
            return output::print_events(events, count, json, output::message_event_line).await;
        }
        Command::Switchover { to, wait } => {
            let wait = Duration::from_secs_f64(wait);
            return switchover::run(&client, to.as_deref(), wait, json).await;
        }
        Command::List {
            prefix,
            start_after,
            limit,
            all,
            consistency,
        } => {
            let opts = ListOptions {
                prefix,
                start_after,
                limit,
                consistency,
            };
            return list(&client, opts, all, json).await;
        }
        other => build_call(other)?,
    };
    let reply = client.execute(&call).await?;
    if json {
        println!("{}", reply.json);
    } else {
        println!("{}", output::human(call.api, &reply)?);
    }
    Ok(())
}

/// The single-request commands as API calls.
fn build_call(cmd: Command) -> Result<Call, Error> {
    Ok(match cmd {
        Command::Put {
            key,
            value,
            ttl,
            if_version,
            write,
        } => {
            let opts = PutOptions {
                ttl,
                if_version,
                write: write.options(),
            };
            calls::put(&key, &parse_value_arg(&value), &opts)?
        }
        Command::Get { key, consistency } => calls::get(&key, consistency)?,
        Command::Delete {
            key,
            if_version,
            write,
        } => calls::delete(
            &key,
            &DeleteOptions {
                if_version,
                write: write.options(),
            },
        )?,
        Command::Incr {
            key,
            delta,
            min,
            max,
            write,
        } => calls::incr(&key, delta, min, max, &write.options())?,
        Command::Subscribe {
            topic,
            name,
            start,
            write,
        } => calls::subscribe(&topic, &name, start, &write.options())?,
        Command::Unsubscribe { topic, name, write } => {
            calls::unsubscribe(&topic, &name, &write.options())?
        }
        Command::Pull {
            topic,
            subscriber,
            max,
            wait_ms,
            write,
        } => calls::pull(&topic, &subscriber, max, wait_ms, &write.options())?,
        Command::Status => calls::status(),
        Command::Topic(t) => topic_call(t)?,
        Command::List { .. }
        | Command::Watch { .. }
        | Command::Bench(_)
        | Command::Switchover { .. } => {
            return Err(Error::InvalidArgument(
                "not a single-request command".into(),
            ));
        }
    })
}

fn topic_call(cmd: TopicCommand) -> Result<Call, Error> {
    Ok(match cmd {
        TopicCommand::Create {
            name,
            max_messages,
            max_age,
            write,
        } => {
            let retention = Retention {
                max_messages,
                max_age_secs: max_age,
            };
            calls::create_topic(&name, &retention, &write.options())?
        }
        TopicCommand::Delete { name, write } => calls::delete_topic(&name, &write.options())?,
        TopicCommand::List => calls::list_topics(),
        TopicCommand::Publish {
            name,
            values,
            write,
        } => {
            let mut values: Vec<Value> = values.iter().map(|v| parse_value_arg(v)).collect();
            if values.len() == 1 {
                calls::publish(&name, &values.remove(0), &write.options())?
            } else {
                calls::publish_batch(&name, &values, &write.options())?
            }
        }
        TopicCommand::Read {
            name,
            from,
            limit,
            consistency,
        } => calls::read(&name, from, limit, consistency)?,
        TopicCommand::Stream { .. } => {
            return Err(Error::InvalidArgument(
                "stream is not a single request".into(),
            ));
        }
    })
}

/// `list`, following `next` with `--all` (bounded: a page must make progress).
async fn list(client: &Client, mut opts: ListOptions, all: bool, json: bool) -> Result<(), Error> {
    const MAX_PAGES: usize = 1_000_000;
    let mut items: Vec<Value> = Vec::new();
    for _ in 0..MAX_PAGES {
        let reply = client.execute(&calls::list(&opts)).await?;
        let page: ListPage = reply.parse()?;
        if !all {
            if json {
                println!("{}", reply.json);
            } else {
                print!("{}", output::list_lines(&page, true));
            }
            return Ok(());
        }
        if !json {
            print!("{}", output::list_lines(&page, false));
        } else if let Some(arr) = reply.json.get("items").and_then(Value::as_array) {
            items.extend(arr.iter().cloned());
        }
        match page.next {
            Some(next) if Some(&next) != opts.start_after.as_ref() => opts.start_after = Some(next),
            _ => break,
        }
    }
    if json {
        println!("{}", json!({ "items": items }));
    }
    Ok(())
}

pub mod bench;
mod output;
mod switchover;

#[cfg(test)]
mod args_tests;
