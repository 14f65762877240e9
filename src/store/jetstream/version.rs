//! The nats-server version cluster mode needs, and the check of the one found.

/// The oldest nats-server cluster mode runs on: 2.12 brought JetStream's atomic batch publish.
pub const MIN_SERVER_VERSION: (u64, u64) = (2, 12);

/// Accepts a server version (`2.15.1`, `v2.12.0-beta.1`) of at least [`MIN_SERVER_VERSION`].
///
/// # Errors
/// A message naming the version found and the one needed.
pub fn check_server_version(found: &str) -> Result<(), String> {
    let (major, minor) = MIN_SERVER_VERSION;
    let needed = format!(
        "nats-server {major}.{minor} or newer is needed (for JetStream atomic batch publish)"
    );
    let parsed = parse(found);
    match parsed {
        Some(version) if version >= MIN_SERVER_VERSION => Ok(()),
        Some(_) => Err(format!("version {found} is too old: {needed}")),
        None => Err(format!("unrecognised version {found:?}: {needed}")),
    }
}

/// Major and minor of a version string, ignoring a leading `v` and anything after the minor.
fn parse(version: &str) -> Option<(u64, u64)> {
    let version = version.trim().trim_start_matches('v');
    let mut parts = version.split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_versions_pass() {
        for v in ["2.12.0", "2.15.1", "v2.12.0-beta.1", "3.0.0", "2.13"] {
            assert!(check_server_version(v).is_ok(), "{v}");
        }
    }

    #[test]
    fn old_or_odd_versions_name_both_versions() {
        let err = check_server_version("2.9.10").unwrap_err();
        assert!(err.contains("2.9.10") && err.contains("2.12"), "{err}");
        assert!(check_server_version("2.11.9").is_err());
        assert!(check_server_version("1.99.0").is_err());
        let err = check_server_version("banana").unwrap_err();
        assert!(err.contains("banana") && err.contains("2.12"), "{err}");
    }
}
