//! The naming rules of the wire contract: event names, channel names and usernames.

use std::collections::HashSet;

/// Channel used when a request names none.
pub const DEFAULT_CHANNEL: &str = "default";

/// Event names node-sse-server's wire (`GET /subscribe`) sends for itself: a stored event of
/// one of these names would pass for one of those frames.
pub const COMPAT_RESERVED: [&str; 3] = ["registered", "lastEvent", "online-presence"];

/// Checks an event name: 1–256 bytes of UTF-8, no control characters, and none of the names
/// a wire Broker speaks keeps for itself: names beginning with `$` (Broker's own stream
/// events) and [`COMPAT_RESERVED`] (node-sse-server's).
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
    if COMPAT_RESERVED.contains(&name) {
        return Err(format!(
            "event name '{name}' is reserved: node-sse-server's /subscribe stream sends it"
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

/// Whether `c` may appear in a username. Of the channel characters, only `:` and `/` may not:
/// they are what ends a username inside a channel name (`user:ada:inbox`).
pub fn is_username_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_.@-".contains(c)
}

/// Checks a username: `^[A-Za-z0-9_.@-]{1,64}$`.
///
/// # Errors
/// A message saying what is wrong with the name.
pub fn check_username(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 || !name.chars().all(is_username_char) {
        return Err("username must be 1 to 64 characters of A-Z a-z 0-9 _ . @ -".into());
    }
    Ok(())
}

/// Parses a comma-separated channel list (`channels=a,b`), checking every name: the distinct
/// channels in the order first named, at most `max` of them. Linear in the list's length, and
/// it stops at the first name beyond `max`.
///
/// # Errors
/// The first invalid name, an empty list, or more than `max` distinct channels.
pub fn parse_channel_list(list: &str, max: usize) -> Result<Vec<String>, String> {
    let mut seen = HashSet::new();
    let mut channels = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        check_channel(name)?;
        if seen.insert(name) {
            if channels.len() == max {
                return Err(format!(
                    "too many channels: at most {max} per request (--max-channels)"
                ));
            }
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
    fn every_wire_keeps_its_own_names() {
        for name in ["$x", "$", "registered", "lastEvent", "online-presence"] {
            let err = check_event(name).expect_err(name);
            assert!(err.contains("reserved") && err.contains(name), "{err}");
        }
        // Event types are case-sensitive on every wire: these are ordinary names.
        for name in ["Registered", "lastevent", "online-presence2", "x$"] {
            assert!(check_event(name).is_ok(), "{name}");
        }
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
        assert_eq!(parse_channel_list("a, b,a", 8).unwrap(), vec!["a", "b"]);
        assert!(parse_channel_list(",", 8).is_err());
        assert!(parse_channel_list("a,b c", 8).is_err());
    }

    #[test]
    fn channel_lists_are_capped_after_duplicates_are_removed() {
        let names = |n: usize| (0..n).map(|i| format!("c{i}")).collect::<Vec<_>>();
        let full = names(256).join(",");
        assert_eq!(parse_channel_list(&full, 256).unwrap().len(), 256);
        let twice = format!("{full},{full}");
        assert_eq!(parse_channel_list(&twice, 256).unwrap(), names(256));
        let over = names(257).join(",");
        assert!(
            parse_channel_list(&over, 256)
                .unwrap_err()
                .contains("at most 256")
        );
    }

    #[test]
    fn usernames() {
        assert!(check_username("bob.smith@x-y_z").is_ok());
        assert!(check_username(&"u".repeat(65)).is_err());
        assert!(check_username("bob smith").is_err());
        assert!(!is_username_char(':') && !is_username_char('/'));
    }
}
