//! The bytes of one write to a stream.

use bytes::{BufMut, Bytes, BytesMut};

/// The bytes of one write. A single shared frame (a record's, or a whole commit's) is taken
/// as it is; only a write made of several is copied into a buffer of its own.
#[derive(Default)]
pub(super) enum Gather {
    #[default]
    Empty,
    One(Bytes),
    Many(BytesMut),
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
                let mut buf = BytesMut::with_capacity(first.len() + bytes.len());
                buf.put(first);
                buf.put(bytes);
                Self::Many(buf)
            }
            Self::Many(mut buf) => {
                buf.put(bytes);
                Self::Many(buf)
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
            Self::Many(buf) => buf.len(),
        }
    }

    pub(super) fn freeze(self) -> Bytes {
        match self {
            Self::Empty => Bytes::new(),
            Self::One(bytes) => bytes,
            Self::Many(buf) => buf.freeze(),
        }
    }
}
