//! The bytes of one write to a stream.

use std::collections::VecDeque;

use bytes::Bytes;

/// The bytes of one write, as the frames that make it up. Frames are shared (a commit's
/// frames are joined once for every stream), so a stream that is behind and takes several
/// at once holds handles to them, never a copy: thousands of streams catching up together
/// cost a few handles each, not each a private buffer of what they missed.
#[derive(Default)]
pub(super) enum Gather {
    #[default]
    Empty,
    One(Bytes),
    /// Several frames, in order, and their total length.
    Many(VecDeque<Bytes>, usize),
}

impl Gather {
    /// Appends `bytes`.
    pub(super) fn put(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        *self = match std::mem::take(self) {
            Self::Empty => Self::One(bytes),
            Self::One(first) => {
                let len = first.len() + bytes.len();
                Self::Many(VecDeque::from([first, bytes]), len)
            }
            Self::Many(mut frames, len) => {
                let len = len + bytes.len();
                frames.push_back(bytes);
                Self::Many(frames, len)
            }
        };
    }

    /// Whether nothing was put ([`Self::put`] keeps no empty bytes).
    pub(super) fn is_empty(&self) -> bool {
        matches!(self, Self::Empty)
    }

    /// Bytes put so far.
    pub(super) fn len(&self) -> usize {
        match self {
            Self::Empty => 0,
            Self::One(bytes) => bytes.len(),
            Self::Many(_, len) => *len,
        }
    }

    /// The frames in order: the first, and the rest (empty unless there were several).
    pub(super) fn into_frames(self) -> (Bytes, VecDeque<Bytes>) {
        match self {
            Self::Empty => (Bytes::new(), VecDeque::new()),
            Self::One(bytes) => (bytes, VecDeque::new()),
            Self::Many(mut frames, _) => (frames.pop_front().unwrap_or_default(), frames),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_frames_in_order_without_copying_them() {
        let mut gather = Gather::default();
        assert!(gather.is_empty());
        gather.put(Bytes::new());
        assert!(gather.is_empty());
        let first = Bytes::from_static(b"data: 1\n\n");
        gather.put(first.clone());
        gather.put(Bytes::from_static(b"data: 22\n\n"));
        gather.put(Bytes::from_static(b"data: 333\n\n"));
        assert_eq!(gather.len(), 9 + 10 + 11);
        let (head, rest) = gather.into_frames();
        // The same bytes, not a copy of them.
        assert_eq!(head.as_ptr(), first.as_ptr());
        assert_eq!(rest, [&b"data: 22\n\n"[..], b"data: 333\n\n"]);
    }
}
