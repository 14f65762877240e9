//! Per-channel permissions: which channels a user may read and write.
//!
//! A grant is a list of patterns: `*` (every channel), `prefix*` (channels starting with
//! `prefix`), or an exact name; `{user}` in a pattern stands for the user's own name, so
//! `user:{user}` gives everyone a private channel.

use serde::{Deserialize, Serialize};

/// What a caller may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// Admins may do everything.
    pub admin: bool,
    /// Channel patterns the caller may read.
    pub read: Vec<String>,
    /// Channel patterns the caller may write.
    pub write: Vec<String>,
}

impl Grants {
    /// Everything allowed (open mode, admins).
    pub fn all() -> Self {
        Self {
            admin: true,
            read: vec!["*".into()],
            write: vec!["*".into()],
        }
    }

    /// Whether `user` may read `channel`.
    pub fn can_read(&self, user: Option<&str>, channel: &str) -> bool {
        self.admin || allows(&self.read, user, channel)
    }

    /// Whether `user` may write `channel`.
    pub fn can_write(&self, user: Option<&str>, channel: &str) -> bool {
        self.admin || allows(&self.write, user, channel)
    }
}

/// Splits a comma-separated pattern list (`--default-read`).
pub fn parse_patterns(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn allows(patterns: &[String], user: Option<&str>, channel: &str) -> bool {
    patterns.iter().any(|p| matches(p, user, channel))
}

fn matches(pattern: &str, user: Option<&str>, channel: &str) -> bool {
    let expanded;
    let pattern = if pattern.contains("{user}") {
        let Some(user) = user else { return false };
        expanded = pattern.replace("{user}", user);
        expanded.as_str()
    } else {
        pattern
    };
    match pattern.strip_suffix('*') {
        Some(prefix) => channel.starts_with(prefix),
        None => pattern == channel,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(read: &[&str]) -> Grants {
        Grants {
            admin: false,
            read: read.iter().map(|s| s.to_string()).collect(),
            write: vec![],
        }
    }

    #[test]
    fn patterns() {
        let g = grants(&["public", "room-*", "user:{user}"]);
        assert!(g.can_read(Some("ada"), "public"));
        assert!(!g.can_read(Some("ada"), "public2"));
        assert!(g.can_read(Some("ada"), "room-1"));
        assert!(g.can_read(Some("ada"), "user:ada"));
        assert!(!g.can_read(Some("ada"), "user:bob"));
        assert!(!g.can_read(None, "user:ada"));
        assert!(!g.can_write(Some("ada"), "public"));
        assert!(grants(&["*"]).can_read(None, "anything"));
        assert!(Grants::all().can_write(None, "x"));
    }

    #[test]
    fn pattern_lists() {
        assert_eq!(parse_patterns(" a, b* ,,"), vec!["a", "b*"]);
    }
}
