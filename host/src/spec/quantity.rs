//! Kubernetes resource quantities (`128Mi`, `500m`, `1.5`), parsed by kube_quantity.

use kube_quantity::ParsedQuantity;

/// Parses a quantity to its value in base units (cores, bytes).
fn base_units(text: &str) -> Result<f64, String> {
    let invalid = || {
        format!(
            "\"{text}\" is not a valid quantity; write a number with an optional suffix \
             such as 500m, 2, 128Mi, 1Gi or 1G"
        )
    };
    let value = match ParsedQuantity::try_from(text) {
        Ok(parsed) => parsed.to_bytes_f64(),
        // kube_quantity reads the exa suffixes as the start of an exponent (`8E`, `1Ei`);
        // Kubernetes accepts them, so they are read here.
        Err(_) => exa(text).ok_or_else(invalid)?,
    };
    let value = value.ok_or_else(|| format!("\"{text}\" is out of range"))?;
    if value < 0.0 {
        return Err(format!("\"{text}\" must not be negative"));
    }
    Ok(value)
}

/// `NE` and `NEi`: N times 10^18 or 2^60.
fn exa(text: &str) -> Option<Option<f64>> {
    let (number, factor) = if let Some(n) = text.strip_suffix("Ei") {
        (n, 2f64.powi(60))
    } else {
        (text.strip_suffix('E')?, 1e18)
    };
    // The number itself must be a plain quantity (no suffix of its own).
    if number.is_empty()
        || !number
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'+')
    {
        return None;
    }
    let parsed = ParsedQuantity::try_from(number).ok()?;
    Some(parsed.to_bytes_f64().map(|v| v * factor))
}

/// CPU in millicores (`500m` → 500, `2` → 2000), rounded up like the kubelet does.
pub fn cpu_millis(text: &str) -> Result<u64, String> {
    Ok((base_units(text)? * 1000.0).ceil() as u64)
}

/// Memory or storage in bytes (`128Mi` → 134217728).
pub fn bytes(text: &str) -> Result<u64, String> {
    Ok(base_units(text)?.ceil() as u64)
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
}
