//! How the playground starts a node: its socket (bound here and held, the node inherits it) and
//! its command line. Used at start for every shard, and by an online resharding for the shards
//! it adds.

use std::path::PathBuf;
use std::sync::Arc;

use super::state::Folder;
use super::supervisor::NodeSpec;
use super::{Error, Member, PlaygroundArgs, ack_name, port_error};

/// What every node's command line shares.
#[derive(Debug, Clone)]
pub struct Launch {
    pub args: PlaygroundArgs,
    pub secret_path: PathBuf,
    pub cluster_id: String,
    /// `--tls`/`--auth` flags, before the user's `-- NODE_ARGS` (which may override them).
    pub security_args: Vec<String>,
}

impl Launch {
    /// Members 1..=count of `shard`.
    pub fn members(&self, shard: usize, count: usize) -> Vec<Member> {
        (1..=count)
            .map(|i| Member::new(self.args.base_port, shard, i, self.args.tls))
            .collect()
    }

    /// Binds every member's port and builds its command line; `group` is its shard's members.
    pub fn specs(&self, folder: &Folder, group: &[Member]) -> Result<Vec<NodeSpec>, Error> {
        group.iter().map(|m| self.spec(folder, m, group)).collect()
    }

    fn spec(&self, folder: &Folder, m: &Member, members: &[Member]) -> Result<NodeSpec, Error> {
        // The socket is held while the playground runs; a restarted node gets its port back with
        // no moment in which another program's connection could take it. (std binds with
        // SO_REUSEADDR, so connections of a node that just stopped, in TIME_WAIT, do not count
        // as the port being in use.)
        let listener = std::net::TcpListener::bind(("127.0.0.1", m.port))
            .map_err(|e| port_error(m.port, e))?;
        let data_dir = folder.path(&m.name);
        std::fs::create_dir_all(&data_dir).map_err(|source| Error::Io {
            what: format!("cannot create {}", data_dir.display()),
            source,
        })?;
        let mut a: Vec<String> = vec![
            "--name".into(),
            m.name.clone(),
            "--shard".into(),
            m.shard.to_string(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--secret-file".into(),
            self.secret_path.display().to_string(),
            "--cluster-id".into(),
            self.cluster_id.clone(),
            "--ack".into(),
            ack_name(self.args.ack).into(),
        ];
        for other in members {
            a.push("--member".into());
            a.push(format!("{}={}", other.name, other.url));
        }
        // Every node here shares this machine's CPUs: each serves on its share of them rather
        // than on a thread per CPU (README "Performance"). `-- --worker-threads N` sets it.
        if !self
            .args
            .node_args
            .iter()
            .any(|x| x.starts_with("--worker-threads"))
        {
            let nodes = usize::from(self.args.shards) * usize::from(self.args.replicas);
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            a.push("--worker-threads".into());
            a.push(worker_share(cpus, nodes).to_string());
        }
        a.extend(self.security_args.iter().cloned());
        a.extend(self.args.node_args.iter().cloned());
        Ok(NodeSpec {
            name: m.name.clone(),
            args: a,
            listener: Some(Arc::new(listener)),
            log: folder.path(&format!("{}.log", m.name)),
        })
    }
}

/// Worker threads for each of `nodes` nodes on `cpus` CPUs: an equal share, rounded up, at least 1.
pub fn worker_share(cpus: usize, nodes: usize) -> usize {
    cpus.div_ceil(nodes.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::worker_share;

    #[test]
    fn each_node_gets_its_share_of_the_cpus_rounded_up() {
        for (cpus, nodes, want) in [(2, 3, 1), (8, 3, 3), (16, 4, 4), (1, 1, 1), (4, 0, 4)] {
            assert_eq!(
                worker_share(cpus, nodes),
                want,
                "{cpus} CPUs, {nodes} nodes"
            );
        }
    }
}
