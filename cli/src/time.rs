//! Readable times for the human output: `*_ms` fields are milliseconds since the Unix epoch on the
//! wire (and in `--json`); people get `2026-11-20 10:27:29 UTC (in 59m 58s)`.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `2026-11-20 10:27:29 UTC` for milliseconds since the epoch.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// A span of milliseconds as `1d 2h`, `3h 4m`, `5m 6s`, `7.8 s` or `90 ms`.
pub fn span(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms} ms"),
        1..=59 => format!("{:.1} s", ms as f64 / 1000.0),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, s / 60 % 60),
        _ => format!("{}d {}h", s / 86_400, s / 3600 % 24),
    }
}

/// `2026-11-20 10:27:29 UTC (in 59m 58s)` or `(... ago)`, relative to `now_ms`.
pub fn moment(ms: u64, now_ms: u64) -> String {
    let when = if ms >= now_ms {
        format!("in {}", span(ms - now_ms))
    } else {
        format!("{} ago", span(now_ms - ms))
    };
    format!("{} ({when})", utc(ms))
}

/// Year, month, day of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_spans() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        // The expiry the issue quotes, and a leap day.
        assert_eq!(utc(1_795_954_049_970), "2026-11-29 12:07:29 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(4_102_444_799_000), "2099-12-31 23:59:59 UTC");
        assert_eq!(span(90), "90 ms");
        assert_eq!(span(7_800), "7.8 s");
        assert_eq!(span(3_598_000), "59m 58s");
        assert_eq!(span(3_600_000 * 26 + 60_000), "1d 2h");
        assert_eq!(moment(3_598_000, 0), "1970-01-01 00:59:58 UTC (in 59m 58s)");
        assert_eq!(moment(0, 2_000), "1970-01-01 00:00:00 UTC (2.0 s ago)");
    }
}
