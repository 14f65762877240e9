//! Permission patterns with any patterns, users and channels.
#![no_main]

use arbitrary::Arbitrary;
use broker::auth::Grants;
use broker::names;
use libfuzzer_sys::fuzz_target;

/// A piece of a pattern or a channel: the fuzzer finds `{user}`, separators and stars at once
/// this way, where whole random strings would rarely hold them.
#[derive(Debug, Arbitrary)]
enum Piece {
    Text(String),
    /// `{user}` in a pattern; the longer user's name in a channel.
    User,
    Colon,
    Slash,
    Star,
}

fn build(pieces: &[Piece], user: &str) -> String {
    pieces
        .iter()
        .map(|piece| match piece {
            Piece::Text(text) => text.as_str(),
            Piece::User => user,
            Piece::Colon => ":",
            Piece::Slash => "/",
            Piece::Star => "*",
        })
        .collect()
}

#[derive(Debug, Arbitrary)]
struct Input {
    admin: bool,
    /// Patterns built from pieces, and raw ones.
    patterns: Vec<Vec<Piece>>,
    raw_patterns: Vec<String>,
    user: Option<String>,
    /// Appended to `user` to make a longer name.
    suffix: String,
    channel: Vec<Piece>,
}

fuzz_target!(|input: Input| {
    let mut patterns: Vec<String> = input.patterns.iter().map(|p| build(p, "{user}")).collect();
    patterns.extend(input.raw_patterns.iter().cloned());
    let short = input.user.as_deref();
    let long = short.map(|u| format!("{u}{}", input.suffix));
    let channel = build(&input.channel, long.as_deref().unwrap_or(""));

    let grants = Grants {
        admin: input.admin,
        read: patterns.clone(),
        write: patterns.clone(),
    };
    let read = grants.can_read(short, &channel);
    assert_eq!(read, grants.can_write(short, &channel));
    if input.admin || grants.reads_everything() {
        assert!(read);
    }
    if !patterns.iter().any(|p| p.contains("{user}")) {
        assert_eq!(
            read,
            grants.can_read(None, &channel),
            "no {{user}}: same for all"
        );
    }

    // `{user}` never gives a user the channels of a longer name it begins: whatever gives
    // `ada`+`m` a channel does not give it to `ada`.
    let (Some(short), Some(long)) = (short, long) else {
        return;
    };
    if input.suffix.is_empty()
        || names::check_username(short).is_err()
        || names::check_username(&long).is_err()
    {
        return;
    }
    for pattern in patterns.iter().filter(|p| p.contains("{user}")) {
        let one = Grants {
            admin: false,
            read: vec![pattern.clone()],
            write: vec![],
        };
        if one.can_read(Some(&long), &channel) {
            assert!(
                !one.can_read(Some(short), &channel),
                "{pattern:?} gives {short:?} the channel {channel:?} of {long:?}"
            );
        }
    }
});
