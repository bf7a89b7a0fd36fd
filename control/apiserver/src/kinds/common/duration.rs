//! kubectl's HumanDuration: ages and durations as tables print them.

use std::time::Duration;

/// kubectl's HumanDuration age format: about two significant units
/// ("90s", "5m30s", "45m", "3h12m", "20h", "2d5h", "40d", "3y20d").
pub fn human_age(d: Duration) -> String {
    human_secs(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// HumanDuration over signed whole seconds: a timestamp a little in the
/// future (clock skew up to 1s) reads "0s", further out "<invalid>".
pub fn human_secs(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    let (m, h) = (s / 60, s / 3600);
    let d = h / 24;
    let y = d / 365;
    match () {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 => two_units(m, "m", s % 60, "s"),
        _ if m < 180 => format!("{m}m"),
        _ if h < 8 => two_units(h, "h", m % 60, "m"),
        _ if h < 48 => format!("{h}h"),
        _ if h < 24 * 8 => two_units(d, "d", h % 24, "h"),
        _ if h < 24 * 365 * 2 => format!("{d}d"),
        _ if h < 24 * 365 * 8 => two_units(y, "y", d % 365, "d"),
        _ => format!("{y}y"),
    }
}

/// "5m30s", or just "5m" when the smaller unit is zero.
fn two_units(big: i64, bu: &str, small: i64, su: &str) -> String {
    if small == 0 {
        format!("{big}{bu}")
    } else {
        format!("{big}{bu}{small}{su}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_age_matches_kubectl() {
        let cases = [
            (0, "0s"),
            (6, "6s"),
            (119, "119s"),
            (120, "2m"),
            (330, "5m30s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600 + 12 * 60, "3h12m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (48 * 3600, "2d"),
            (53 * 3600, "2d5h"),
            (8 * 86400, "8d"),
            (730 * 86400, "2y"),
            (750 * 86400, "2y20d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_age(Duration::from_secs(secs)), want, "{secs}s");
        }
        assert_eq!(
            human_age(Duration::MAX),
            format!("{}y", i64::MAX / 86400 / 365)
        );
        assert_eq!(human_secs(-1), "0s");
        assert_eq!(human_secs(-5), "<invalid>");
    }
}
