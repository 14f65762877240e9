//! The lean stream path's request reader: any bytes a client sends first.
#![no_main]

use broker::stream_conn::parse_stream_request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((request, head_len)) = parse_stream_request(data) {
        // Only one whole, bodiless GET of a stream route is taken.
        assert_eq!(head_len, data.len());
        assert_eq!(request.method(), "GET");
        let path = request.uri().path().trim_end_matches('/');
        assert!(["/events", "/sse", "/subscribe"].contains(&path), "{path}");
    }
});
