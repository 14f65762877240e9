//! One presence announcement: who was connected, and the `online-presence` frame each stream
//! writes from it.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;

use crate::auth::Caller;

/// Read grants that see the same clients: the read patterns, and the username when a pattern
/// depends on it.
type ReadKey = (Vec<String>, Option<String>);

/// Who was connected at one moment, as one announcement carries it to every stream: the client
/// ids, and for each channel the clients on it.
///
/// Most callers may read every channel: they share one frame listing every id, encoded once.
/// The frame of any other caller lists the clients on at least one channel it may read; it is
/// encoded by the first stream of those grants and shared with the rest.
#[derive(Debug)]
pub struct Snapshot {
    /// Client ids, sorted.
    ids: Vec<String>,
    /// Each channel with the indices (into `ids`) of the clients on it.
    channels: Vec<(String, Box<[u32]>)>,
    /// The frame listing every client.
    everyone: Bytes,
    /// Frames of callers who may not read every channel, by their read grants.
    restricted: Mutex<HashMap<ReadKey, Bytes>>,
}

impl Snapshot {
    /// A snapshot of `ids` (sorted) with each channel's clients (indices into `ids`).
    pub fn new(ids: Vec<String>, channels: Vec<(String, Box<[u32]>)>) -> Self {
        let everyone = frame(ids.iter().map(String::as_str));
        Self {
            ids,
            channels,
            everyone,
            restricted: Mutex::default(),
        }
    }

    /// The `online-presence` frame for a stream of `caller`: the clients on at least one
    /// channel the caller may read.
    pub fn frame_for(&self, caller: &Caller) -> Bytes {
        if caller.grants.reads_everything() {
            return self.everyone.clone();
        }
        let read = &caller.grants.read;
        let user = caller
            .user
            .clone()
            .filter(|_| read.iter().any(|p| p.contains("{user}")));
        let key = (read.clone(), user);
        if let Ok(frames) = self.restricted.lock()
            && let Some(frame) = frames.get(&key)
        {
            return frame.clone();
        }
        let frame = self.visible_to(caller);
        if let Ok(mut frames) = self.restricted.lock() {
            frames.insert(key, frame.clone());
        }
        frame
    }

    /// The ids of the clients on a channel `caller` may read, as a frame.
    fn visible_to(&self, caller: &Caller) -> Bytes {
        let mut visible = vec![false; self.ids.len()];
        for (channel, clients) in &self.channels {
            if caller.can_read(channel) {
                for &index in clients.iter() {
                    if let Some(seen) = visible.get_mut(index as usize) {
                        *seen = true;
                    }
                }
            }
        }
        frame(
            self.ids
                .iter()
                .zip(visible)
                .filter_map(|(id, seen)| seen.then_some(id.as_str())),
        )
    }

    /// Bytes this snapshot holds (ids, channels and the shared frame), roughly: what it costs
    /// while it waits in the hub's ring.
    pub fn size(&self) -> usize {
        let ids: usize = self.ids.iter().map(|id| id.len() + 24).sum();
        let channels: usize = self
            .channels
            .iter()
            .map(|(name, clients)| name.len() + 40 + clients.len() * 4)
            .sum();
        ids + channels + self.everyone.len()
    }
}

/// The `online-presence` frame listing `ids`.
fn frame<'a>(ids: impl Iterator<Item = &'a str>) -> Bytes {
    let ids: Vec<&str> = ids.collect();
    let json = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into());
    crate::sse::compat_event(None, "online-presence", &json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Grants;
    use crate::presence::Presence;

    fn ids_in(frame: &Bytes) -> Vec<String> {
        let text = std::str::from_utf8(frame).expect("utf-8");
        let data = text
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .expect("data");
        let value: serde_json::Value = serde_json::from_str(data).expect("json");
        serde_json::from_str(value["payload"].as_str().expect("payload")).expect("ids")
    }

    fn reader(user: &str, read: &[&str]) -> Caller {
        Caller {
            user: Some(user.to_owned()),
            grants: Grants {
                admin: false,
                read: read.iter().map(|s| s.to_string()).collect(),
                write: vec![],
            },
            expires_at: None,
            generation: None,
        }
    }

    #[test]
    fn frames_list_only_clients_on_readable_channels() {
        let presence = Presence::new();
        let _a = presence.join("on-a", Some("u1"), &["a".into()]);
        let _b = presence.join("on-b", Some("u2"), &["b".into()]);
        let _ab = presence.join("on-both", Some("u3"), &["a".into(), "b".into()]);
        let _mine = presence.join("mine", Some("ada"), &["user:ada".into()]);
        let _adam = presence.join("adams", Some("adam"), &["user:adam".into()]);
        let snapshot = presence.snapshot();

        let all = ["adams", "mine", "on-a", "on-b", "on-both"];
        assert_eq!(ids_in(&snapshot.frame_for(&Caller::anonymous())), all);
        assert_eq!(ids_in(&snapshot.frame_for(&reader("zed", &["*"]))), all);
        assert_eq!(
            ids_in(&snapshot.frame_for(&reader("zed", &["a"]))),
            ["on-a", "on-both"]
        );
        assert_eq!(
            ids_in(&snapshot.frame_for(&reader("zed", &["b", "x*"]))),
            ["on-b", "on-both"]
        );
        assert_eq!(
            ids_in(&snapshot.frame_for(&reader("ada", &["user:{user}*"]))),
            ["mine"]
        );
        assert_eq!(
            ids_in(&snapshot.frame_for(&reader("adam", &["user:{user}*"]))),
            ["adams"],
            "same patterns, another user: another frame"
        );
        assert!(ids_in(&snapshot.frame_for(&reader("zed", &[]))).is_empty());
    }

    #[test]
    fn frames_are_shared() {
        let presence = Presence::new();
        let _a = presence.join("x", None, &["a".into()]);
        let snapshot = presence.snapshot();
        let everyone = snapshot.frame_for(&Caller::anonymous());
        assert_eq!(
            snapshot.frame_for(&reader("bob", &["*"])).as_ptr(),
            everyone.as_ptr()
        );
        let first = snapshot.frame_for(&reader("ada", &["a"]));
        let second = snapshot.frame_for(&reader("bob", &["a"]));
        assert_eq!(first.as_ptr(), second.as_ptr(), "same grants, one frame");
        assert!(snapshot.size() > everyone.len());
    }
}
