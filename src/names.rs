//! The naming rules of the wire contract: event names, channel names and usernames.

/// Channel used when a request names none.
pub const DEFAULT_CHANNEL: &str = "default";

/// Checks an event name: 1–256 bytes of UTF-8, no control characters, not starting with `$`
/// (reserved for Broker's own stream events).
///
/// # Errors
/// A message saying what is wrong with the name.
pub fn check_event(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 256 {
        return Err("event name must be 1 to 256 bytes".into());
    }
    if name.chars().any(char::is_control) {
        return Err("event name must not contain control characters".into());
    }
    if name.starts_with('$') {
        return Err(format!(
            "event name '{name}' is reserved: names beginning with '$' belong to Broker"
        ));
    }
    Ok(())
}

/// Checks a channel name: 1–128 bytes of `[A-Za-z0-9_.:/@-]`.
///
/// # Errors
/// A message saying what is wrong with the name.
pub fn check_channel(name: &str) -> Result<(), String> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || "_.:/@-".contains(c);
    if name.is_empty() || name.len() > 128 || !name.chars().all(valid_char) {
        return Err(format!(
            "invalid channel name '{name}': use 1 to 128 characters of A-Z a-z 0-9 _ . : / @ -"
        ));
    }
    Ok(())
}

/// Checks a username: `^[A-Za-z0-9_.@-]{1,64}$`.
///
/// # Errors
/// A message saying what is wrong with the name.
pub fn check_username(name: &str) -> Result<(), String> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || "_.@-".contains(c);
    if name.is_empty() || name.len() > 64 || !name.chars().all(valid_char) {
        return Err("username must be 1 to 64 characters of A-Z a-z 0-9 _ . @ -".into());
    }
    Ok(())
}

/// Parses a comma-separated channel list (`channels=a,b`), checking every name.
///
/// # Errors
/// The first invalid name.
pub fn parse_channel_list(list: &str) -> Result<Vec<String>, String> {
    let mut channels = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        check_channel(name)?;
        if !channels.iter().any(|c| c == name) {
            channels.push(name.to_owned());
        }
    }
    if channels.is_empty() {
        return Err("channels must name at least one channel".into());
    }
    Ok(channels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names() {
        assert!(check_event("user").is_ok());
        assert!(check_event("naïve name ✓").is_ok());
        assert!(check_event(&"x".repeat(256)).is_ok());
        assert!(check_event(&"x".repeat(257)).is_err());
        assert!(check_event("").is_err());
        assert!(check_event("a\nb").is_err());
        assert!(check_event("$synced").unwrap_err().contains("reserved"));
    }

    #[test]
    fn channel_names() {
        assert!(check_channel("room-1:a/b@c_d.e").is_ok());
        assert!(check_channel(&"c".repeat(128)).is_ok());
        assert!(check_channel(&"c".repeat(129)).is_err());
        assert!(check_channel("").is_err());
        assert!(check_channel("has space").is_err());
        assert!(check_channel("é").is_err());
    }

    #[test]
    fn channel_lists() {
        assert_eq!(parse_channel_list("a, b,a").unwrap(), vec!["a", "b"]);
        assert!(parse_channel_list(",").is_err());
        assert!(parse_channel_list("a,b c").is_err());
    }

    #[test]
    fn usernames() {
        assert!(check_username("bob.smith@x-y_z").is_ok());
        assert!(check_username(&"u".repeat(65)).is_err());
        assert!(check_username("bob smith").is_err());
    }
}
