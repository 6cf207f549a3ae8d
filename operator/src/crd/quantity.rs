//! Kubernetes quantity arithmetic, just enough to check and compare volume
//! sizes (`storage.size`, PVC capacity) without the apiserver.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The value of `q` in its base unit (bytes for storage), rounded up to a
/// whole unit as the apiserver does. `None` when `q` is not a valid
/// quantity or is too large for 128 bits.
pub fn quantity_value(q: &Quantity) -> Option<i128> {
    parse(q.0.trim())
}

/// `Some(true)` when `a > b`, `None` when either is not a quantity.
pub fn quantity_greater(a: &Quantity, b: &Quantity) -> Option<bool> {
    Some(quantity_value(a)? > quantity_value(b)?)
}

fn parse(s: &str) -> Option<i128> {
    let (negative, rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let number_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_len);
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.is_empty() && frac_part.is_empty() || frac_part.contains('.') {
        return None;
    }
    // value = mantissa / 10^scale * multiplier / divisor
    let digits = format!("{int_part}{frac_part}");
    let mantissa: i128 = digits.parse().ok()?;
    let mut denominator: i128 = 10i128.checked_pow(u32::try_from(frac_part.len()).ok()?)?;
    let mut multiplier: i128 = 1;
    match suffix {
        "" => {}
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
            let power = "KMGTPE".find(&suffix[..1])? as u32 + 1;
            multiplier = 1024i128.checked_pow(power)?;
        }
        "m" => denominator = denominator.checked_mul(1000)?,
        "k" => multiplier = 1000,
        "M" | "G" | "T" | "P" | "E" => {
            let power = "MGTPE".find(suffix)? as u32 + 2;
            multiplier = 1000i128.checked_pow(power)?;
        }
        exponent if exponent.starts_with(['e', 'E']) => {
            let exp: i32 = exponent[1..].parse().ok()?;
            if exp >= 0 {
                multiplier = 10i128.checked_pow(exp.unsigned_abs())?;
            } else {
                denominator = denominator.checked_mul(10i128.checked_pow(exp.unsigned_abs())?)?;
            }
        }
        _ => return None,
    }
    let scaled = mantissa.checked_mul(multiplier)?;
    let value = (scaled + denominator - 1) / denominator;
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity(s.to_owned())
    }

    #[test]
    fn parses_binary_decimal_and_exponent_forms() {
        assert_eq!(quantity_value(&q("1Gi")), Some(1 << 30));
        assert_eq!(quantity_value(&q("1024Mi")), Some(1 << 30));
        assert_eq!(quantity_value(&q("1.5Gi")), Some(3 << 29));
        assert_eq!(quantity_value(&q("10G")), Some(10_000_000_000));
        assert_eq!(quantity_value(&q("500k")), Some(500_000));
        assert_eq!(quantity_value(&q("1e3")), Some(1000));
        assert_eq!(quantity_value(&q("1500m")), Some(2));
        assert_eq!(quantity_value(&q("42")), Some(42));
        assert_eq!(quantity_value(&q("-1Ki")), Some(-1024));
        assert_eq!(quantity_value(&q(".5Ki")), Some(512));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "Gi", "1 Gi", "1GB", "1..2", "abc", "1.2.3Mi", "1e", "+"] {
            assert_eq!(quantity_value(&q(bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn compares_across_units() {
        assert_eq!(quantity_greater(&q("2Gi"), &q("2000Mi")), Some(true));
        assert_eq!(quantity_greater(&q("1Gi"), &q("1024Mi")), Some(false));
        assert_eq!(quantity_greater(&q("1G"), &q("1Gi")), Some(false));
        assert_eq!(quantity_greater(&q("x"), &q("1Gi")), None);
    }
}
