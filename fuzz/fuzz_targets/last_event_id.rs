//! `Last-Event-ID` values (the header, or `?last_event_id=`).
#![no_main]

use broker::stream::Start;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    match Start::from_last_event_id(Some(value)) {
        Start::Snapshot => assert!(value.trim().is_empty()),
        Start::After(id) => assert_eq!(value.trim().trim_start_matches('+').parse(), Ok(id)),
        Start::Unknown(raw) => {
            assert_eq!(raw, value.trim());
            assert!(raw.parse::<u64>().is_err());
        }
    }
});
