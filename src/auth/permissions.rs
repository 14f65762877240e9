//! Per-channel permissions: which channels a user may read and write.
//!
//! A grant is a list of patterns: `*` (every channel), `prefix*` (channels starting with
//! `prefix`), or an exact name; `{user}` in a pattern stands for the user's own name, so
//! `user:{user}` gives everyone a private channel. `{user}` stands for the whole name only: in
//! the channel, what follows it is the end or a character no username has (`:` or `/`), so
//! `user:{user}*` gives `ada` the channels `user:ada` and `user:ada:inbox` but not `user:adam`
//! (nor `user:ada.x`, which is `ada.x`'s).

use serde::{Deserialize, Serialize};

use crate::names::is_username_char;

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

    /// Whether these grants let their holder read every channel (admins, and the `*` pattern).
    pub fn reads_everything(&self) -> bool {
        self.admin || self.read.iter().any(|p| p == "*")
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

/// Whether `pattern` (with `user` for `{user}`) matches `channel`. Only a final `*` is a
/// wildcard. Each `{user}` must match the whole name: the channel goes on with a character no
/// username has, or ends. No allocation: this runs for every permission check.
fn matches(pattern: &str, user: Option<&str>, channel: &str) -> bool {
    let (body, wildcard) = match pattern.strip_suffix('*') {
        Some(body) => (body, true),
        None => (pattern, false),
    };
    let mut pieces = body.split("{user}");
    let Some(rest) = pieces.next().and_then(|first| channel.strip_prefix(first)) else {
        return false;
    };
    let mut rest = rest;
    for piece in pieces {
        let Some(after_user) = user.and_then(|u| rest.strip_prefix(u)) else {
            return false;
        };
        if after_user.starts_with(is_username_char) {
            // `ada` in front of `adam`: another user's name.
            return false;
        }
        let Some(after_piece) = after_user.strip_prefix(piece) else {
            return false;
        };
        rest = after_piece;
    }
    wildcard || rest.is_empty()
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
    fn user_stands_for_the_whole_name() {
        let g = grants(&["user:{user}*"]);
        assert!(g.can_read(Some("ada"), "user:ada"));
        assert!(g.can_read(Some("ada"), "user:ada:inbox"));
        assert!(g.can_read(Some("ada"), "user:ada/x"));
        assert!(!g.can_read(Some("ada"), "user:adam"), "adam's channel");
        assert!(!g.can_read(Some("ada"), "user:adam:inbox"));
        assert!(!g.can_read(Some("ada"), "user:ada.x"), "ada.x's channel");
        assert!(!g.can_read(Some("ada"), "user:ada-2"));
        assert!(!g.can_read(Some("ada"), "user:ad"));
        assert!(!g.can_read(None, "user:ada"));
        assert!(g.can_read(Some("adam"), "user:adam:x"));

        let exact = grants(&["user:{user}"]);
        assert!(exact.can_read(Some("ada"), "user:ada"));
        assert!(!exact.can_read(Some("ada"), "user:ada:x"));
        assert!(!exact.can_read(Some("ada"), "user:adam"));
    }

    #[test]
    fn user_in_the_middle() {
        let g = grants(&["room/{user}/inbox", "team:{user}:*", "{user}"]);
        assert!(g.can_read(Some("ada"), "room/ada/inbox"));
        assert!(!g.can_read(Some("ada"), "room/adam/inbox"));
        assert!(!g.can_read(Some("ada"), "room/ada/inbox2"));
        assert!(g.can_read(Some("ada"), "team:ada:"));
        assert!(g.can_read(Some("ada"), "team:ada:general"));
        assert!(!g.can_read(Some("ada"), "team:adam:general"));
        assert!(
            !g.can_read(Some("ada"), "team:ada"),
            "the ':' is part of the pattern"
        );
        assert!(g.can_read(Some("ada"), "ada"));
        assert!(!g.can_read(Some("ada"), "adam"));
        // A username character right after {user} can never match: it would be another name.
        let dotted = grants(&["{user}.*"]);
        assert!(!dotted.can_read(Some("ada"), "ada.x"));
        // Twice: both must be the whole name.
        let twice = grants(&["{user}:{user}*"]);
        assert!(twice.can_read(Some("ada"), "ada:ada"));
        assert!(twice.can_read(Some("ada"), "ada:ada/x"));
        assert!(!twice.can_read(Some("ada"), "ada:adam"));
        assert!(!twice.can_read(Some("ada"), "adam:ada"));
    }

    #[test]
    fn only_a_final_star_is_a_wildcard() {
        assert!(grants(&["a*"]).can_read(None, "a"));
        assert!(grants(&["a*"]).can_read(None, "abc"));
        assert!(!grants(&["*a"]).can_read(None, "ba"));
        assert!(grants(&["*a"]).can_read(None, "*a"));
        assert!(!grants(&["a*b"]).can_read(None, "axb"));
        assert!(grants(&[""]).can_read(None, ""));
        assert!(!grants(&[""]).can_read(None, "a"));
    }

    #[test]
    fn reading_everything() {
        assert!(grants(&["x", "*"]).reads_everything());
        assert!(!grants(&["x*"]).reads_everything());
        assert!(Grants::all().reads_everything());
        let admin = Grants {
            admin: true,
            read: vec![],
            write: vec![],
        };
        assert!(admin.reads_everything());
    }

    #[test]
    fn pattern_lists() {
        assert_eq!(parse_patterns(" a, b* ,,"), vec!["a", "b*"]);
    }
}
