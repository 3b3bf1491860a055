//! Kubernetes resource quantities (`128Mi`, `500m`, `1.5`, `1e3`), parsed exactly.
//!
//! The grammar is Kubernetes' (`k8s.io/apimachinery/pkg/api/resource`):
//!
//! ```text
//! quantity        ::= signedNumber suffix
//! signedNumber    ::= number | sign number
//! number          ::= digits | digits "." digits | digits "." | "." digits
//! suffix          ::= binarySI | decimalExponent | decimalSI
//! binarySI        ::= Ki | Mi | Gi | Ti | Pi | Ei
//! decimalSI       ::= m | "" | k | M | G | T | P | E
//! decimalExponent ::= "e" signedNumber | "E" signedNumber
//! ```
//!
//! The value is kept as an integer mantissa with powers of ten and two, and only the final
//! division rounds (up, as the kubelet's `MilliValue`/`Value` do): `700m` is 700 millicores
//! and `4.03` is 4030, where a float gives 701 and 4031.

use thiserror::Error;

/// Why a quantity was refused; the message is shown after `file:line:col: field:`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QuantityError {
    #[error(
        "\"{0}\" is not a valid quantity; write a number with an optional suffix \
         such as 500m, 2, 128Mi, 1Gi or 1G"
    )]
    Invalid(String),
    #[error("\"{0}\" must not be negative")]
    Negative(String),
    #[error("\"{0}\" is out of range")]
    OutOfRange(String),
}

/// A parsed quantity: `mantissa × 10^exp10 × 2^exp2`, never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Exact {
    mantissa: u128,
    exp10: i32,
    exp2: u32,
}

/// At most this many significant digits are kept exactly (u128 holds 38).
const MAX_DIGITS: usize = 36;

fn parse(text: &str) -> Result<Exact, QuantityError> {
    let invalid = || QuantityError::Invalid(text.to_string());
    let (negative, rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    // The number: digits with at most one dot, at least one digit.
    let number_len = rest
        .bytes()
        .position(|b| !(b.is_ascii_digit() || b == b'.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_len);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if fraction.contains('.') || (whole.is_empty() && fraction.is_empty()) {
        return Err(invalid());
    }
    let digits = format!("{whole}{fraction}");
    let significant = digits.trim_start_matches('0');
    // Trailing zeros of the digits move into the exponent, so `1000000000000000000000000000000000000000`
    // (too many digits for u128) still parses.
    let trimmed = significant.trim_end_matches('0');
    let moved = (significant.len() - trimmed.len()) as i32;
    if trimmed.len() > MAX_DIGITS {
        return Err(QuantityError::OutOfRange(text.to_string()));
    }
    let mantissa: u128 = if trimmed.is_empty() {
        0
    } else {
        trimmed.parse().map_err(|_| invalid())?
    };
    let mut exp10 = moved - fraction.len() as i32;
    let mut exp2 = 0;
    match suffix {
        "" => {}
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        "Ki" => exp2 = 10,
        "Mi" => exp2 = 20,
        "Gi" => exp2 = 30,
        "Ti" => exp2 = 40,
        "Pi" => exp2 = 50,
        "Ei" => exp2 = 60,
        _ => {
            // `e3`, `E-2`, `e+6`: an exponent of ten (an integer).
            let exponent = suffix
                .strip_prefix('e')
                .or_else(|| suffix.strip_prefix('E'))
                .ok_or_else(invalid)?;
            let unsigned = exponent
                .strip_prefix('-')
                .or_else(|| exponent.strip_prefix('+'))
                .unwrap_or(exponent);
            if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            let value: i32 = exponent
                .parse()
                .map_err(|_| QuantityError::OutOfRange(text.to_string()))?;
            exp10 = exp10
                .checked_add(value)
                .ok_or_else(|| QuantityError::OutOfRange(text.to_string()))?;
        }
    }
    if negative && mantissa != 0 {
        return Err(QuantityError::Negative(text.to_string()));
    }
    Ok(Exact {
        mantissa,
        exp10,
        exp2,
    })
}

/// `quantity × 10^scale`, rounded up, in a u64.
fn scaled(text: &str, scale: i32) -> Result<u64, QuantityError> {
    let q = parse(text)?;
    let out_of_range = || QuantityError::OutOfRange(text.to_string());
    if q.mantissa == 0 {
        return Ok(0);
    }
    let exp10 = q.exp10 + scale;
    let numerator = q
        .mantissa
        .checked_mul(1u128.checked_shl(q.exp2).ok_or_else(out_of_range)?)
        .ok_or_else(out_of_range)?;
    let value = if exp10 >= 0 {
        let factor = 10u128.checked_pow(exp10 as u32).ok_or_else(out_of_range)?;
        numerator.checked_mul(factor).ok_or_else(out_of_range)?
    } else {
        match 10u128.checked_pow(exp10.unsigned_abs()) {
            Some(divisor) => numerator.div_ceil(divisor),
            // Smaller than any representable fraction but not zero: the smallest unit.
            None => 1,
        }
    };
    u64::try_from(value).map_err(|_| out_of_range())
}

/// CPU in millicores (`500m` → 500, `2` → 2000), rounded up like the kubelet does.
pub fn cpu_millis(text: &str) -> Result<u64, QuantityError> {
    scaled(text, 3)
}

/// Memory or storage in bytes (`128Mi` → 134217728), rounded up.
pub fn bytes(text: &str) -> Result<u64, QuantityError> {
    scaled(text, 0)
}

/// Bytes in the largest binary unit that keeps one decimal: `1000Gi`, `23.4Gi`, `512Mi`.
pub fn show_bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 6] = [
        ("Ei", 1 << 60),
        ("Pi", 1 << 50),
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    for (unit, size) in UNITS {
        if n >= size {
            let tenths = (u128::from(n) * 10 / u128::from(size)) as u64;
            return match tenths % 10 {
                0 => format!("{}{unit}", tenths / 10),
                d => format!("{}.{d}{unit}", tenths / 10),
            };
        }
    }
    format!("{n} bytes")
}

/// CPU as Kubernetes writes it: whole cores, else millicores.
pub fn show_cpu(millis: u64) -> String {
    match millis % 1000 {
        0 => (millis / 1000).to_string(),
        _ => format!("{millis}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_kubernetes() {
        assert_eq!(cpu_millis("500m").unwrap(), 500);
        assert_eq!(cpu_millis("2").unwrap(), 2000);
        assert_eq!(cpu_millis("0.25").unwrap(), 250);
        assert_eq!(bytes("128Mi").unwrap(), 128 * 1024 * 1024);
        assert_eq!(bytes("1G").unwrap(), 1_000_000_000);
        assert_eq!(bytes("64Ki").unwrap(), 65536);
        assert!(bytes("12 apples").is_err());
        assert!(bytes("-1Mi").is_err());
        assert!(cpu_millis("").is_err());
        // Kubernetes accepts the exa suffixes and exponents; so does wpod.
        assert_eq!(bytes("1Ei").unwrap(), 1 << 60);
        assert_eq!(bytes("8E").unwrap(), 8_000_000_000_000_000_000);
        assert_eq!(cpu_millis("1e3").unwrap(), 1_000_000);
        assert!(cpu_millis("1e12").is_ok());
        assert!(bytes("1kE").is_err());
    }

    /// What a float got wrong (issue 25: `4.03` was 4031 millicores; issue 26: `700m` was a
    /// CFS quota of 70100 µs).
    #[test]
    fn decimals_are_exact() {
        assert_eq!(cpu_millis("700m").unwrap(), 700);
        assert_eq!(cpu_millis("4.03").unwrap(), 4030);
        assert_eq!(cpu_millis("0.1").unwrap(), 100);
        assert_eq!(cpu_millis("1.001").unwrap(), 1001);
        assert_eq!(cpu_millis("0.3").unwrap(), 300);
        assert_eq!(bytes("1.5Gi").unwrap(), 3 << 29);
        assert_eq!(bytes("0.1Ki").unwrap(), 103); // 102.4, rounded up
        assert_eq!(bytes("2.5e3").unwrap(), 2500);
        assert_eq!(bytes("129e6").unwrap(), 129_000_000);
        assert_eq!(bytes("1E2").unwrap(), 100); // an exponent, not exa
    }

    #[test]
    fn rounds_up_below_the_unit() {
        assert_eq!(cpu_millis("0.0001").unwrap(), 1);
        assert_eq!(
            cpu_millis("1u").unwrap_err(),
            QuantityError::Invalid("1u".into())
        );
        assert_eq!(bytes("1e-100").unwrap(), 1);
        assert_eq!(bytes("0.000").unwrap(), 0);
        assert_eq!(bytes("-0").unwrap(), 0);
    }

    #[test]
    fn spellings_of_the_number() {
        assert_eq!(bytes("5.").unwrap(), 5);
        assert_eq!(bytes(".5k").unwrap(), 500);
        assert_eq!(bytes("+3M").unwrap(), 3_000_000);
        assert_eq!(bytes("007").unwrap(), 7);
        for bad in [
            ".", "1..2", "1.2.3", "Mi", "1 Mi", "1mi", "1e", "1e+", "1e1.5", "1Ki2", "--1",
        ] {
            assert!(
                matches!(bytes(bad), Err(QuantityError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn out_of_range_is_an_error_not_a_wrap() {
        assert_eq!(
            bytes("16Ei").unwrap_err(),
            QuantityError::OutOfRange("16Ei".into())
        );
        assert!(matches!(bytes("1e30"), Err(QuantityError::OutOfRange(_))));
        assert!(matches!(
            cpu_millis("1e17"),
            Err(QuantityError::OutOfRange(_))
        ));
        assert!(matches!(
            bytes("1e99999999999"),
            Err(QuantityError::OutOfRange(_))
        ));
        assert_eq!(bytes("18446744073709551615").unwrap(), u64::MAX);
        // More digits than a u128 holds, but trailing zeros: exact.
        assert_eq!(bytes(&format!("1{}e-40", "0".repeat(45))).unwrap(), 100_000);
    }
}
