//! Running a parsed command line: the client it needs, one request (or a stream, a paged list,
//! the cluster's status...) and the output.

use std::time::Duration;

use serde_json::{Value, json};

use rcluster_client::calls::{self, Call};
use rcluster_client::types::*;
use rcluster_client::{Client, Error, Notice, RetryPolicy};
use rcluster_proto::SessionToken;

use crate::args::{Cli, Command, GlobalArgs, TopicCommand};
use crate::failure::Failure;
use crate::{bench, output, reshard, status, switchover, term, time};

/// A call that reached no node at all stops after this long rather than after the whole retry
/// deadline: nothing listens, and retrying longer only keeps the user waiting.
const UNREACHABLE_AFTER: Duration = Duration::from_secs(3);

/// The client every command uses: the endpoints, the timeout and the cluster id of the command
/// line; it asks every endpoint at once where the primary is before its first request, and
/// says `retrying…` on stderr when a call waits (unless --quiet).
pub fn client_for(global: &GlobalArgs, endpoints: &[String]) -> Result<Client, Error> {
    let mut b = Client::builder(endpoints.iter().cloned())
        .request_timeout(Duration::from_secs_f64(global.timeout))
        .retry(RetryPolicy::default())
        .cluster_id(global.cluster_id.clone())
        .locate_primary(true)
        // One call and exit: a stream of cluster changes would outlive its use.
        .follow_cluster(false)
        .give_up_unreachable_after(UNREACHABLE_AFTER);
    if !global.quiet {
        let json = global.json;
        b = b.on_notice(move |n: &Notice<'_>| print_notice(n, json));
    }
    global.access(b)?.build()
}

/// A transaction request from a file, or stdin for `-`.
fn read_txn(file: &str) -> Result<rcluster_client::Txn, Error> {
    let text = if file == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(file)
    }
    .map_err(|e| Error::InvalidArgument(format!("cannot read {file}: {e}")))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::InvalidArgument(format!("{file} is not a transaction: {e}")))
}

fn print_notice(n: &Notice<'_>, json: bool) {
    if !json {
        eprintln!("{n}");
        return;
    }
    let doc = match n {
        Notice::Retrying {
            api,
            endpoint,
            error,
            attempt,
            after,
        } => json!({"retrying": {"api": api, "endpoint": endpoint, "error": error.to_string(),
            "attempt": attempt, "after_ms": after.as_millis() as u64}}),
        Notice::Slow {
            api,
            endpoint,
            waited,
        } => json!({"waiting": {"api": api, "endpoint": endpoint,
            "waited_ms": waited.as_millis() as u64}}),
    };
    eprintln!("{doc}");
}

/// A VALUE argument: JSON, or with `as_string` the text itself as a JSON string.
pub fn parse_value(raw: &str, as_string: bool) -> Result<Value, Failure> {
    if as_string {
        return Ok(Value::String(raw.to_string()));
    }
    serde_json::from_str(raw).map_err(|e| {
        let shown: String = raw.chars().take(40).collect();
        let more = if raw.chars().count() > 40 { "…" } else { "" };
        Failure::Usage(format!(
            "VALUE {shown:?}{more} is not valid JSON ({e}); quote text as a JSON string \
             ('\"text\"') or pass --string"
        ))
    })
}

/// `--token-in`: the token's text, or `@FILE`.
fn token_in(arg: &str) -> Result<SessionToken, Failure> {
    let text = match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| Failure::Usage(format!("--token-in: cannot read {path}: {e}")))?,
        None => arg.to_string(),
    };
    text.trim()
        .parse()
        .map_err(|e| Failure::Usage(format!("--token-in: {e}")))
}

/// Runs a command line. The session token is written to `--token-out` whatever the outcome: it
/// holds what the command observed even when a later step failed.
pub async fn execute(cli: Cli) -> Result<(), Failure> {
    let global = cli.global;
    if let Command::Completions { shell } = cli.command {
        return completions(shell);
    }
    if let Command::Bench(b) = cli.command {
        return bench_command(&global, b).await;
    }
    let client = client_for(&global, &global.endpoints)?;
    if let Some(t) = &global.token_in {
        client.observe_token(&token_in(t)?);
    }
    let result = run(&client, &global, cli.command).await;
    if let Some(path) = &global.token_out {
        let text = format!("{}\n", client.token());
        if let Err(e) = std::fs::write(path, text) {
            let f = Failure::Usage(format!("--token-out: cannot write {}: {e}", path.display()));
            return result.and(Err(f));
        }
    }
    result
}

/// Prints a stream's events, following it when its range moves to another shard (a `moved` event:
/// reopened from the exact point it gives, so nothing is missed or printed twice). The number of
/// moves followed is bounded by the moves a resharding makes; each reopening is one request.
async fn follow(
    client: &Client,
    open: impl Fn(Option<String>) -> Result<Call, Error>,
    count: Option<u64>,
    json: bool,
    line: fn(&rcluster_client::sse::Event) -> Result<Option<String>, Error>,
) -> Result<(), Failure> {
    let mut resume = None;
    let mut printed = 0u64;
    loop {
        let events = client.open_stream(&open(resume.take())?).await?;
        let left = count.map(|c| c - printed);
        let (n, moved) = output::print_events(events, left, json, line).await?;
        printed += n;
        match moved {
            Some(r) if count.is_none_or(|c| printed < c) => resume = Some(r),
            _ => return Ok(()),
        }
    }
}

async fn run(client: &Client, global: &GlobalArgs, command: Command) -> Result<(), Failure> {
    let json = global.json;
    let call = match command {
        Command::Watch { prefix, count } => {
            let prefixes: Vec<String> = prefix.into_iter().collect();
            let open = |from: Option<String>| calls::watch_from(&prefixes, from.as_deref());
            return follow(client, open, count, json, output::watch_line).await;
        }
        Command::Topic(TopicCommand::Stream { name, from, count }) => {
            let open = |resume: Option<String>| {
                let from = match resume {
                    Some(r) => Some(r.parse::<u64>().map_err(|_| {
                        Error::InvalidResponse(format!("moved: {r:?} is not a message offset"))
                    })?),
                    None => from,
                };
                calls::stream(&name, from)
            };
            return follow(client, open, count, json, output::message_event_line).await;
        }
        Command::Switchover { to, wait } => {
            let wait = Duration::from_secs_f64(wait);
            return switchover::run(client, to.as_deref(), wait, json).await;
        }
        Command::Status { local: false } => return status::cluster(client, global).await,
        Command::Reshard {
            shards,
            playground,
            wait,
        } => {
            let wait = wait.map(Duration::from_secs_f64);
            return reshard::run(client, shards, playground, wait, json).await;
        }
        Command::Slot { keys } => return status::slots(client, &keys, json).await,
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
            return list(client, opts, all, json).await;
        }
        other => build_call(other)?,
    };
    let reply = client.execute(&call).await?;
    if json {
        term::line(&reply.json)
    } else {
        term::line(output::human(call.api, &reply, time::now_ms())?)
    }
}

/// The single-request commands as API calls.
pub fn build_call(cmd: Command) -> Result<Call, Failure> {
    Ok(match cmd {
        Command::Put {
            key,
            value,
            string,
            ttl,
            if_version,
            write,
        } => {
            let opts = PutOptions {
                ttl,
                if_version,
                write: write.options(),
            };
            calls::put(&key, &parse_value(&value, string)?, &opts)?
        }
        Command::Get { key, consistency } => calls::get(&key, consistency)?,
        Command::Txn { file, write } => calls::txn(&read_txn(&file)?, &write.options())?,
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
        Command::Status { local: true } => calls::status(),
        Command::Topic(t) => topic_call(t)?,
        other => {
            return Err(Failure::Usage(format!(
                "not a single-request command: {other:?}"
            )));
        }
    })
}

fn topic_call(cmd: TopicCommand) -> Result<Call, Failure> {
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
            string,
            write,
        } => {
            let mut values = values
                .iter()
                .map(|v| parse_value(v, string))
                .collect::<Result<Vec<Value>, Failure>>()?;
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
            return Err(Failure::Usage("stream is not a single request".into()));
        }
    })
}

/// `list`, following `next` with `--all` (bounded: a page must make progress). Without --json,
/// each page is printed as it arrives.
async fn list(
    client: &Client,
    mut opts: ListOptions,
    all: bool,
    json: bool,
) -> Result<(), Failure> {
    const MAX_PAGES: usize = 1_000_000;
    let mut items: Vec<Value> = Vec::new();
    for _ in 0..MAX_PAGES {
        let reply = client.execute(&calls::list(&opts)).await?;
        let page: ListPage = reply.parse()?;
        if !all {
            return if json {
                term::line(&reply.json)
            } else {
                term::text(&output::list_lines(&page, true, time::now_ms()))
            };
        }
        if !json {
            term::text(&output::list_lines(&page, false, time::now_ms()))?;
        } else if let Some(arr) = reply.json.get("items").and_then(Value::as_array) {
            items.extend(arr.iter().cloned());
        }
        match page.next {
            Some(next) if Some(&next) != opts.start_after.as_ref() => opts.start_after = Some(next),
            _ => break,
        }
    }
    if json {
        term::line(json!({ "items": items }))?;
    }
    Ok(())
}

/// `rcluster bench`: builds the clients the run needs (one per worker, each with one connection
/// and no retries, so that every request is measured once) and hands them to the bench.
async fn bench_command(global: &GlobalArgs, cmd: bench::BenchCommand) -> Result<(), Failure> {
    let args = match cmd.sub {
        Some(bench::BenchSub::Compare(c)) => return bench::compare(&c, global.json),
        None => cmd.args,
    };
    let setup = client_for(global, &global.endpoints)?;
    // Which nodes answer and where the primary is: workers start there.
    setup.locate().await;
    let targets: Vec<bench::Target> = if args.per_node {
        let map = setup.cluster_map().await?;
        let mut t: Vec<bench::Target> = map
            .shards
            .iter()
            .flat_map(|s| s.members.iter())
            .map(|(name, url)| bench::Target {
                name: name.clone(),
                url: url.clone(),
            })
            .collect();
        if t.is_empty() {
            t = setup
                .endpoints()
                .into_iter()
                .map(|url| bench::Target {
                    name: url.clone(),
                    url,
                })
                .collect();
        }
        t
    } else {
        let first = setup.current_endpoint();
        vec![bench::Target {
            name: "cluster".into(),
            url: first,
        }]
    };
    let mut workers = Vec::new();
    for i in 0..args.concurrency as usize {
        let node = i % targets.len();
        let endpoints: Vec<String> = if args.per_node {
            vec![targets[node].url.clone()]
        } else {
            let first = targets[0].url.clone();
            std::iter::once(first.clone())
                .chain(setup.endpoints().into_iter().filter(|e| *e != first))
                .collect()
        };
        let builder = Client::builder(endpoints)
            .request_timeout(Duration::from_secs_f64(global.timeout))
            .max_idle_per_host(1)
            .retry(RetryPolicy::no_retry())
            .discover_members(false)
            // A worker pinned to its node must not be moved to the primary by a push.
            .follow_cluster(!args.per_node)
            .cluster_id(setup.cluster_id());
        let client = global.access(builder)?.build()?;
        workers.push((node, client));
    }
    let clients = bench::Clients {
        setup,
        targets,
        workers,
    };
    let out = bench::Output {
        json: global.json,
        quiet: global.quiet,
    };
    bench::run(clients, &args, out).await.map(drop)
}

fn completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "rcluster", &mut script);
    term::text(&String::from_utf8_lossy(&script))
}
