//! The playground's resharding (docs/SHARDS.md "Resharding"): one range at a time, each step of
//! the migration done by a task beside the coordination loop (a copy of many keys must not hold
//! up any shard's failover), every phase change saved in the state file before it acts.

use super::super::control::{ReshardAsk, error_body};
use super::{Group, GroupSetup, Loop, lock};
use crate::failover::Settings;
use crate::reshard::{Advance, MoveError, Mover, Next, Step};
use serde_json::{Value, json};
use std::time::Duration;
use warp::http::StatusCode;

/// How long a removed shard's nodes may take to stop before they are killed.
const RETIRE_GRACE: Duration = Duration::from_secs(10);

impl Loop {
    /// `POST /reshard?shards=N`: the same change as a start with `--shards N` (the state file
    /// first, then the new shards' nodes); the slots then move in [`Loop::reshard_tick`].
    pub(super) fn reshard_asked(&mut self, ask: ReshardAsk, now: u64) {
        let answer = self.start_reshard(ask.shards, now);
        let _ = ask.reply.send(answer);
    }

    fn start_reshard(&mut self, shards: usize, now: u64) -> (StatusCode, Value) {
        let have = self.s.saved.shard_count();
        if let Some(r) = &self.s.saved.reshard {
            if r.shards as usize == shards {
                let doc =
                    json!({"shards": shards, "started": false, "reshard": self.reshard_status()});
                return (StatusCode::OK, doc);
            }
            let running = self.reshard_status();
            let message = format!(
                "a resharding to {} shards is under way ({} slots moved, {} to go); ask again \
                 once it is done",
                r.shards, running["moved_slots"], running["remaining_slots"]
            );
            let mut body = error_body("reshard_running", message);
            body["error"]["reshard"] = running;
            return (StatusCode::CONFLICT, body);
        }
        if have == shards {
            return (
                StatusCode::OK,
                json!({"shards": shards, "started": false, "reshard": null}),
            );
        }
        let replicas = self.s.saved.replicas;
        let bad = |code: StatusCode, kind: &str, message: String| (code, error_body(kind, message));
        // A shard removed a moment ago may still have nodes stopping under the same names.
        {
            let sup = lock(&self.s.supervisor);
            if let Some(name) = (have..shards)
                .flat_map(|k| super::super::names(k, replicas))
                .find(|n| sup.has(n))
            {
                let message = format!("{name} of a removed shard is still stopping; ask again");
                return bad(StatusCode::CONFLICT, "reshard_running", message);
            }
        }
        if let Err(e) = super::super::check_ports(self.s.launch.args.base_port, shards, replicas) {
            return bad(StatusCode::BAD_REQUEST, "bad_request", e.to_string());
        }
        // The new shards' sockets are bound before the state names them: a port in use refuses
        // the request with nothing changed.
        let mut added = Vec::new();
        for k in have..shards {
            let members = self.s.launch.members(k, replicas);
            match self.s.launch.specs(&self.s.folder, &members) {
                Ok(specs) => added.push((k, members, specs)),
                Err(e) => return bad(StatusCode::CONFLICT, "port_in_use", e.to_string()),
            }
        }
        let saved =
            match super::super::reshard(&self.s.folder, self.s.saved.clone(), shards, replicas) {
                Ok(s) => s,
                Err(e) => return bad(StatusCode::BAD_REQUEST, "bad_request", e.to_string()),
            };
        if let Err(e) = self.s.folder.save(&saved) {
            let message = format!("cannot save the state: {e}");
            return bad(StatusCode::INTERNAL_SERVER_ERROR, "internal", message);
        }
        self.s.saved = saved;
        for (k, members, specs) in added {
            {
                let mut sup = lock(&self.s.supervisor);
                for spec in specs {
                    // Checked above that no node of these names is known.
                    let _ = sup.add(spec);
                }
            }
            let settings = Settings {
                members: members.iter().map(|m| m.name.clone()).collect(),
                ..self.groups[0].settings.clone()
            };
            let history = self.s.saved.history(k).clone();
            self.groups
                .push(Group::new(k, GroupSetup { settings, members }, history));
        }
        let text = format!("resharding asked: {have} shard(s) now, {shards} asked");
        self.record(
            now,
            "reshard",
            &text,
            json!({"shards": shards, "from": have}),
        );
        let doc = json!({"shards": shards, "from": have, "started": true, "reshard": self.reshard_status()});
        (StatusCode::ACCEPTED, doc)
    }

    /// Advances a resharding by at most one step per cycle; never waits for a step to finish.
    pub(super) async fn reshard_tick(&mut self, now: u64) {
        let Some(plan) = self.s.saved.reshard.clone() else {
            return;
        };
        if let Some(moving) = self.moving.take() {
            if !moving.is_finished() {
                self.moving = Some(moving);
                return;
            }
            match moving.await {
                Ok((mover, result)) => {
                    self.mover = Some(mover);
                    self.step_done(result, now);
                }
                Err(e) => self.reshard_error(now, &format!("the migration task failed: {e}")),
            }
            return;
        }
        let Some(m) = plan.migration.clone() else {
            self.next_move(now);
            return;
        };
        let (Some(source), Some(target)) = (self.primary_url(m.from), self.primary_url(m.to))
        else {
            // A shard without a primary: its failover comes first; the migration waits.
            return;
        };
        let mover = self
            .mover
            .take()
            .unwrap_or_else(|| Mover::new(self.commands.clone()));
        let done = self.step_done.clone();
        // The task goes through the steps of one phase by itself and comes back with the next
        // record to save (or an error): the loop only ever saves the record.
        self.moving = Some(tokio::spawn(async move {
            let out = mover.run_phase(m, source, target).await;
            done.notify_one();
            out
        }));
    }

    fn primary_url(&self, shard: u32) -> Option<String> {
        let g = self.groups.iter().position(|g| g.shard == shard as usize)?;
        let primary = self.s.saved.record(shard as usize).primary.clone()?;
        self.url(g, &primary).map(str::to_string)
    }

    fn step_done(&mut self, result: Result<Step, MoveError>, now: u64) {
        self.reshard_failures = match &result {
            Err(_) => self.reshard_failures + 1,
            Ok(_) => 0,
        };
        let Some(mut r) = self.s.saved.reshard.clone() else {
            return;
        };
        let Some(m) = r.migration.clone() else {
            return;
        };
        match result {
            Ok(step) => {
                // With `Owned`, the map naming the target is saved before any node hears of it.
                let mut map = self.s.saved.slot_map();
                match r.advance(&mut map, &step) {
                    Ok(Advance::Save(text)) => {
                        let detail = json!({ "migration": r.migration.as_ref().unwrap_or(&m) });
                        self.s.saved.slots = Some(map);
                        self.s.saved.reshard = Some(r);
                        self.save_state(now);
                        self.record(now, "reshard", &text, detail);
                    }
                    Ok(Advance::Unchanged) => {}
                    Err(e) => self.reshard_error(now, &e.to_string()),
                }
            }
            Err(e) => {
                // Retried on the next cycle, from what the nodes' logs say; said once per streak.
                if self.reshard_failures == 1 {
                    self.reshard_error(now, &format!("{m}: {e} (retrying)"));
                }
            }
        }
    }

    /// Starts the next range move, or ends the resharding when the slots are where they belong.
    fn next_move(&mut self, now: u64) {
        let Some(mut r) = self.s.saved.reshard.clone() else {
            return;
        };
        let map = self.s.saved.slot_map();
        let map = match r.next(&map) {
            Ok(Next::Move(m)) => {
                self.s.saved.reshard = Some(r);
                self.save_state(now);
                let text = format!("resharding: {m}");
                self.record(now, "reshard", &text, json!({ "migration": m }));
                return;
            }
            Ok(Next::Done(map)) => map,
            Err(e) => return self.reshard_error(now, &e.to_string()),
        };
        // Every slot is on a shard below `shards`: the others go, their nodes stop.
        let shards = r.shards as usize;
        if shards < self.s.saved.shard_count() {
            self.s.saved.slots = Some(map);
            self.s.saved.shards.truncate(shards - 1);
        }
        self.s.saved.reshard = None;
        self.save_state(now);
        let gone: Vec<String> = self
            .groups
            .iter()
            .filter(|g| g.shard >= shards)
            .flat_map(|g| g.members.iter().map(|m| m.name.clone()))
            .collect();
        {
            let mut sup = lock(&self.s.supervisor);
            for name in &gone {
                let _ = sup.retire(name, RETIRE_GRACE);
            }
        }
        self.groups.retain(|g| g.shard < shards);
        self.pushed.retain(|name, _| !gone.contains(name));
        let text = format!("resharding done: {shards} shard(s)");
        self.record(now, "reshard", &text, json!({ "shards": shards }));
    }

    fn reshard_error(&mut self, now: u64, text: &str) {
        self.record(now, "error", &format!("resharding: {text}"), json!({}));
    }

    /// What `/status` shows of a resharding.
    pub(super) fn reshard_status(&self) -> serde_json::Value {
        match &self.s.saved.reshard {
            None => serde_json::Value::Null,
            Some(r) => {
                let remaining = r.remaining(&self.s.saved.slot_map());
                json!({
                    "shards": r.shards,
                    "migration": r.migration,
                    "moved_slots": r.moved_slots,
                    "remaining_slots": remaining,
                })
            }
        }
    }
}
