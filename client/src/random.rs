//! Randomness without a dependency: std's `RandomState` is seeded from the OS, which is
//! enough for backoff jitter and for idempotency keys that must not collide.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

fn os_seed() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    h.finish()
}

thread_local! {
    static STATE: Cell<u64> = Cell::new(os_seed() | 1);
}

/// A pseudo-random u64 (xorshift64*, per thread).
pub fn next_u64() -> u64 {
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// A pseudo-random number in `[0, 1)`.
pub fn unit() -> f64 {
    (next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A fresh idempotency key ([`rcluster_proto::idempotency::key`]): this process's random prefix
/// and the next number.
pub fn idempotency_key() -> String {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(os_seed);
    rcluster_proto::idempotency::key(prefix, COUNTER.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn keys_are_unique_and_header_safe() {
        let keys: HashSet<String> = (0..1000).map(|_| idempotency_key()).collect();
        assert_eq!(keys.len(), 1000);
        for k in &keys {
            assert_eq!(k[..11], keys.iter().next().unwrap()[..11], "one prefix");
        }
    }

    #[test]
    fn unit_stays_in_range() {
        for _ in 0..10_000 {
            let u = unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
