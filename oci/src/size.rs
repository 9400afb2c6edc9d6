//! Byte counts for people, in decimal units (1 kB = 1000 B) as registries, Docker Hub
//! and the docker CLI show them. One scaling, two ways of writing the result: the
//! docker CLI's compact form (`berth image ls`, `history`, `prune`) and the web UI's
//! spaced form with one decimal.

/// How [`human_size`] writes a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeFormat {
    /// The docker CLI's (go-units' `HumanSizeWithPrecision`): no space, the number
    /// as Go's `%.{digits}g` writes it, units up to YB: `512B`, `1.5kB`, `12.3MB`
    /// (3 digits, as `docker images` and `docker history`), `12.35MB` (4, as
    /// `docker image prune`).
    Docker { digits: usize },
    /// One decimal and a space, units up to TB: `512 B`, `1.5 kB`, `12.3 MB`, `2.0 GB`.
    OneDecimal,
}

const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];

impl SizeFormat {
    /// The largest unit this format scales to (an index into [`UNITS`]).
    fn largest_unit(self) -> usize {
        match self {
            SizeFormat::Docker { .. } => UNITS.len() - 1,
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
    match format {
        SizeFormat::Docker { digits } => format!("{}{}", go_g(value, digits), UNITS[unit]),
        SizeFormat::OneDecimal if unit == 0 => format!("{bytes} B"),
        SizeFormat::OneDecimal => format!("{value:.1} {}", UNITS[unit]),
    }
}

/// `value` (≥ 0) as Go's `%.{digits}g`: `digits` significant digits, trailing zeros
/// dropped, and the exponent form when the exponent is at least `digits` (so
/// 999.95 with 3 digits is `1e+03`, as docker prints it).
fn go_g(value: f64, digits: usize) -> String {
    let digits = digits.max(1);
    // Rounding to `digits` significant digits first decides the exponent.
    let scientific = format!("{:.*e}", digits - 1, value);
    let (mantissa, exponent) = scientific.split_once('e').expect("{:e} has an exponent");
    let exponent: i32 = exponent.parse().expect("{:e}'s exponent is a number");
    let trim = |s: &str| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s.to_owned()
        }
    };
    if exponent < -4 || exponent >= digits as i32 {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exponent.abs())
    } else {
        let decimals = (digits as i32 - 1 - exponent).max(0) as usize;
        trim(&format!("{value:.decimals$}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_form() {
        let docker = |b| human_size(b, SizeFormat::Docker { digits: 3 });
        assert_eq!(docker(0), "0B");
        assert_eq!(docker(999), "999B");
        assert_eq!(docker(1000), "1kB");
        assert_eq!(docker(1500), "1.5kB");
        assert_eq!(docker(1_982_378), "1.98MB");
        assert_eq!(docker(12_345_678), "12.3MB");
        assert_eq!(docker(123_456_789), "123MB");
        assert_eq!(docker(2_000_000_000), "2GB");
        assert_eq!(docker(3_000_000_000_000), "3TB");
        // Go's %g switches to the exponent form when rounding reaches 1000.
        assert_eq!(docker(999_950), "1e+03kB");
        let precise = |b| human_size(b, SizeFormat::Docker { digits: 4 });
        assert_eq!(precise(1_982_378), "1.982MB");
        assert_eq!(precise(12_345_678), "12.35MB");
        assert_eq!(precise(0), "0B");
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
        for format in [SizeFormat::Docker { digits: 3 }, SizeFormat::OneDecimal] {
            assert!(human_size(999_999, format).ends_with("kB"));
            assert!(human_size(1_000_000, format).ends_with("MB"));
        }
    }
}
