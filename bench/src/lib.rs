//! What broker-bench's binaries share: the operating-system probes of [`system`].

pub mod system;
