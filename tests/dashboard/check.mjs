// Drives the playground dashboard in headless Chromium: the page loads, shows three nodes with
// one primary and the traffic of some writes; killing the primary with its button shows a new
// primary and a failover on the timeline; the restart button brings the old one back, and its
// switchover button makes it the primary again.
// Usage: node check.mjs  (RCLUSTER_OPERATOR_BIN, RCLUSTER_NODE_BIN, SCREENSHOT optional).
import { chromium } from "playwright-core";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, openSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const targetDir = process.env.CARGO_TARGET_DIR || join(here, "..", "..", "target");
const op = resolve(process.env.RCLUSTER_OPERATOR_BIN || join(targetDir, "debug", "rcluster-operator"));
const nodeBin = resolve(process.env.RCLUSTER_NODE_BIN || join(dirname(op), "rcluster-node"));
const DEADLINE_MS = 60_000;

function fail(msg) {
  throw new Error(msg);
}

/// Polls `f` until it returns a truthy value, at most DEADLINE_MS.
async function waitFor(what, f) {
  const until = Date.now() + DEADLINE_MS;
  let last;
  while (Date.now() < until) {
    try {
      const v = await f();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  fail(`timed out waiting for ${what}${last ? ": " + last : ""}`);
}

function portFree(port) {
  return new Promise((res) => {
    const s = createServer();
    s.once("error", () => res(false));
    s.listen(port, "127.0.0.1", () => s.close(() => res(true)));
  });
}

/// A base port whose next three ports are free too (bounded tries).
async function freeBase() {
  for (let i = 0; i < 50; i++) {
    const base = 20000 + Math.floor(Math.random() * 20000);
    let ok = true;
    for (let p = base; p <= base + 3 && ok; p++) ok = await portFree(p);
    if (ok) return base;
  }
  fail("no free ports");
}

const dir = mkdtempSync(join(tmpdir(), "rcluster-dashboard-"));
const base = await freeBase();
const control = `http://127.0.0.1:${base}`;
const log = openSync(join(dir, "playground.log"), "w");
const playground = spawn(
  op,
  ["playground", "--dir", join(dir, "pg"), "--base-port", String(base), "--node-bin", nodeBin, "--quiet"],
  { stdio: ["ignore", log, log] },
);
let browser;
let userDataDir;
let stopWriter = () => {};
let code = 0;
try {
  const status = await waitFor("the playground to be ready", async () => {
    const s = await (await fetch(`${control}/status`)).json();
    return s.ready && s.primary_url ? s : null;
  });
  // Writes all along (ten a second, to whichever node leads), so the traffic table has a rate.
  let primaryUrl = status.primary_url;
  let writes = 0;
  const writer = setInterval(() => {
    fetch(`${primaryUrl}/v1/kv/dash-${writes++ % 50}`, { method: "PUT", body: String(writes) })
      .catch(() => {});
  }, 100);
  stopWriter = () => clearInterval(writer);
  setInterval(async () => {
    try {
      const s = await (await fetch(`${control}/status`)).json();
      if (s.primary_url) primaryUrl = s.primary_url;
    } catch {}
  }, 500).unref();

  userDataDir = mkdtempSync(join(tmpdir(), "rcluster-chromium-"));
  browser = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1200, height: 900 },
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  const page = browser.pages()[0] || (await browser.newPage());
  await page.goto(control + "/");
  const rows = async () =>
    page.$$eval("tr[data-node]", (trs) => trs.map((t) => [t.dataset.node, t.dataset.role]));
  const shown = await waitFor("three nodes with one primary", async () => {
    const r = await rows();
    return r.length === 3 && r.filter(([, role]) => role === "primary").length === 1 ? r : null;
  });
  const names = shown.map(([n]) => n).sort().join(",");
  if (names !== "n1,n2,n3") fail(`nodes shown: ${names}`);
  const oldPrimary = shown.find(([, role]) => role === "primary")[0];
  await waitFor("the put traffic", () => page.$('#traffic tr[data-api="put"]'));
  console.log(`dashboard shows ${names}, primary ${oldPrimary}, put traffic`);

  await page.click(`tr[data-node="${oldPrimary}"] button:text("kill -9")`);
  const newPrimary = await waitFor("a new primary on the page", async () => {
    const p = (await rows()).find(([, role]) => role === "primary");
    return p && p[0] !== oldPrimary ? p[0] : null;
  });
  await waitFor("the failover on the timeline", () => page.$('#events li[data-kind="failover"]'));
  console.log(`after killing ${oldPrimary}: primary ${newPrimary}, failover on the timeline`);
  if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });

  await page.click(`tr[data-node="${oldPrimary}"] button:text("restart")`);
  await waitFor(`${oldPrimary} back as a replica`, async () =>
    (await rows()).some(([n, role]) => n === oldPrimary && role === "replica"));
  console.log(`${oldPrimary} restarted as a replica`);

  const button = `tr[data-node="${oldPrimary}"] button:text("make primary")`;
  await waitFor(`a switchover button for ${oldPrimary}`, () => page.$(button));
  await page.click(button);
  await waitFor(`${oldPrimary} primary again after the switchover`, async () =>
    (await rows()).some(([n, role]) => n === oldPrimary && role === "primary"));
  await waitFor("the switchover on the timeline", () => page.$('#events li[data-kind="switchover"]'));
  console.log(`switched over to ${oldPrimary} from the page`);
} catch (e) {
  console.error(`dashboard check failed: ${e.message} (playground log: ${join(dir, "playground.log")})`);
  code = 1;
} finally {
  stopWriter();
  if (browser) await browser.close();
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
  playground.kill("SIGTERM");
  await waitFor("the playground to stop", () => playground.exitCode !== null || playground.signalCode !== null)
    .catch(() => playground.kill("SIGKILL"));
  if (code === 0) rmSync(dir, { recursive: true, force: true });
}
process.exit(code);
