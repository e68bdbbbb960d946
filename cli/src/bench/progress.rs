//! A line a second while a bench runs (stderr): throughput, p50/p99 and errors of the last second.
//! On a terminal the line is redrawn in place; otherwise (a pipe, a CI log) each second gets its
//! own line; with `--json`, a JSON document per line. Ctrl-C ends the run early.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::Output;
use super::record::{Point, SharedRecorder, Totals};
use super::stats::micros;

const TICK: Duration = Duration::from_secs(1);

pub struct Ticker {
    out: Output,
    tty: bool,
    measure_start: Instant,
    duration: Duration,
    /// Seconds into the run where the current interval began.
    mark: f64,
    drawn: bool,
}

impl Ticker {
    pub fn new(out: Output, measure_start: Instant, duration: Duration) -> Ticker {
        Ticker {
            out,
            tty: std::io::stderr().is_terminal(),
            measure_start,
            duration,
            mark: 0.0,
            drawn: false,
        }
    }

    /// Collects and prints an interval every second until the workers are done (`done`), the run
    /// time is over, or Ctrl-C; returns whether it was Ctrl-C.
    pub async fn run(
        &mut self,
        totals: &mut Totals,
        recorders: &[SharedRecorder],
        stop: &AtomicBool,
        done: impl Fn() -> bool,
    ) -> bool {
        let ctrl_c = tokio::signal::ctrl_c();
        let mut ctrl_c = std::pin::pin!(ctrl_c);
        // Ticks start with the measured run (after the warmup), one second apart.
        let mut next = self.measure_start + TICK;
        let end = self.measure_start + self.duration;
        loop {
            let wake = next.min(end);
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = &mut ctrl_c => {
                    stop.store(true, Ordering::Relaxed);
                    return true;
                }
                // Workers that stop early (--requests) end the run without waiting a tick.
                _ = wait_done(&done) => return false,
            }
            let now = Instant::now();
            if now >= end {
                return false;
            }
            if now >= next {
                let t = now.duration_since(self.measure_start).as_secs_f64();
                let point = totals.collect(recorders, t, t - self.mark);
                self.mark = t;
                self.show(&point);
                next += TICK;
            }
        }
    }

    /// Collects the last (partial) interval, up to `elapsed` seconds into the run.
    pub fn finish(&mut self, totals: &mut Totals, recorders: &[SharedRecorder], elapsed: f64) {
        let secs = (elapsed - self.mark).max(0.0);
        let point = totals.collect(recorders, elapsed.max(self.mark), secs);
        if point.total.count == 0 {
            totals.series.pop();
        } else {
            self.show(&point);
        }
        if self.drawn && self.tty {
            eprintln!();
        }
    }

    fn show(&mut self, p: &Point) {
        if self.out.quiet {
            return;
        }
        if self.out.json {
            let doc = serde_json::json!({"progress": p});
            eprintln!("{doc}");
            return;
        }
        let line = line(p);
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
        self.drawn = true;
    }
}

async fn wait_done(done: &impl Fn() -> bool) {
    while !done() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `[  3 s]  15234 req/s  p50 1.10 ms  p99 3.90 ms  errors 0  (put 7610/s, get 7624/s)`
pub fn line(p: &Point) -> String {
    let per_api = if p.apis.len() > 1 {
        let parts: Vec<String> = p
            .apis
            .iter()
            .map(|a| format!("{} {:.0}/s", a.api, a.throughput))
            .collect();
        format!("  ({})", parts.join(", "))
    } else {
        String::new()
    };
    format!(
        "[{:>4.0} s] {:>9.0} req/s  p50 {}  p99 {}  errors {}{per_api}",
        p.t,
        p.total.throughput,
        micros(p.total.p50_us),
        micros(p.total.p99_us),
        p.total.errors
    )
}
