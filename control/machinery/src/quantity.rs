//! Kubernetes resource quantities (`100m`, `1.5Gi`, `1e3`) as exact
//! integers, for validation and for the scheduler's resource arithmetic.
//!
//! Guarantee: parsing never panics and never overflows silently; a
//! malformed or out-of-range quantity is `None`.

/// Parses a Kubernetes quantity into nano-units (value × 10⁹), rounding up
/// below that precision as Kubernetes does; None when malformed or too big.
pub fn quantity_nanos(s: &str) -> Option<i128> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'-' => (-1, &s[1..]),
        b'+' => (1, &s[1..]),
        _ => (1, s),
    };
    let num_len = rest
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(num_len);
    let (int_part, frac) = number.split_once('.').unwrap_or((number, ""));
    if int_part.is_empty() && frac.is_empty() || frac.contains('.') {
        return None;
    }
    let (exp10, exp2) = quantity_suffix(suffix)?;
    let digits: i128 = format!("{int_part}{frac}").parse().ok()?;
    let exp = exp10 + 9 - i32::try_from(frac.len()).ok()?;
    let scaled = scale_pow10(digits, exp)?.checked_mul(1i128.checked_shl(exp2)?)?;
    Some(sign * scaled)
}

/// The decimal and binary exponents a suffix stands for.
fn quantity_suffix(suffix: &str) -> Option<(i32, u32)> {
    let decimal = ["n", "u", "m", "", "k", "M", "G", "T", "P", "E"];
    if let Some(i) = decimal.iter().position(|s| *s == suffix) {
        return Some((i32::try_from(i).ok()? * 3 - 9, 0));
    }
    let binary = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    if let Some(i) = binary.iter().position(|s| *s == suffix) {
        return Some((0, u32::try_from(i).ok()? * 10 + 10));
    }
    let exp = suffix.strip_prefix(['e', 'E'])?;
    Some((exp.parse::<i32>().ok().filter(|e| e.abs() < 40)?, 0))
}

fn scale_pow10(n: i128, exp: i32) -> Option<i128> {
    let factor = 10i128.checked_pow(exp.unsigned_abs())?;
    if exp >= 0 {
        n.checked_mul(factor)
    } else {
        Some((n + factor - 1) / factor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse() {
        assert_eq!(quantity_nanos("1"), Some(1_000_000_000));
        assert_eq!(quantity_nanos("100m"), quantity_nanos("0.1"));
        assert_eq!(quantity_nanos("1Ki"), Some(1024 * 1_000_000_000));
        assert_eq!(quantity_nanos("1e3"), quantity_nanos("1k"));
        assert_eq!(quantity_nanos("1.5Gi"), quantity_nanos("1536Mi"));
        for badq in [
            "",
            "abc",
            "1.2.3",
            "1Zi",
            "--1",
            "1e999",
            "99999999999999999999Ei",
        ] {
            assert_eq!(quantity_nanos(badq), None, "{badq}");
        }
    }
}
