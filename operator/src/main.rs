//! `rcluster-operator`: the ReplicatedCluster controller binary.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "rcluster-operator",
    version,
    about = "Operator for rcluster ReplicatedClusters"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the ReplicatedCluster CustomResourceDefinition as YAML.
    Crd,
    /// Print the operator's metrics registry (every family, at zero) in Prometheus text format.
    Metrics,
    /// Run N local rcluster-node processes with the failover loop (no Kubernetes needed).
    Playground(rcluster_operator::playground::PlaygroundArgs),
    /// Run the controller: reconcile ReplicatedClusters in the cluster (leader-elected).
    Run(rcluster_operator::controller::run::RunArgs),
    /// Scale the operator's Deployment to zero and wait until its pods are gone (the chart's
    /// pre-delete hook: the operators stop while their RBAC still exists).
    StopOperators(rcluster_operator::controller::stop::StopArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let output = match cli.command {
        Command::Crd => rcluster_operator::crd::crd_yaml().map_err(|e| e.to_string()),
        Command::Metrics => rcluster_operator::metrics::Metrics::new()
            .and_then(|m| m.every_family().encode())
            .map_err(|e| format!("cannot build the metrics registry: {e}")),
        Command::Playground(args) => return rcluster_operator::playground::main(args),
        Command::Run(args) => return rcluster_operator::controller::run::main(args),
        Command::StopOperators(args) => return rcluster_operator::controller::stop::main(args),
    };
    let text = match output {
        Ok(text) => text,
        Err(e) => {
            eprintln!("rcluster-operator: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`rcluster-operator crd | head -1`): stop quietly, as Unix tools do.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rcluster-operator: cannot write the output: {e}");
            ExitCode::FAILURE
        }
    }
}
