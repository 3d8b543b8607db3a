//! Wall-clock times as people read them: Unix milliseconds printed in UTC.

/// `at_ms` (milliseconds since the Unix epoch) as `YYYY-MM-DD HH:MM:SS UTC`, the civil
/// date from the day count by Howard Hinnant's `civil_from_days`.
pub fn utc_time(at_ms: u64) -> String {
    let secs = at_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Shifted so that a 400-year era starts on 0000-03-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let (h, m, s) = (rem / 3_600, rem % 3_600 / 60, rem % 60);
    format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02} UTC")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_times_read_as_utc_dates() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        // 2024-02-29 (a leap day) 23:59:59.999.
        assert_eq!(utc_time(1_709_251_199_999), "2024-02-29 23:59:59 UTC");
        assert_eq!(utc_time(1_709_251_200_000), "2024-03-01 00:00:00 UTC");
        assert_eq!(utc_time(1_798_761_600_000), "2027-01-01 00:00:00 UTC");
        assert_eq!(utc_time(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }
}
