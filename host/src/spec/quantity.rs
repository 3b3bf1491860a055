//! Kubernetes resource quantities (`128Mi`, `500m`, `1.5`), parsed by kube_quantity.

use kube_quantity::ParsedQuantity;

/// Parses a quantity to its value in base units (cores, bytes).
fn base_units(text: &str) -> Result<f64, String> {
    let parsed = ParsedQuantity::try_from(text).map_err(|_| {
        format!(
            "\"{text}\" is not a valid quantity; write a number with an optional suffix \
             such as 500m, 2, 128Mi, 1Gi or 1G"
        )
    })?;
    let value = parsed
        .to_bytes_f64()
        .ok_or_else(|| format!("\"{text}\" is out of range"))?;
    if value < 0.0 {
        return Err(format!("\"{text}\" must not be negative"));
    }
    Ok(value)
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
    }
}
