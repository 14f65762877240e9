//! A short memory of verified `Authorization: Basic` credentials, so that a client polling with
//! Basic auth costs one Argon2 run per `--basic-cache-ttl`, not one per request.
//!
//! The password is never kept: an entry holds a keyed BLAKE2b MAC of username and password
//! (under a random key drawn at start, so it is useless outside this process), and the user's
//! password hash and token generation at verification. A hit counts only while the stored user
//! still has that hash and generation and is not revoked, so a password change, an `--admin`
//! reset or a revocation ends it at once.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use blake2::Blake2bMac512;
use blake2::digest::{KeyInit, Mac};

use crate::store::User;

/// Most users with remembered credentials.
pub const MAX_ENTRIES: usize = 65_536;

struct Entry {
    mac: Vec<u8>,
    password_hash: String,
    generation: u64,
    at: Instant,
}

/// Recently verified Basic credentials, by username.
pub struct BasicCache {
    ttl: Duration,
    key: [u8; 32],
    entries: Mutex<HashMap<String, Entry>>,
}

impl BasicCache {
    /// A cache keeping entries for `ttl` (zero turns it off).
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            key: rand::random(),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `password` was verified for `user` within the TTL, and `user` (as stored now)
    /// still has the same credentials and is not revoked.
    pub fn hit(&self, user: &User, password: &str) -> bool {
        if self.ttl.is_zero() || user.revoked {
            return false;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = entries.get(&user.username) else {
            return false;
        };
        let fresh = entry.at.elapsed() < self.ttl
            && entry.generation == user.token_generation
            && entry.password_hash == user.password_hash;
        if !fresh {
            entries.remove(&user.username);
            return false;
        }
        self.mac(&user.username, password)
            .is_some_and(|mac| mac.verify_slice(&entry.mac).is_ok())
    }

    /// Whether an entry for `username` exists at all (a hit is then worth a store lookup).
    pub fn has(&self, username: &str) -> bool {
        !self.ttl.is_zero()
            && self
                .entries
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains_key(username)
    }

    /// Remembers that `password` is right for `user`.
    pub fn remember(&self, user: &User, password: &str) {
        if self.ttl.is_zero() {
            return;
        }
        let Some(mac) = self.mac(&user.username, password) else {
            return;
        };
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&user.username) {
            entries.retain(|_, e| e.at.elapsed() < self.ttl);
            if entries.len() >= MAX_ENTRIES {
                return;
            }
        }
        entries.insert(
            user.username.clone(),
            Entry {
                mac: mac.finalize().into_bytes().to_vec(),
                password_hash: user.password_hash.clone(),
                generation: user.token_generation,
                at: Instant::now(),
            },
        );
    }

    /// Forgets `username`'s credentials (password changed, user revoked).
    pub fn forget(&self, username: &str) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(username);
    }

    fn mac(&self, username: &str, password: &str) -> Option<Blake2bMac512> {
        let mut mac = <Blake2bMac512 as KeyInit>::new_from_slice(&self.key).ok()?;
        mac.update(&(username.len() as u64).to_le_bytes());
        mac.update(username.as_bytes());
        mac.update(password.as_bytes());
        Some(mac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(hash: &str) -> User {
        User {
            username: "ada".into(),
            password_hash: hash.into(),
            admin: false,
            read: vec![],
            write: vec![],
            created_at: 0,
            revoked: false,
            token_generation: 0,
            totp: None,
        }
    }

    #[test]
    fn remembers_until_the_credentials_change() {
        let cache = BasicCache::new(Duration::from_secs(60));
        let mut ada = user("$argon2id$one");
        assert!(!cache.hit(&ada, "pw"));
        cache.remember(&ada, "pw");
        assert!(cache.has("ada"));
        assert!(cache.hit(&ada, "pw"));
        assert!(!cache.hit(&ada, "other"), "another password");
        ada.revoked = true;
        assert!(!cache.hit(&ada, "pw"), "revoked");
        ada.revoked = false;
        ada.token_generation = 1;
        assert!(!cache.hit(&ada, "pw"), "new generation");
        assert!(!cache.has("ada"), "a stale entry is dropped");
        cache.remember(&ada, "pw");
        ada.password_hash = "$argon2id$two".into();
        assert!(!cache.hit(&ada, "pw"), "password changed");
        cache.remember(&ada, "pw");
        cache.forget("ada");
        assert!(!cache.hit(&ada, "pw"), "forgotten");
    }

    #[test]
    fn zero_ttl_is_off() {
        let cache = BasicCache::new(Duration::ZERO);
        let ada = user("h");
        cache.remember(&ada, "pw");
        assert!(!cache.has("ada"));
        assert!(!cache.hit(&ada, "pw"));
    }
}
