//! The login rate limiter (spec §3.6), strict and per client.
//!
//! code-server keeps one process-wide pair of token buckets (2 a minute + 12 an hour), so one
//! attacker locks the owner out, and its library leaks attempts after a burst. Ours:
//! * the same pair per client address (IPv6 grouped by /64, since one host owns a whole /64),
//!   so from a fresh start the 15th wrong password in a row is refused, even if right;
//! * a process-wide pair as a ceiling ([`GLOBAL_PER_MINUTE`] + [`GLOBAL_PER_HOUR`]) so many
//!   addresses cannot brute-force together;
//! * every failed attempt consumes a token, successful logins never do.
//!
//! We do not use `governor` here: its `check` consumes, and code-server's semantics need a
//! test ("may this attempt run?") separate from the charge ("it failed").

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const CLIENT_PER_MINUTE: f64 = 2.0;
pub const CLIENT_PER_HOUR: f64 = 12.0;
pub const GLOBAL_PER_MINUTE: f64 = 10.0;
pub const GLOBAL_PER_HOUR: f64 = 100.0;

/// Forget idle clients once this many are tracked.
const PRUNE_ABOVE: usize = 4096;

#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    capacity: f64,
    per_second: f64,
    at: Instant,
}

impl Bucket {
    fn new(capacity: f64, period: Duration, now: Instant) -> Bucket {
        Bucket { tokens: capacity, capacity, per_second: capacity / period.as_secs_f64(), at: now }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.per_second).min(self.capacity);
        self.at = now;
    }

    fn take(&mut self) -> bool {
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A minute bucket backed by an hour bucket, as in code-server.
#[derive(Debug, Clone)]
struct Pair {
    minute: Bucket,
    hour: Bucket,
}

impl Pair {
    fn new(per_minute: f64, per_hour: f64, now: Instant) -> Pair {
        Pair {
            minute: Bucket::new(per_minute, Duration::from_secs(60), now),
            hour: Bucket::new(per_hour, Duration::from_secs(3600), now),
        }
    }

    fn refill(&mut self, now: Instant) {
        self.minute.refill(now);
        self.hour.refill(now);
    }

    fn allows(&self) -> bool {
        self.minute.tokens >= 1.0 || self.hour.tokens >= 1.0
    }

    fn charge(&mut self) {
        if !self.minute.take() {
            self.hour.take();
        }
    }

    fn is_full(&self) -> bool {
        self.minute.tokens >= self.minute.capacity && self.hour.tokens >= self.hour.capacity
    }
}

/// Who is trying to log in, for rate limiting. IPv6 addresses are grouped by their /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    V4([u8; 4]),
    V6Prefix([u8; 8]),
    /// Unix-socket clients have no address; they share one key.
    Local,
}

impl ClientKey {
    pub fn from_ip(ip: Option<IpAddr>) -> ClientKey {
        match ip.map(|ip| ip.to_canonical()) {
            Some(IpAddr::V4(v4)) => ClientKey::V4(v4.octets()),
            Some(IpAddr::V6(v6)) => {
                let o = v6.octets();
                ClientKey::V6Prefix(o[..8].try_into().expect("8 bytes"))
            }
            None => ClientKey::Local,
        }
    }
}

pub struct LoginLimiter {
    state: Mutex<State>,
}

struct State {
    global: Pair,
    clients: HashMap<ClientKey, Pair>,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        LoginLimiter {
            state: Mutex::new(State {
                global: Pair::new(GLOBAL_PER_MINUTE, GLOBAL_PER_HOUR, Instant::now()),
                clients: HashMap::new(),
            }),
        }
    }
}

impl LoginLimiter {
    /// May this client try a password now?
    pub fn allows(&self, client: ClientKey) -> bool {
        self.allows_at(client, Instant::now())
    }

    /// Charges a failed attempt to the client and to the global ceiling.
    pub fn record_failure(&self, client: ClientKey) {
        self.record_failure_at(client, Instant::now())
    }

    fn allows_at(&self, client: ClientKey, now: Instant) -> bool {
        let mut st = self.state.lock().unwrap();
        st.global.refill(now);
        if !st.global.allows() {
            return false;
        }
        match st.clients.get_mut(&client) {
            Some(pair) => {
                pair.refill(now);
                pair.allows()
            }
            None => true,
        }
    }

    fn record_failure_at(&self, client: ClientKey, now: Instant) {
        let mut st = self.state.lock().unwrap();
        st.global.refill(now);
        st.global.charge();
        if st.clients.len() >= PRUNE_ABOVE && !st.clients.contains_key(&client) {
            st.clients.retain(|_, p| {
                p.refill(now);
                !p.is_full()
            });
        }
        let pair = st.clients.entry(client).or_insert_with(|| Pair::new(CLIENT_PER_MINUTE, CLIENT_PER_HOUR, now));
        pair.refill(now);
        pair.charge();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ClientKey = ClientKey::V4([10, 0, 0, 1]);
    const B: ClientKey = ClientKey::V4([10, 0, 0, 2]);

    #[test]
    fn fifteenth_failure_in_a_row_is_refused() {
        let l = LoginLimiter::default();
        let now = Instant::now();
        for i in 1..=14 {
            assert!(l.allows_at(A, now), "attempt {i}");
            l.record_failure_at(A, now);
        }
        assert!(!l.allows_at(A, now), "attempt 15");
        // Another client is not locked out by A.
        assert!(l.allows_at(B, now));
    }

    #[test]
    fn tokens_come_back_over_time_and_strictly() {
        let l = LoginLimiter::default();
        let t0 = Instant::now();
        for _ in 0..14 {
            l.record_failure_at(A, t0);
        }
        // 30 s later one minute-token is back: exactly one more attempt, then refused again
        // (code-server's limiter would let every attempt through until the window rolls over).
        let t1 = t0 + Duration::from_secs(31);
        assert!(l.allows_at(A, t1));
        l.record_failure_at(A, t1);
        assert!(!l.allows_at(A, t1));
    }

    #[test]
    fn global_ceiling_stops_many_addresses() {
        let l = LoginLimiter::default();
        let now = Instant::now();
        let total = (GLOBAL_PER_MINUTE + GLOBAL_PER_HOUR) as u32;
        for i in 0..total {
            let c = ClientKey::V4([10, 1, (i / 256) as u8, (i % 256) as u8]);
            assert!(l.allows_at(c, now), "attempt {i}");
            l.record_failure_at(c, now);
        }
        assert!(!l.allows_at(ClientKey::V4([192, 168, 0, 1]), now));
    }

    #[test]
    fn ipv6_groups_by_prefix() {
        let a = ClientKey::from_ip(Some("2001:db8::1".parse().unwrap()));
        let b = ClientKey::from_ip(Some("2001:db8::ffff:1".parse().unwrap()));
        assert_eq!(a, b);
        let mapped = ClientKey::from_ip(Some("::ffff:10.0.0.1".parse().unwrap()));
        assert_eq!(mapped, A);
    }
}
