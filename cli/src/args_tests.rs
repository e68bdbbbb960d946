//! Argument parsing and call building of the command line.

use clap::CommandFactory;
use serde_json::{Value, json};

use crate::args::*;
use crate::commands::{build_call, parse_value};
use rcluster_client::types::*;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("rcluster").chain(args.iter().copied()))
}

use clap::Parser;

#[test]
fn cli_definition_is_consistent() {
    Cli::command().debug_assert();
}

/// Every flag and argument of every subcommand says what it is for.
#[test]
fn every_argument_has_help() {
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if ["help", "version"].contains(&id) || arg.is_hide_set() {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} {id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_about().is_none() {
                missing.push(format!("{path} {} (no about)", sub.get_name()));
            }
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let mut missing = Vec::new();
    walk(&Cli::command(), "rcluster", &mut missing);
    assert!(missing.is_empty(), "without help: {missing:#?}");
    let help = Cli::command().render_long_help().to_string();
    assert!(help.contains("RCLUSTER_ENDPOINTS"), "{help}");
    assert!(help.contains("comma"), "{help}");
}

#[test]
fn put_with_all_options() {
    let cli = parse(&[
        "put",
        "k",
        "hello",
        "--string",
        "--ttl",
        "2.5",
        "--if-version",
        "0",
        "--ack",
        "quorum",
        "--idempotency-key",
        "abc",
        "--json",
    ])
    .unwrap();
    assert!(cli.global.json);
    match cli.command {
        Command::Put {
            key,
            value,
            string,
            ttl,
            if_version,
            write,
        } => {
            assert_eq!((key.as_str(), value.as_str(), string), ("k", "hello", true));
            assert_eq!((ttl, if_version), (Some(2.5), Some(0)));
            assert_eq!(write.ack, Some(AckLevel::Quorum));
            assert_eq!(write.idempotency_key.as_deref(), Some("abc"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn values_are_json_unless_a_string_is_asked_for() {
    assert_eq!(parse_value("42", false).unwrap(), json!(42));
    assert_eq!(parse_value("\"hi\"", false).unwrap(), json!("hi"));
    assert_eq!(parse_value("{\"a\":[1]}", false).unwrap(), json!({"a":[1]}));
    assert_eq!(parse_value("{\"a\":", true).unwrap(), json!("{\"a\":"));
    assert_eq!(parse_value("42", true).unwrap(), json!("42"));
    for bad in ["{\"a\":", "hello", "", "[1,"] {
        let f = parse_value(bad, false).unwrap_err();
        assert_eq!(f.exit_code(), 2, "{bad:?}");
        assert!(f.message().contains("--string"), "{}", f.message());
    }
    // A bad value is refused before anything is sent.
    let cli = parse(&["put", "k", "{\"a\":"]).unwrap();
    assert_eq!(build_call(cli.command).unwrap_err().exit_code(), 2);
    let cli = parse(&["topic", "publish", "t", "1", "oops"]).unwrap();
    assert_eq!(build_call(cli.command).unwrap_err().exit_code(), 2);
}

#[test]
fn negative_numbers_are_values_not_flags() {
    let cli = parse(&["incr", "n", "--delta", "-5", "--min", "-10", "--max", "3"]).unwrap();
    match cli.command {
        Command::Incr {
            delta, min, max, ..
        } => assert_eq!((delta, min, max), (-5, Some(-10), Some(3))),
        other => panic!("{other:?}"),
    }
    let cli = parse(&["put", "k", "-1"]).unwrap();
    assert!(matches!(cli.command, Command::Put { ref value, .. } if value == "-1"));
}

#[test]
fn a_negative_ttl_gets_a_clear_message() {
    let e = parse(&["put", "k", "1", "--ttl", "-1"]).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("expected a number of seconds > 0"), "{text}");
    assert!(!text.contains("tip:"), "no advice about `--`: {text}");
}

#[test]
fn endpoints_repeat_and_split_on_commas() {
    let cli = parse(&[
        "--endpoint",
        "http://a:1,b:2",
        "--endpoint",
        "http://c:3",
        "status",
    ])
    .unwrap();
    assert_eq!(cli.global.endpoints, ["http://a:1", "b:2", "http://c:3"]);
    // Global flags may also follow the subcommand.
    let cli = parse(&["status", "--endpoint", "http://c:3", "--json"]).unwrap();
    assert_eq!(cli.global.endpoints, ["http://c:3"]);
    assert!(cli.global.json);
    let cli = parse(&["status"]).unwrap();
    // Default unless RCLUSTER_ENDPOINTS is set in the test environment.
    if std::env::var_os("RCLUSTER_ENDPOINTS").is_none() {
        assert_eq!(cli.global.endpoints, ["http://127.0.0.1:7001"]);
    }
    let cli = parse(&["status", "--token-in", "@t", "--token-out", "u", "-q"]).unwrap();
    assert_eq!(cli.global.token_in.as_deref(), Some("@t"));
    assert!(cli.global.quiet && cli.global.token_out.is_some());
}

#[test]
fn topic_and_subscription_commands() {
    let cli = parse(&["topic", "publish", "t", "1", "\"two\"", "{\"x\":3}"]).unwrap();
    let call = build_call(cli.command).unwrap();
    assert_eq!(call.path, "/v1/topics/t/messages?batch=true");
    let body: Value = serde_json::from_slice(call.body.as_ref().unwrap()).unwrap();
    assert_eq!(body, json!([1, "two", {"x": 3}]));

    let cli = parse(&["topic", "publish", "t", "--string", "a b", "7"]).unwrap();
    let call = build_call(cli.command).unwrap();
    let body: Value = serde_json::from_slice(call.body.as_ref().unwrap()).unwrap();
    assert_eq!(body, json!(["a b", "7"]));

    let cli = parse(&["subscribe", "t", "s", "--start", "earliest"]).unwrap();
    assert_eq!(
        build_call(cli.command).unwrap().path,
        "/v1/topics/t/subscriptions/s?start=earliest"
    );
    let cli = parse(&[
        "pull",
        "t",
        "--subscriber",
        "s",
        "--max",
        "5",
        "--wait-ms",
        "100",
    ])
    .unwrap();
    assert_eq!(
        build_call(cli.command).unwrap().path,
        "/v1/topics/t/subscriptions/s/pull?max=5&wait_ms=100"
    );
    let cli = parse(&[
        "topic",
        "create",
        "t",
        "--max-messages",
        "10",
        "--max-age",
        "60",
    ])
    .unwrap();
    let call = build_call(cli.command).unwrap();
    let body: Value = serde_json::from_slice(call.body.as_ref().unwrap()).unwrap();
    assert_eq!(body, json!({"max_messages": 10, "max_age_secs": 60}));
}

#[test]
fn usage_errors() {
    for args in [
        &["put", "k"][..],
        &["subscribe", "t", "s", "--start", "soon"],
        &["put", "k", "v", "--ttl", "0"],
        &["get", "k", "--consistency", "strong"],
        &["pull", "t"],
        &["frobnicate"],
        &["status", "--timeout", "-1"],
        &["slot"],
        &["completions", "tcsh"],
        &["bench", "compare", "only-one.json"],
    ] {
        assert!(parse(args).is_err(), "{args:?} should not parse");
    }
}

#[test]
fn flags_after_variadic_values_stay_flags() {
    let cli = parse(&["topic", "publish", "t", "1", "-2", "--json"]).unwrap();
    assert!(cli.global.json);
    match cli.command {
        Command::Topic(TopicCommand::Publish { values, .. }) => assert_eq!(values, ["1", "-2"]),
        other => panic!("{other:?}"),
    }
    let cli = parse(&["put", "k", "--", "-x"]).unwrap();
    assert!(matches!(cli.command, Command::Put { ref value, .. } if value == "-x"));
}

#[test]
fn switchover_takes_a_target_and_a_wait() {
    let cli = parse(&["switchover", "--to", "n3", "--wait", "5"]).unwrap();
    match cli.command {
        Command::Switchover { to, wait } => assert_eq!((to.as_deref(), wait), (Some("n3"), 5.0)),
        other => panic!("{other:?}"),
    }
    let cli = parse(&["switchover"]).unwrap();
    assert!(matches!(cli.command, Command::Switchover { to: None, wait } if wait == 30.0));
    assert!(parse(&["switchover", "--wait", "0"]).is_err());
}

#[test]
fn bench_runs_or_compares() {
    let cli = parse(&["bench", "--api", "watch", "--duration", "2"]).unwrap();
    match cli.command {
        Command::Bench(b) => {
            assert!(b.sub.is_none());
            assert_eq!(b.args.duration, Some(2.0));
        }
        other => panic!("{other:?}"),
    }
    let cli = parse(&["bench", "compare", "a.json", "b.json", "--plot", "c.svg"]).unwrap();
    match cli.command {
        Command::Bench(b) => match b.sub {
            Some(crate::bench::BenchSub::Compare(c)) => assert_eq!(c.files.len(), 2),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}
