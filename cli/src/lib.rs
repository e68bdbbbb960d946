//! The `rcluster` command line: records, topics, the whole cluster's status, the slot of a key,
//! switchover, resharding a playground, shell completions and a load generator (`bench`).
//!
//! Exit codes: 0 ok (also when the reader of stdout went away, as in `rcluster list --all | head
//! -1`); 1 the server answered an error; 2 usage error (bad flags, a VALUE that is not JSON);
//! 3 no endpoint could be reached, the outcome of a write is unknown, or a wait ran out;
//! 130 interrupted (a bench prints its partial results first). An error is one line on stderr,
//! `error: <code>: <message>`, or with `--json` one JSON document `{"error":{"code","message",
//! "exit_code",...}}`.
//!
//! Layout: [`args`] the grammar (global flags in [`args::GlobalArgs`]), `commands` running them,
//! `output`/`status` the text, `failure` the exit codes, [`bench`] the load generator.

pub mod args;
pub mod bench;
mod commands;
mod failure;
mod output;
mod reshard;
mod status;
mod switchover;
mod term;
mod time;

use clap::Parser;

pub use args::{Cli, Command, GlobalArgs};
pub use commands::client_for;
pub use failure::Failure;

/// Entry point of the `rcluster` binary.
pub fn main() {
    let code = match Cli::try_parse() {
        Ok(cli) => run(cli),
        Err(e) => usage_error(e),
    };
    std::process::exit(i32::from(code));
}

/// A command line clap refused (or `--help`/`--version`, which clap reports as errors that exit
/// 0). With --json anywhere before `--`, the refusal is printed as a JSON error.
fn usage_error(e: clap::Error) -> u8 {
    if !e.use_stderr() {
        let _ = e.print();
        return 0;
    }
    let json = std::env::args()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json");
    if json {
        let text = e.to_string();
        let first = text
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ");
        Failure::Usage(first.to_string()).report(true);
    } else {
        let _ = e.print();
    }
    2
}

/// Runs a parsed command line and returns the exit code.
pub fn run(cli: Cli) -> u8 {
    let json = cli.global.json;
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
    match rt.block_on(commands::execute(cli)) {
        Ok(()) => 0,
        Err(f) => {
            f.report(json);
            f.exit_code()
        }
    }
}

#[cfg(test)]
mod args_tests;
