//! Times as the docker CLI writes them: "8 minutes ago" (go-units' `HumanDuration`,
//! whose thresholds and rounding these follow) and Go's `time.Time` text.

use chrono::{DateTime, Utc};

/// An image config's `created` (RFC 3339), if it is one.
pub fn parse_created(created: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(created)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// "3 minutes ago", as `docker images` and `docker history` say how old an image or
/// step is; "N/A" when the time is unknown.
pub fn since(created: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match created {
        Some(t) => format!("{} ago", duration((now - t).num_seconds().max(0) as u64)),
        None => "N/A".to_owned(),
    }
}

/// go-units' wording of a duration of `seconds`: seconds and minutes truncated,
/// hours rounded, then days, weeks, months (30 days) and years (365 days) truncated.
pub fn duration(seconds: u64) -> String {
    let minutes = seconds / 60;
    let hours = (seconds + 1800) / 3600;
    match () {
        _ if seconds < 1 => "Less than a second".to_owned(),
        _ if seconds == 1 => "1 second".to_owned(),
        _ if seconds < 60 => format!("{seconds} seconds"),
        _ if minutes == 1 => "About a minute".to_owned(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".to_owned(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", seconds / 3600 / 24 / 365),
    }
}

/// Go's `time.Time.String()` of a UTC time, as `docker images --format` shows
/// `CreatedAt`: `2026-12-07 01:16:14 +0000 UTC`.
pub fn go_time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S +0000 UTC").to_string())
        .unwrap_or_else(|| "N/A".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_docker_writes_them() {
        let minute = 60;
        let hour = 60 * minute;
        let day = 24 * hour;
        let week = 7 * day;
        let month = 30 * day;
        let year = 365 * day;
        for (seconds, text) in [
            (0, "Less than a second"),
            (1, "1 second"),
            (59, "59 seconds"),
            (60, "About a minute"),
            (119, "About a minute"),
            (3 * minute, "3 minutes"),
            (35 * minute + 40, "35 minutes"),
            (59 * minute, "59 minutes"),
            (hour, "About an hour"),
            (hour + 29 * minute, "About an hour"),
            (hour + 31 * minute, "2 hours"),
            (3 * hour + 31 * minute, "4 hours"),
            (day, "24 hours"),
            (day + 12 * hour, "36 hours"),
            (2 * day, "2 days"),
            (13 * day + 5 * hour, "13 days"),
            (2 * week, "2 weeks"),
            (month, "4 weeks"),
            (month + 2 * week, "6 weeks"),
            (2 * month, "2 months"),
            (24 * month, "24 months"),
            (24 * month + 2 * week, "2 years"),
            (3 * year + 2 * month, "3 years"),
        ] {
            assert_eq!(duration(seconds), text, "{seconds} s");
        }
    }

    #[test]
    fn created_times() {
        let now = parse_created("2026-12-07T01:30:00Z").unwrap();
        let created = parse_created("2026-12-07T01:22:00.123456789Z");
        assert_eq!(since(created, now), "7 minutes ago");
        // A clock behind the image's is "less than a second", never negative.
        assert_eq!(
            since(parse_created("2027-01-01T00:00:00Z"), now),
            "Less than a second ago"
        );
        assert_eq!(since(parse_created("yesterday"), now), "N/A");
        assert_eq!(
            go_time(parse_created("2026-12-07T02:16:14+01:00")),
            "2026-12-07 01:16:14 +0000 UTC"
        );
    }
}
