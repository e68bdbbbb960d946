//! The README's commands are true: every shell block of its "Try it" section runs, as written, against
//! a real playground (its ports and file paths substituted, the load runs shortened), and every
//! command in it succeeds (`curl -f`: an HTTP error fails the block too).

mod support;

use std::process::Command;

use support::*;

/// The ```sh blocks of the README section `title`.
fn blocks(readme: &str, title: &str) -> Vec<String> {
    let start = readme.find(title).expect("section in README");
    let section = &readme[start + title.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    section
        .split("```sh\n")
        .skip(1)
        .map(|b| b[..b.find("```").expect("closed block")].to_string())
        .collect()
}

/// One README block as a strict bash script: HTTP errors fail, endless streams are cut after a
/// moment (their `timeout` is success), the playground's ports and a private token file are used,
/// and load runs take one second with two workers.
fn script(block: &str, node: &str, control: &str, dir: &str) -> String {
    let mut out = String::from("set -euo pipefail\n");
    for line in block.lines() {
        let line = line
            .replace("localhost:7001", node)
            .replace("localhost:7000", control)
            .replace("/tmp/rcluster-token", &format!("{dir}/token"))
            .replace("--duration 10", "--duration 1")
            .replace("--concurrency 32", "--concurrency 2")
            .replace("--rate 2000", "--rate 200")
            .replace("curl -s ", "curl -sfS ")
            .replace("curl -sN ", "curl -sfSN ");
        let line = if line.contains("curl -sfSN ") {
            let cmd = line.split(" #").next().unwrap_or(&line).trim();
            format!("timeout 2 {cmd} || [ $? -eq 124 ]")
        } else {
            line
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[test]
fn the_readme_try_it_commands_run_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let blocks = blocks(&readme, "## Try it");
    assert!(
        blocks.len() >= 3,
        "records/topics, bench, switchover blocks"
    );
    let pg = Playground::start(Options::default());
    pg.wait_all_healthy();
    let node = pg.url(&pg.names[0]);
    let node = node.trim_start_matches("http://");
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().to_str().unwrap();
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_rcluster"))
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut all = String::new();
    for block in &blocks {
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(script(block, node, &pg.control, work))
            .current_dir(dir.path())
            .env("PATH", &path)
            .env("RCLUSTER_ENDPOINTS", pg.urls.join(","))
            .env_remove("RCLUSTER_CLUSTER_ID");
        let r = run(cmd);
        assert_eq!(r.code, 0, "README block failed:\n{block}\n{r:?}");
        all.push_str(&r.stdout);
    }
    // What the blocks claim happened, did.
    assert!(
        all.contains("hello"),
        "the published message was pulled: {all}"
    );
    let user = pg.client();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rec = rt.block_on(user.get("users/42", None)).unwrap();
    let rec = rec.expect("users/42 exists");
    assert_eq!(
        rec.value["plan"], "team",
        "the compare-and-set applied: {rec:?}"
    );
}
