//! Wall-clock helpers for printing expiry times.

/// Seconds since the Unix epoch, the unit of every `expires_at` on the
/// wire: the one place the client reads the wall clock (clippy.toml forbids
/// it elsewhere).
#[allow(clippy::disallowed_methods)]
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// `1h02m`, `4m10s`, `12s`, `expired`.
pub fn human_duration(secs: i64) -> String {
    if secs <= 0 {
        return "expired".to_owned();
    }
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h:02}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// RFC 3339 UTC (`2026-01-01T00:00:00Z`) for Unix seconds, as Kubernetes wants it.
pub fn rfc3339(unix: u64) -> String {
    let days = (unix / 86400) as i64;
    let secs = unix % 86400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_points() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_600), "2026-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400 + 3661), "2000-02-29T01:01:01Z");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_duration(-5), "expired");
        assert_eq!(human_duration(12), "12s");
        assert_eq!(human_duration(250), "4m10s");
        assert_eq!(human_duration(3720), "1h02m");
        assert_eq!(human_duration(90000), "1d01h");
    }
}
