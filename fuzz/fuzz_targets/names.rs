//! Event, channel and user names, channel lists, and the stream query strings that carry them.
#![no_main]

use std::collections::HashSet;

use broker::api::compat::SubscribeQuery;
use broker::api::events::EventsQuery;
use broker::names;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&max, rest)) = data.split_first() else {
        return;
    };
    let max = usize::from(max);
    if let Ok(text) = std::str::from_utf8(rest) {
        check_names(text, max);
    }
    if let Ok(query) = serde_urlencoded::from_bytes::<SubscribeQuery>(rest)
        && let Some(list) = query.channels
    {
        check_list(&list, max);
    }
    if let Ok(query) = serde_urlencoded::from_bytes::<EventsQuery>(rest)
        && let Some(list) = query.channels
    {
        check_list(&list, max);
    }
});

fn check_names(text: &str, max: usize) {
    if names::check_event(text).is_ok() {
        assert!(!text.is_empty() && text.len() <= 256);
        assert!(!text.starts_with('$') && !text.contains(['\n', '\r']));
        assert!(!names::COMPAT_RESERVED.contains(&text));
    }
    if names::check_username(text).is_ok() {
        assert!(
            names::check_channel(text).is_ok(),
            "a username is a channel name"
        );
    }
    check_list(text, max);
}

fn check_list(list: &str, max: usize) {
    if let Ok(channels) = names::parse_channel_list(list, max) {
        assert!(!channels.is_empty() && channels.len() <= max);
        let distinct: HashSet<&String> = channels.iter().collect();
        assert_eq!(distinct.len(), channels.len(), "no duplicates");
        for channel in &channels {
            assert!(names::check_channel(channel).is_ok());
        }
    }
}
