use clap::Parser;
use rcluster_node::config::NodeArgs;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// mimalloc rather than glibc's malloc: a request makes a few dozen small allocations, and glibc
/// spent about 15% of a primary's CPU on them under quorum load (perf); mimalloc's size classes
/// also fit the node's packed records and idempotency blocks with less waste (RSS per record 174 →
/// 158 B, README "Performance"), and it gives freed pages back to the OS (`node/tests/rss.rs`).
/// Set here, in the binary only: the library's unit tests keep the system allocator; the memory
/// test counts heap bytes through its own wrapper around the same allocator.
#[global_allocator]
static ALLOC: rcluster_node::alloc::Allocator = rcluster_node::alloc::Allocator;

fn main() {
    let args = NodeArgs::parse();
    let filter = EnvFilter::try_new(&args.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if args.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
    // The main thread is the first connection thread; `server::run` starts the others (see
    // `threads`).
    let runtime = match rcluster_node::threads::runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rcluster-node: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(rcluster_node::server::run(args)) {
        eprintln!("rcluster-node: {e}");
        std::process::exit(1);
    }
}
