//! Argument parsing tests.

use super::*;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("deimosctl").chain(args.iter().copied()))
}

#[test]
fn globals_and_defaults() {
    let c = parse(&["get", "/a"]).expect("parses");
    assert_eq!(c.endpoints.0.len(), 1);
    assert_eq!(c.endpoints.0[0].authority, "127.0.0.1:4001");
    assert_eq!(c.output, Output::Table);
    assert_eq!(c.timeout, Duration::from_secs(5));
    let c = parse(&[
        "--endpoints",
        "http://a:1,http://b:2",
        "-o",
        "json",
        "get",
        "/a",
        "--timeout",
        "250ms",
    ])
    .expect("parses");
    assert_eq!(c.endpoints.0.len(), 2);
    assert_eq!(c.output, Output::Json);
    assert_eq!(c.timeout, Duration::from_millis(250));
}

#[test]
fn key_commands() {
    let c = parse(&["set", "k", "v", "--swap-with-value", "old", "--ttl", "5"]).expect("ok");
    match c.command {
        Command::Key(KeyCommand::Set {
            key,
            value,
            ttl,
            swap_with_value,
            swap_with_index,
        }) => {
            assert_eq!((key.as_str(), value.as_str()), ("k", "v"));
            assert_eq!(ttl, Some(5));
            assert_eq!(swap_with_value.as_deref(), Some("old"));
            assert_eq!(swap_with_index, None);
        }
        other => panic!("wrong command {other:?}"),
    }
    assert!(parse(&["get", "k", "--quorum", "--consistency", "local"]).is_err());
    assert!(parse(&["get", "k", "--consistency", "strong"]).is_err());
    assert!(parse(&["set", "k"]).is_err());
    assert!(parse(&["set", "k", "v", "--ttl", "-1"]).is_err());
    assert!(parse(&["watch", "k", "--after-index", "x"]).is_err());
    assert!(parse(&["--endpoints", "ftp://x:1", "get", "k"]).is_err());
    let c = parse(&["ls", "--recursive", "--sort"]).expect("ok");
    assert!(matches!(
        c.command,
        Command::Key(KeyCommand::Ls {
            key: None,
            recursive: true,
            sort: true,
            slash: false
        })
    ));
    assert!(matches!(
        parse(&["member", "add", "n4", "http://127.0.0.1:7104"])
            .expect("ok")
            .command,
        Command::Member(MemberCommand::Add { .. })
    ));
}

#[test]
fn member_commands() {
    match parse(&[
        "member",
        "add",
        "n4",
        "--peer-urls",
        "http://a:1,http://b:2",
        "--learner",
    ])
    .expect("ok")
    .command
    {
        Command::Member(MemberCommand::Add {
            name,
            peer_url,
            peer_urls,
            learner,
            force,
        }) => {
            assert_eq!(name, "n4");
            assert_eq!(peer_url, None);
            assert_eq!(peer_urls, ["http://a:1", "http://b:2"]);
            assert!(learner && !force);
        }
        other => panic!("wrong command {other:?}"),
    }
    assert!(parse(&[
        "member",
        "add",
        "n4",
        "http://a:1",
        "--peer-urls",
        "http://b:2"
    ])
    .is_err());
    assert!(matches!(
        parse(&["member", "promote", "abc", "--force"])
            .expect("ok")
            .command,
        Command::Member(MemberCommand::Promote { force: true, .. })
    ));
    assert!(parse(&["member", "promote"]).is_err());
    assert!(matches!(
        parse(&["member", "remove", "abc"]).expect("ok").command,
        Command::Member(MemberCommand::Remove { force: false, .. })
    ));
}

#[test]
fn bad_arguments_exit_1_help_exits_0() {
    let e = parse(&["bench", "put", "--clients", "0"]).expect_err("0 clients");
    assert_eq!(usage_exit_code(&e), 1);
    let e = parse(&["frobnicate"]).expect_err("unknown");
    assert_eq!(usage_exit_code(&e), 1);
    let e = parse(&["--help"]).expect_err("help");
    assert_eq!(usage_exit_code(&e), 0);
    let e = parse(&["ls", "--help"]).expect_err("help");
    assert_eq!(usage_exit_code(&e), 0);
    let e = parse(&["--version"]).expect_err("version");
    assert_eq!(usage_exit_code(&e), 0);
}

#[test]
fn etcdctl_v2_flags() {
    let c = parse(&["-C", "http://a:1", "ls", "-r", "-p", "--sort", "/d"]).expect("ok");
    assert_eq!(c.endpoints.0[0].authority, "a:1");
    assert!(matches!(
        c.command,
        Command::Key(KeyCommand::Ls {
            recursive: true,
            sort: true,
            slash: true,
            ..
        })
    ));
    let c = parse(&["--peers", "http://b:2", "--no-sync", "rm", "-r", "/d"]).expect("ok");
    assert_eq!(c.endpoints.0[0].authority, "b:2");
    assert!(matches!(
        c.command,
        Command::Key(KeyCommand::Rm {
            recursive: true,
            ..
        })
    ));
    assert!(matches!(
        parse(&["watch", "-f", "-r", "/d"]).expect("ok").command,
        Command::Key(KeyCommand::Watch {
            forever: true,
            recursive: true,
            ..
        })
    ));
    assert_eq!(
        parse(&["-o", "simple", "get", "/a"]).expect("ok").output,
        Output::Simple
    );
    assert!(matches!(
        parse(&["setdir", "/d", "--ttl", "5"]).expect("ok").command,
        Command::Key(KeyCommand::Setdir { ttl: Some(5), .. })
    ));
    assert!(matches!(
        parse(&["updatedir", "/d"]).expect("ok").command,
        Command::Key(KeyCommand::Updatedir { ttl: None, .. })
    ));
    assert!(matches!(
        parse(&["cluster-health"]).expect("ok").command,
        Command::ClusterHealth
    ));
    assert!(parse(&["setdir"]).is_err());
}

#[test]
fn exec_watch_takes_the_rest_as_the_command() {
    for args in [
        &["exec-watch", "-r", "/d", "--", "sh", "-c", "echo $X"][..],
        &["exec-watch", "-r", "/d", "sh", "-c", "echo $X"][..],
    ] {
        match parse(args).expect("ok").command {
            Command::Key(KeyCommand::ExecWatch {
                key,
                recursive,
                after_index,
                command,
            }) => {
                assert_eq!(key, "/d");
                assert!(recursive);
                assert_eq!(after_index, None);
                assert_eq!(command, ["sh", "-c", "echo $X"]);
            }
            other => panic!("wrong command {other:?}"),
        }
    }
    assert!(parse(&["exec-watch", "/d"]).is_err());
}

#[test]
fn member_update() {
    match parse(&["member", "update", "a1", "http://a:1,http://b:2"])
        .expect("ok")
        .command
    {
        Command::Member(MemberCommand::Update { id, peer_urls }) => {
            assert_eq!(id, "a1");
            assert_eq!(peer_urls, ["http://a:1", "http://b:2"]);
        }
        other => panic!("wrong command {other:?}"),
    }
    assert!(parse(&["member", "update", "a1"]).is_err());
}

#[test]
fn bench_arguments() {
    let c = parse(&[
        "bench",
        "get",
        "--mode",
        "quorum",
        "--clients",
        "64",
        "--duration",
        "3s",
        "--keys",
        "10",
    ])
    .expect("ok");
    match c.command {
        Command::Bench(Workload::Get { mode, opts }) => {
            assert_eq!(mode, ReadMode::Quorum);
            assert_eq!(opts.clients, 64);
            assert_eq!(opts.duration, Some(Duration::from_secs(3)));
            assert_eq!(opts.total, None);
            assert_eq!(opts.keys, 10);
            assert_eq!(opts.target, Target::Deimos);
        }
        other => panic!("wrong command {other:?}"),
    }
    let c = parse(&["bench", "mixed", "--read-ratio", "0.5", "--target", "etcd"]).expect("ok");
    assert!(matches!(
        c.command,
        Command::Bench(Workload::Mixed { read_ratio, .. }) if read_ratio == 0.5
    ));
    assert!(parse(&["bench", "mixed", "--read-ratio", "1.5"]).is_err());
    assert!(parse(&["bench", "put", "--total", "5", "--duration", "1s"]).is_err());
    assert!(parse(&["bench", "put", "--total", "0"]).is_err());
    assert!(parse(&["bench", "get", "--mode", "stale"]).is_err());
    match parse(&["bench", "put", "--threads", "1"])
        .expect("ok")
        .command
    {
        Command::Bench(w) => assert_eq!(w.threads(), 1),
        other => panic!("wrong command {other:?}"),
    }
    assert!(parse(&["bench", "put", "--threads", "-1"]).is_err());
}

#[test]
fn durations() {
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
    assert!(parse_duration("0s").is_err());
    assert!(parse_duration("-1s").is_err());
    assert!(parse_duration("abc").is_err());
    assert!(parse_duration("nan").is_err());
}
