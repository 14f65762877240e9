//! Counting what each client address holds (connections, streams) against a cap.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// How many of something each address holds, capped at `max` per address.
#[derive(Debug)]
pub struct PerIp {
    max: u32,
    held: Mutex<HashMap<IpAddr, u32>>,
}

impl PerIp {
    /// A counter admitting at most `max` per address.
    pub fn new(max: u32) -> Self {
        Self {
            max,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one for `ip`; `false` when it already holds `max`.
    pub fn try_take(&self, ip: IpAddr) -> bool {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(ip).or_insert(0);
        if *count >= self.max {
            if *count == 0 {
                held.remove(&ip);
            }
            return false;
        }
        *count += 1;
        true
    }

    /// Gives back one taken for `ip`.
    pub fn give_back(&self, ip: IpAddr) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                held.remove(&ip);
            }
        }
    }

    /// How many `ip` holds now.
    pub fn held(&self, ip: IpAddr) -> u32 {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.get(&ip).copied().unwrap_or(0)
    }

    /// Takes one for `ip` as a slot that gives it back when dropped; `None` at the cap.
    pub fn slot(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        self.try_take(ip).then(|| IpSlot {
            counter: self.clone(),
            ip,
        })
    }
}

/// One unit held by an address, given back on drop.
#[derive(Debug)]
pub struct IpSlot {
    counter: Arc<PerIp>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        self.counter.give_back(self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_each_address_and_forgets_idle_ones() {
        let counter = Arc::new(PerIp::new(2));
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let one = counter.slot(a).expect("first");
        let two = counter.slot(a).expect("second");
        assert!(counter.slot(a).is_none(), "third from one address");
        assert!(counter.slot(b).is_some(), "another address has its own");
        drop(one);
        let three = counter.slot(a).expect("a place was given back");
        drop((two, three));
        assert_eq!(counter.held(a), 0);
        assert!(
            counter.held.lock().expect("lock").is_empty(),
            "addresses holding nothing are forgotten"
        );
    }
}
