//! Byte counts for people, in decimal units (1 kB = 1000 B) as registries, Docker Hub
//! and the docker CLI show them. One scaling, two ways of writing the result: the
//! docker CLI's compact form (`berth image ls`, `history`, `prune`) and the web UI's
//! spaced form with one decimal.

/// How [`human_size`] writes a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeFormat {
    /// The docker CLI's: no space, at most two decimals with trailing zeros dropped,
    /// units up to GB: `512B`, `1.5kB`, `12.35MB`, `2GB`.
    Docker,
    /// One decimal and a space, units up to TB: `512 B`, `1.5 kB`, `12.3 MB`, `2.0 GB`.
    OneDecimal,
}

const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];

impl SizeFormat {
    /// The largest unit this format scales to (an index into [`UNITS`]).
    fn largest_unit(self) -> usize {
        match self {
            SizeFormat::Docker => 3,
            SizeFormat::OneDecimal => 4,
        }
    }
}

/// `bytes` in the largest decimal unit (up to the format's largest) that leaves a
/// value of at least 1, written as `format` says.
pub fn human_size(bytes: u64, format: SizeFormat) -> String {
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < format.largest_unit() {
        value /= 1000.0;
        unit += 1;
    }
    match (format, unit) {
        (SizeFormat::Docker, 0) => format!("{bytes}B"),
        (SizeFormat::Docker, _) => {
            let number = format!("{value:.2}");
            let number = number.trim_end_matches('0').trim_end_matches('.');
            format!("{number}{}", UNITS[unit])
        }
        (SizeFormat::OneDecimal, 0) => format!("{bytes} B"),
        (SizeFormat::OneDecimal, _) => format!("{value:.1} {}", UNITS[unit]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_form() {
        let docker = |b| human_size(b, SizeFormat::Docker);
        assert_eq!(docker(0), "0B");
        assert_eq!(docker(999), "999B");
        assert_eq!(docker(1000), "1kB");
        assert_eq!(docker(1500), "1.5kB");
        assert_eq!(docker(12_345_678), "12.35MB");
        assert_eq!(docker(2_000_000_000), "2GB");
        // GB is the largest unit.
        assert_eq!(docker(3_000_000_000_000), "3000GB");
    }

    #[test]
    fn one_decimal_form() {
        let spaced = |b| human_size(b, SizeFormat::OneDecimal);
        assert_eq!(spaced(0), "0 B");
        assert_eq!(spaced(999), "999 B");
        assert_eq!(spaced(1000), "1.0 kB");
        assert_eq!(spaced(2_500_000), "2.5 MB");
        assert_eq!(spaced(12_345_678), "12.3 MB");
        assert_eq!(spaced(3_000_000_000_000), "3.0 TB");
        assert_eq!(spaced(3_000_000_000_000_000), "3000.0 TB");
    }

    #[test]
    fn the_unit_changes_at_a_thousand() {
        for format in [SizeFormat::Docker, SizeFormat::OneDecimal] {
            assert!(human_size(999_999, format).ends_with("kB"));
            assert!(human_size(1_000_000, format).ends_with("MB"));
        }
    }
}
