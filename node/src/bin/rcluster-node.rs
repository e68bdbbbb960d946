use clap::Parser;
use rcluster_node::config::NodeArgs;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    if let Err(e) = runtime.block_on(rcluster_node::server::run(args)) {
        eprintln!("rcluster-node: {e}");
        std::process::exit(1);
    }
}
