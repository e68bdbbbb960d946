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

/// Digits of the idempotency keys: 64 characters that need no escaping in a header or a URL.
const DIGITS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A fresh idempotency key: a random per-process prefix (64 bits, always 11 digits) plus a
/// counter (6 bits a digit, least significant first), so keys never repeat within a process and
/// collide across processes only by chance (2^-64).
///
/// Short because every node keeps each key for a day (or up to `--idempotency-max-keys`): 12 to
/// 17 bytes instead of the 26 of `rc-<16 hex>-<hex>` keep a remembered key's block at 48 heap
/// bytes, not 64.
pub fn idempotency_key() -> String {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(os_seed);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut key = String::with_capacity(17);
    for i in 0..11 {
        key.push(DIGITS[(prefix >> (6 * i)) as usize & 63] as char);
    }
    let mut rest = n;
    loop {
        key.push(DIGITS[rest as usize & 63] as char);
        rest >>= 6;
        if rest == 0 {
            return key;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn keys_are_unique_and_header_safe() {
        // Past 64 and 4,096, where the counter takes a second and a third digit.
        let keys: HashSet<String> = (0..5000).map(|_| idempotency_key()).collect();
        assert_eq!(keys.len(), 5000);
        for k in &keys {
            assert!((12..=17).contains(&k.len()), "{k}");
            assert!(
                k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{k}"
            );
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
