//! Just enough of Kubernetes' resource.Quantity to validate and compare quantities: `100m`,
//! `1.5`, `1Gi`, `2k`, `1e3`.

use std::cmp::Ordering;

/// The regular expression Kubernetes quotes when a quantity does not parse.
pub const QUANTITY_FORMAT_ERROR: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// A parsed quantity, held exactly in units of 10^-9 (Kubernetes' finest scale; finer inputs
/// round up, as Kubernetes does). Values beyond the range of `i128` saturate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity {
    nanos: i128,
}

impl Quantity {
    /// Zero.
    pub const ZERO: Quantity = Quantity { nanos: 0 };

    /// Whether the quantity is below zero.
    pub fn is_negative(self) -> bool {
        self.nanos < 0
    }

    /// Whether the quantity is a whole number.
    pub fn is_integer(self) -> bool {
        self.nanos % 1_000_000_000 == 0
    }

    /// The value in thousandths, rounded up (Kubernetes' `MilliValue`, used for cpu),
    /// saturating at the bounds of `i64`.
    pub fn milli_value(self) -> i64 {
        let milli = self.nanos.div_euclid(1_000_000) + i128::from(self.nanos.rem_euclid(1_000_000) != 0);
        i64::try_from(milli).unwrap_or(if milli < 0 { i64::MIN } else { i64::MAX })
    }

    /// The value in whole units, rounded up (Kubernetes' `Value`, used for memory and
    /// storage), saturating at the bounds of `i64`.
    pub fn value(self) -> i64 {
        let units = self.nanos.div_euclid(1_000_000_000) + i128::from(self.nanos.rem_euclid(1_000_000_000) != 0);
        i64::try_from(units).unwrap_or(if units < 0 { i64::MIN } else { i64::MAX })
    }
}

/// How a suffix scales the number in front of it.
enum Scale {
    /// 10^n.
    Decimal(i32),
    /// 2^n.
    Binary(u32),
}

fn parse_suffix(suffix: &str) -> Option<Scale> {
    let scale = match suffix {
        "" => Scale::Decimal(0),
        "n" => Scale::Decimal(-9),
        "u" => Scale::Decimal(-6),
        "m" => Scale::Decimal(-3),
        "k" => Scale::Decimal(3),
        "M" => Scale::Decimal(6),
        "G" => Scale::Decimal(9),
        "T" => Scale::Decimal(12),
        "P" => Scale::Decimal(15),
        "E" => Scale::Decimal(18),
        "Ki" => Scale::Binary(10),
        "Mi" => Scale::Binary(20),
        "Gi" => Scale::Binary(30),
        "Ti" => Scale::Binary(40),
        "Pi" => Scale::Binary(50),
        "Ei" => Scale::Binary(60),
        _ => {
            let exp = suffix.strip_prefix(['e', 'E'])?;
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            // Clamp absurd exponents; anything this large saturates anyway.
            Scale::Decimal(
                exp.parse::<i64>()
                    .map_or(if exp.starts_with('-') { -1000 } else { 1000 }, |e| e.clamp(-1000, 1000) as i32),
            )
        }
    };
    Some(scale)
}

/// `mantissa * 10^exp`, rounding up (away from zero) when `exp` is negative, saturating on
/// overflow.
fn scale10(mantissa: i128, exp: i32) -> i128 {
    if exp >= 0 {
        let factor = 10i128.checked_pow(exp.unsigned_abs());
        return factor.and_then(|f| mantissa.checked_mul(f)).unwrap_or(i128::MAX);
    }
    match 10i128.checked_pow(exp.unsigned_abs()) {
        Some(divisor) => mantissa / divisor + i128::from(mantissa % divisor != 0),
        None => i128::from(mantissa != 0),
    }
}

/// Parses a quantity string; `None` if it is not a valid Kubernetes quantity.
pub fn parse_quantity(input: &str) -> Option<Quantity> {
    let s = input.trim();
    let (negative, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_len);
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
        return None;
    }
    let scale = parse_suffix(suffix)?;
    let digits = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    let frac_len = i32::try_from(frac_part.len()).ok()?;
    let mantissa: i128 = if digits.is_empty() {
        0
    } else if digits.len() > 38 {
        i128::MAX
    } else {
        digits.parse().ok()?
    };
    let nanos = match scale {
        Scale::Decimal(exp) => scale10(mantissa, exp - frac_len + 9),
        Scale::Binary(bits) => {
            let binary = mantissa.checked_mul(1i128 << bits).unwrap_or(i128::MAX);
            scale10(binary, 9 - frac_len)
        }
    };
    Some(Quantity { nanos: if negative { -nanos } else { nanos } })
}

/// Compares two quantity strings; `None` if either does not parse.
pub fn compare_quantities(a: &str, b: &str) -> Option<Ordering> {
    Some(parse_quantity(a)?.cmp(&parse_quantity(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milli_and_unit_values_round_up() {
        let q = |s: &str| parse_quantity(s).expect("valid quantity");
        assert_eq!(q("100m").milli_value(), 100);
        assert_eq!(q("1.5").milli_value(), 1500);
        assert_eq!(q("1n").milli_value(), 1);
        assert_eq!(q("1Gi").value(), 1 << 30);
        assert_eq!(q("1500m").value(), 2);
        assert_eq!(q("1e30").value(), i64::MAX);
    }

    fn q(s: &str) -> Quantity {
        parse_quantity(s).unwrap_or_else(|| panic!("{s} should parse"))
    }

    #[test]
    fn parses_kubernetes_forms() {
        assert_eq!(q("100m"), q("0.1"));
        assert_eq!(q("1"), q("1000m"));
        assert_eq!(q("1Gi"), q("1073741824"));
        assert_eq!(q("1Ki"), q("1024"));
        assert_eq!(q("1k"), q("1000"));
        assert_eq!(q("1e3"), q("1k"));
        assert_eq!(q("1E3"), q("1000"));
        assert_eq!(q("1.5Gi"), q("1536Mi"));
        assert_eq!(q("+5"), q("5"));
        assert_eq!(q(".5"), q("500m"));
        assert_eq!(q("5."), q("5"));
        assert_eq!(q("1n"), Quantity { nanos: 1 });
        assert_eq!(q("0.1n"), Quantity { nanos: 1 }, "rounds up to the nano scale");
        assert!(q("-1").is_negative());
        assert!(!q("0").is_negative());
        assert_eq!(q("0"), Quantity::ZERO);
        assert!(q("1E") > q("1P"));
        assert!(q("1Ei") > q("1E"));
        assert!(q("1e40") > q("1Ei"));
        assert!(q("2").is_integer() && q("1k").is_integer());
        assert!(!q("1.5").is_integer() && !q("100m").is_integer());
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "abc", "1.2.3", "1 Gi", "1GB", "1e", "1e+", "m", "--1", "1Gii", "."] {
            assert!(parse_quantity(bad).is_none(), "{bad} should not parse");
        }
    }

    #[test]
    fn compares() {
        assert_eq!(compare_quantities("500m", "1"), Some(Ordering::Less));
        assert_eq!(compare_quantities("2Gi", "2048Mi"), Some(Ordering::Equal));
        assert_eq!(compare_quantities("129M", "128Mi"), Some(Ordering::Less));
        assert_eq!(compare_quantities("135M", "128Mi"), Some(Ordering::Greater));
        assert_eq!(compare_quantities("x", "1"), None);
    }
}
