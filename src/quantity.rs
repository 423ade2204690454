//! Kubernetes quantities (`512Mi`, `10Gi`, `1.5G`, `2e9`) as bytes, and
//! bytes as a short human string for messages. (`kube_quantity`, used for
//! adding resource requests, reads `1.5Gi` as 1073741825 bytes and a bare
//! `Mi` as 0 through its byte conversions: byte counts are parsed here.)

/// Bytes of a quantity, rounded up; `None` for a malformed or negative one
/// or one past `u64`.
pub fn bytes(quantity: &str) -> Option<u64> {
    let s = quantity.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let multiplier: (u128, i32) = match suffix {
        "" => (1, 0),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        e if e.len() > 1 && e.starts_with(['e', 'E']) => (1, e[1..].parse().ok()?),
        _ => return None,
    };
    let mantissa = number.strip_prefix('+').unwrap_or(number);
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
        || whole.len() + fraction.len() > 30
    {
        return None;
    }
    // value = digits * 10^(exp - fraction digits) * binary multiplier
    let digits: u128 = format!("{whole}{fraction}").parse().ok()?;
    let exp = multiplier.1 - fraction.len() as i32;
    let scaled = digits.checked_mul(multiplier.0)?;
    let value = if exp >= 0 {
        scaled.checked_mul(10u128.checked_pow(exp as u32)?)?
    } else {
        let divisor = 10u128.checked_pow((-exp) as u32)?;
        scaled.div_ceil(divisor)
    };
    u64::try_from(value).ok()
}

/// `1.5Gi`, `512Mi`, `100B`: for messages, one decimal at most.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    let text = format!("{value:.1}");
    let text = text.strip_suffix(".0").unwrap_or(&text);
    format!("{text}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_the_quantities_users_write() {
        for (text, want) in [
            ("0", 0),
            ("100", 100),
            ("512Mi", 512 << 20),
            ("1Gi", 1 << 30),
            ("1.5Gi", 3 << 29),
            ("2G", 2_000_000_000),
            ("1k", 1000),
            ("1Ki", 1024),
            ("2e9", 2_000_000_000),
            ("1500m", 2),
            ("0.5", 1),
            ("1Pi", 1 << 50),
        ] {
            assert_eq!(bytes(text), Some(want), "{text}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_quantity() {
        for text in [
            "", "Mi", "1 Gi", "1GB", "-1", "1..5", "abc", "1e", "99999Ei",
        ] {
            assert_eq!(bytes(text), None, "{text}");
        }
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(100), "100B");
        assert_eq!(human(1 << 30), "1Gi");
        assert_eq!(human(3 << 29), "1.5Gi");
        assert_eq!(human(500 << 20), "500Mi");
    }

    proptest! {
        #[test]
        fn whole_mebibytes_round_trip(n in 0u64..1_000_000) {
            prop_assert_eq!(bytes(&format!("{n}Mi")), Some(n << 20));
        }

        #[test]
        fn never_panics(s in ".{0,40}") {
            let _ = bytes(&s);
        }
    }
}
