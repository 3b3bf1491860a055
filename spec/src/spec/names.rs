//! Name rules Kubernetes applies (DNS-1123 labels and subdomains, IANA port names), and
//! [`PodName`]: a pod's name once checked, the only form in which it may become part of a path
//! (the pod's state directory, its lock, its cgroups).

use std::fmt;

/// A valid pod name (a non-empty DNS-1123 subdomain): no `/`, no `..`, no empty string, so it
/// can name a directory or a cgroup without reaching anything else.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct PodName(String);

impl PodName {
    /// Checks `name`; the error says what a valid name looks like.
    pub fn new(name: &str) -> Result<Self, String> {
        if name.is_empty() {
            return Err(
                "a pod name must not be empty; write a DNS-1123 name such as \"web\"".into(),
            );
        }
        dns1123_subdomain(name)?;
        if name.len() > MAX_POD_NAME {
            return Err(format!(
                "a pod name may have at most {MAX_POD_NAME} characters on wpod (this one has {}): \
                 wpod names files and cgroups after the pod (NAME.lock, pod-NAME), and a file \
                 name holds 255; shorten it",
                name.len()
            ));
        }
        Ok(PodName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The longest pod name: Kubernetes allows 253, but `NAME.lock` must fit in a file name.
pub const MAX_POD_NAME: usize = 250;

impl fmt::Display for PodName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for PodName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// RFC 1123 label: what Kubernetes requires of container, volume and host names.
pub fn dns1123_label(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid name \"{s}\": a DNS-1123 label has at most 63 lowercase letters, digits and '-', \
             starting and ending with a letter or digit (e.g. \"{}\")",
            suggest_name(s)
        ))
    }
}

/// RFC 1123 subdomain: what Kubernetes requires of object names.
pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    let ok = s.len() <= 253 && s.split('.').all(|l| dns1123_label(l).is_ok());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid name \"{s}\": a DNS-1123 subdomain has lowercase letters, digits, '-' and '.', \
             starting and ending with a letter or digit (e.g. \"{}\")",
            suggest_name(s)
        ))
    }
}

fn suggest_name(s: &str) -> String {
    let mapped: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let trimmed = mapped.trim_matches('-');
    if trimmed.is_empty() {
        "my-name".to_string()
    } else {
        trimmed.chars().take(63).collect()
    }
}

/// IANA service name: what Kubernetes requires of port names.
pub fn port_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--");
    if ok {
        Ok(())
    } else {
        Err(format!("invalid port name \"{s}\": at most 15 lowercase letters, digits and '-', with at least one letter"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_names_cannot_reach_other_paths() {
        assert!(PodName::new("web").is_ok());
        assert!(PodName::new("rt-a.lock").is_ok());
        for bad in [
            "", ".", "..", "a/b", "../x", "/", "A", "a..b", "-a", "a b", "a\0b",
        ] {
            assert!(PodName::new(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(PodName::new(&"a".repeat(254)).is_err());
    }
}
