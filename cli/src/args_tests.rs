//! Argument parsing and call building of the command line.

use super::*;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("rcluster").chain(args.iter().copied()))
}

#[test]
fn cli_definition_is_consistent() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
}

#[test]
fn put_with_all_options() {
    let cli = parse(&[
        "put",
        "k",
        "hello",
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
    assert!(cli.json);
    match cli.command {
        Command::Put {
            key,
            value,
            ttl,
            if_version,
            write,
        } => {
            assert_eq!((key.as_str(), value.as_str()), ("k", "hello"));
            assert_eq!((ttl, if_version), (Some(2.5), Some(0)));
            assert_eq!(write.ack, Some(AckLevel::Quorum));
            assert_eq!(write.idempotency_key.as_deref(), Some("abc"));
        }
        other => panic!("{other:?}"),
    }
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
fn endpoints_repeat_and_split_on_commas() {
    let cli = parse(&[
        "--endpoint",
        "http://a:1,http://b:2",
        "--endpoint",
        "http://c:3",
        "status",
    ])
    .unwrap();
    assert_eq!(cli.endpoints, ["http://a:1", "http://b:2", "http://c:3"]);
    // Global flags may also follow the subcommand.
    let cli = parse(&["status", "--endpoint", "http://c:3", "--json"]).unwrap();
    assert_eq!(cli.endpoints, ["http://c:3"]);
    assert!(cli.json);
    let cli = parse(&["status"]).unwrap();
    // Default unless RCLUSTER_ENDPOINTS is set in the test environment.
    if std::env::var_os("RCLUSTER_ENDPOINTS").is_none() {
        assert_eq!(cli.endpoints, ["http://127.0.0.1:7001"]);
    }
}

#[test]
fn topic_and_subscription_commands() {
    let cli = parse(&["topic", "publish", "t", "1", "two", "{\"x\":3}"]).unwrap();
    let call = build_call(cli.command).unwrap();
    assert_eq!(call.path, "/v1/topics/t/messages?batch=true");
    let body: Value = serde_json::from_slice(call.body.as_ref().unwrap()).unwrap();
    assert_eq!(body, json!([1, "two", {"x": 3}]));

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
    ] {
        assert!(parse(args).is_err(), "{args:?} should not parse");
    }
}

#[test]
fn exit_codes_by_error_kind() {
    let api = Error::Api {
        status: 412,
        code: "version_mismatch".into(),
        message: "m".into(),
    };
    assert_eq!(exit_code(&api), 1);
    let unknown = Error::OutcomeUnknown {
        idempotency_key: "k".into(),
        message: "m".into(),
    };
    assert_eq!(exit_code(&unknown), 3);
    assert_eq!(exit_code(&Error::InvalidArgument("x".into())), 2);
    assert_eq!(one_line("a\n  b\tc"), "a b c");
}

#[test]
fn flags_after_variadic_values_stay_flags() {
    let cli = parse(&["topic", "publish", "t", "first", "-2", "--json"]).unwrap();
    assert!(cli.json);
    match cli.command {
        Command::Topic(TopicCommand::Publish { values, .. }) => assert_eq!(values, ["first", "-2"]),
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
    assert_eq!(exit_code(&Error::Timeout("x".into())), 3);
}
