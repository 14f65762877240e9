//! A small SSE client for the tests, parsing per the WHATWG rules (fields, multi-line data,
//! comments), and exposing comments so keep-alives can be checked.

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use super::TIMEOUT;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `id:` field of this event, if it had one.
    pub id: Option<String>,
    /// `event:` name (`message` when absent).
    pub event: String,
    /// `data:` lines joined with `\n`.
    pub data: String,
}

impl SseEvent {
    /// The data parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("data is not JSON ({e}): {}", self.data))
    }
}

/// Anything the stream can carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// A dispatched event.
    Event(SseEvent),
    /// A comment line (`: text`).
    Comment(String),
    /// A `retry:` value.
    Retry(u64),
}

/// An open stream.
pub struct SseStream {
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: Vec<u8>,
    pending: std::collections::VecDeque<SseItem>,
    id: Option<String>,
    event: Option<String>,
    data: Vec<String>,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
}

impl SseStream {
    /// Connects, asserting a 200 `text/event-stream` answer.
    pub async fn connect(
        http: &reqwest::Client,
        url: &str,
        token: Option<&str>,
        last_event_id: Option<&str>,
    ) -> Self {
        let resp = Self::request(http, url, token, last_event_id).await;
        let status = resp.status();
        if status != reqwest::StatusCode::OK {
            let body = resp.text().await.unwrap_or_default();
            panic!("stream {url}: {status} {body}");
        }
        Self::from_response(resp)
    }

    /// Sends the stream request and returns the raw response (for status checks).
    pub async fn request(
        http: &reqwest::Client,
        url: &str,
        token: Option<&str>,
        last_event_id: Option<&str>,
    ) -> reqwest::Response {
        let mut req = http.get(url).header("accept", "text/event-stream");
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        tokio::time::timeout(TIMEOUT, req.send())
            .await
            .expect("stream request timed out")
            .expect("stream request")
    }

    /// Wraps a 200 response.
    pub fn from_response(resp: reqwest::Response) -> Self {
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(
            content_type.starts_with("text/event-stream"),
            "content-type {content_type}"
        );
        let headers = resp.headers().clone();
        Self {
            body: resp.bytes_stream().boxed(),
            buf: Vec::new(),
            pending: Default::default(),
            id: None,
            event: None,
            data: Vec::new(),
            headers,
        }
    }

    /// The next item, or `None` when the server ended the stream. Fails after [`TIMEOUT`].
    pub async fn next_item(&mut self) -> Option<SseItem> {
        self.next_item_within(TIMEOUT)
            .await
            .expect("no SSE item within the timeout")
    }

    /// The next item within `wait`: `Err(())` on timeout, `Ok(None)` at the end of the stream.
    pub async fn next_item_within(&mut self, wait: Duration) -> Result<Option<SseItem>, ()> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Ok(Some(item));
            }
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.line(&String::from_utf8(line).expect("utf-8 line"));
                continue;
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return Err(()),
                Ok(None) | Ok(Some(Err(_))) => return Ok(None),
                Ok(Some(Ok(bytes))) => self.buf.extend_from_slice(&bytes),
            }
        }
    }

    fn line(&mut self, line: &str) {
        if line.is_empty() {
            if !self.data.is_empty() || self.event.is_some() {
                let event = SseEvent {
                    id: self.id.take(),
                    event: self.event.take().unwrap_or_else(|| "message".into()),
                    data: self.data.join("\n"),
                };
                self.data.clear();
                self.pending.push_back(SseItem::Event(event));
            }
            self.id = None;
            return;
        }
        if let Some(comment) = line.strip_prefix(':') {
            self.pending
                .push_back(SseItem::Comment(comment.trim().to_owned()));
            return;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => self.id = Some(value.to_owned()),
            "event" => self.event = Some(value.to_owned()),
            "data" => self.data.push(value.to_owned()),
            "retry" => self
                .pending
                .push_back(SseItem::Retry(value.parse().expect("retry value"))),
            _ => {}
        }
    }

    /// The next event, skipping comments and `retry:`; fails if the stream ends first.
    pub async fn next_event(&mut self) -> SseEvent {
        loop {
            match self.next_item().await {
                Some(SseItem::Event(event)) => return event,
                Some(_) => {}
                None => panic!("stream ended while an event was expected"),
            }
        }
    }

    /// Every event up to `$synced`, and the id `$synced` reported.
    pub async fn until_synced(&mut self) -> (Vec<SseEvent>, String) {
        let mut events = Vec::new();
        loop {
            let event = self.next_event().await;
            if event.event == "$synced" {
                let id = event.json()["id"].as_str().expect("$synced id").to_owned();
                return (events, id);
            }
            events.push(event);
        }
    }

    /// Waits for the server to end the stream, skipping whatever comes before; returns the
    /// events received meanwhile.
    pub async fn until_end(&mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(item) = self.next_item().await {
            if let SseItem::Event(event) = item {
                events.push(event);
            }
        }
        events
    }
}
