//! The client library's idempotency keys: a random per-process prefix (64 bits, always 11
//! digits) and a counter (6 bits a digit, least significant first), so keys never repeat within
//! a process and collide across processes only by chance (2^-64).
//!
//! Short because every node keeps each key for a day (or up to `--idempotency-max-keys`): 12 to
//! 17 bytes for a process's first 2^36 keys (22 at most), instead of the 26 of
//! `rc-<16 hex>-<hex>`, keep a remembered key's block at 48 heap bytes, not 64.

/// 64 characters that need no escaping in a header or a URL.
const DIGITS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The key numbered `counter` of the process whose prefix is `prefix`.
pub fn key(prefix: u64, counter: u64) -> String {
    let mut key = String::with_capacity(17);
    for i in 0..11 {
        key.push(DIGITS[(prefix >> (6 * i)) as usize & 63] as char);
    }
    let mut rest = counter;
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

    #[test]
    fn keys_are_short_distinct_and_header_safe() {
        let keys: std::collections::HashSet<String> =
            (0..5000).map(|n| key(0x5eed_0123_4567_89ab, n)).collect();
        // Past 64 and 4,096, where the counter takes a second and a third digit.
        assert_eq!(keys.len(), 5000);
        for k in &keys {
            assert!((12..=14).contains(&k.len()), "{k}");
            assert!(
                k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
        }
        assert_eq!(key(u64::MAX, u64::MAX).len(), 11 + 11);
        assert_ne!(key(1, 0), key(0, 1));
    }
}
