//! File descriptors. Running out of them must never stop the log writer (a failed segment roll
//! stops the node), so at start the node raises its soft limit to the hard one, serves at most
//! as many connections as leave room for everything else, and keeps spare descriptors that the
//! log writer gives back just before it opens a new segment.

use std::fs::File;
use std::sync::Mutex;

/// Descriptors kept for everything but client connections: WAL segments and their directory,
/// snapshot files, connections to the other members, stdio and the runtime's own.
pub const HEADROOM: usize = 48;
/// Connections beyond the limit for health probes and authenticated internal calls, so a node
/// whose connections are all busy still answers its orchestrator and its peers.
pub const RESERVED_CONNECTIONS: usize = 16;
/// Connections admitted while the one they displaced is still closing.
pub const OVERSHOOT: usize = 16;
/// Closed connections whose unread input is drained before the socket is released (so the
/// client sees the answer rather than a reset).
pub const LINGERING: usize = 32;
/// Spare descriptors for the log writer: a new segment and its directory are open together.
const SPARES: usize = 2;

/// Raises the soft descriptor limit to the hard limit; returns the soft limit in force.
pub fn raise_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    Ok(lim.rlim_cur)
}

/// Descriptors a node needs besides its normal connections.
pub fn fixed_need() -> usize {
    HEADROOM + RESERVED_CONNECTIONS + OVERSHOOT + LINGERING + SPARES
}

/// How many connections to serve: `wanted`, or fewer when the descriptor limit `soft` leaves no
/// room for them. Errs when the limit leaves no useful room at all.
pub fn connection_budget(wanted: usize, soft: u64) -> Result<usize, String> {
    let soft = usize::try_from(soft).unwrap_or(usize::MAX);
    let need = fixed_need();
    if soft < need + 8 {
        return Err(format!(
            "the descriptor limit ({soft}) is too low: a node needs {need} descriptors besides \
             its client connections (raise it with `ulimit -n`)"
        ));
    }
    Ok(wanted.clamp(1, soft - need))
}

static SPARE: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// Opens the spare descriptors (called once at start).
pub fn keep_spares() {
    refill(&mut SPARE.lock().unwrap());
}

fn refill(spare: &mut Vec<File>) {
    while spare.len() < SPARES {
        match File::open("/dev/null") {
            Ok(f) => spare.push(f),
            Err(_) => return,
        }
    }
}

/// Runs `open` (the WAL opening a new segment) with the spare descriptors given back first, so
/// it cannot fail for lack of descriptors while connections took every other one.
pub fn with_spare_descriptors<T>(open: impl FnOnce() -> T) -> T {
    drop(std::mem::take(&mut *SPARE.lock().unwrap()));
    let out = open();
    refill(&mut SPARE.lock().unwrap());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_leaves_room_below_the_limit() {
        assert_eq!(connection_budget(1024, 100_000), Ok(1024));
        let need = fixed_need();
        assert_eq!(connection_budget(1024, (need + 100) as u64), Ok(100));
        assert_eq!(connection_budget(0, 100_000), Ok(1));
        assert!(connection_budget(10, need as u64).is_err());
    }

    #[test]
    fn spares_are_given_back_around_the_open_and_taken_again() {
        keep_spares();
        assert_eq!(SPARE.lock().unwrap().len(), SPARES);
        let during = with_spare_descriptors(|| SPARE.lock().unwrap().len());
        assert_eq!(during, 0);
        assert_eq!(SPARE.lock().unwrap().len(), SPARES);
    }
}
