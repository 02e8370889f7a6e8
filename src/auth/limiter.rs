//! The login rate limiter (spec §3.6), strict, per client, and not raceable.
//!
//! code-server keeps one process-wide pair of token buckets (2 a minute + 12 an hour), so one
//! attacker locks the owner out, and its library leaks attempts after a burst. Ours:
//! * the same pair per client address (IPv6 grouped by /64, since one host owns a whole /64),
//!   so from a fresh start the 15th wrong password in a row is refused, even if right;
//! * a process-wide pair as a ceiling ([`GLOBAL_PER_MINUTE`] + [`GLOBAL_PER_HOUR`]) so many
//!   addresses cannot brute-force together;
//! * a browser that has signed in before carries a *device cookie* (OWASP's "Slow down online
//!   guessing attacks with device cookies"): a signed, per-browser token given at every
//!   successful login. Its attempts are counted against that cookie's own pair instead of the
//!   address and the ceiling, so an attacker who has exhausted the ceiling (or shares the
//!   owner's address) cannot lock the owner out; a device cookie that keeps failing runs out
//!   of tokens like an address does;
//! * the token is taken *before* the password is checked and given back when it was right, so
//!   concurrent attempts cannot all pass a check that is charged only afterwards, and correct
//!   logins still cost nothing;
//! * at most [`MAX_IN_FLIGHT`] attempts per client (address or device) are verified at once,
//!   so one client cannot keep argon2 busy on every core.
//!
//! We do not use `governor`: a refund for a correct password is not something it offers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const CLIENT_PER_MINUTE: f64 = 2.0;
pub const CLIENT_PER_HOUR: f64 = 12.0;
pub const GLOBAL_PER_MINUTE: f64 = 10.0;
pub const GLOBAL_PER_HOUR: f64 = 100.0;
/// Attempts of one client being verified at the same time.
pub const MAX_IN_FLIGHT: usize = 2;

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

    fn give_back(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.capacity);
    }
}

/// Which bucket of a [`Pair`] a token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum From {
    Minute,
    Hour,
}

/// A minute bucket backed by an hour bucket, as in code-server: an attempt takes from the minute
/// bucket, or when that is empty from the hour one.
#[derive(Debug, Clone)]
struct Pair {
    minute: Bucket,
    hour: Bucket,
    /// Attempts holding a token of this pair and not finished.
    in_flight: usize,
}

impl Pair {
    fn new(per_minute: f64, per_hour: f64, now: Instant) -> Pair {
        Pair {
            minute: Bucket::new(per_minute, Duration::from_secs(60), now),
            hour: Bucket::new(per_hour, Duration::from_secs(3600), now),
            in_flight: 0,
        }
    }

    fn refill(&mut self, now: Instant) {
        self.minute.refill(now);
        self.hour.refill(now);
    }

    fn take(&mut self) -> Option<From> {
        if self.minute.take() {
            Some(From::Minute)
        } else if self.hour.take() {
            Some(From::Hour)
        } else {
            None
        }
    }

    fn give_back(&mut self, from: From) {
        match from {
            From::Minute => self.minute.give_back(),
            From::Hour => self.hour.give_back(),
        }
    }

    fn is_idle(&self) -> bool {
        self.in_flight == 0 && self.minute.tokens >= self.minute.capacity && self.hour.tokens >= self.hour.capacity
    }
}

/// Who is trying to log in, for rate limiting. IPv6 addresses are grouped by their /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    V4([u8; 4]),
    V6Prefix([u8; 8]),
    /// Unix-socket clients have no address; they share one key.
    Local,
    /// A browser with a valid device cookie, by the cookie's id.
    Device([u8; 16]),
    /// Multi-user mode: attempts at one username (the first 128 bits of its SHA-256), counted
    /// besides the client's, so no number of addresses can guess one account's password fast.
    Account([u8; 16]),
}

impl ClientKey {
    /// The bucket of attempts at `username` (as signed in: trimmed, lower case).
    pub fn account(username: &str) -> ClientKey {
        let digest = crate::util::sha256(username.trim().to_ascii_lowercase().as_bytes());
        ClientKey::Account(digest[..16].try_into().expect("16 bytes"))
    }

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

#[derive(Default)]
pub struct LoginLimiter {
    state: Arc<Mutex<State>>,
    /// Multi-user mode: no process-wide ceiling. It guards single-user mode's one password
    /// against guesses spread over many addresses; with accounts, each username's own bucket
    /// does that, and a shared ceiling would let anyone lock the whole team out.
    no_ceiling: bool,
}

impl LoginLimiter {
    /// The limiter of multi-user mode (see `no_ceiling`).
    pub fn per_account() -> LoginLimiter {
        LoginLimiter { no_ceiling: true, ..LoginLimiter::default() }
    }
}

struct State {
    global: Pair,
    clients: HashMap<ClientKey, Pair>,
}

impl Default for State {
    fn default() -> Self {
        State { global: Pair::new(GLOBAL_PER_MINUTE, GLOBAL_PER_HOUR, Instant::now()), clients: HashMap::new() }
    }
}

/// An attempt allowed to verify a password. It holds its tokens: dropped, they stay spent (a
/// failed attempt); [`Attempt::refund`] gives them back.
pub struct Attempt {
    state: Arc<Mutex<State>>,
    client: ClientKey,
    from_client: From,
    /// `None` for a device, which the ceiling does not count.
    from_global: Option<From>,
}

impl Attempt {
    /// The password was right (or no password was sent): the attempt costs nothing.
    pub fn refund(self) {
        let mut st = self.state.lock().unwrap();
        if let Some(from) = self.from_global {
            st.global.give_back(from);
        }
        if let Some(pair) = st.clients.get_mut(&self.client) {
            pair.give_back(self.from_client);
        }
        // Drop finishes it.
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        let mut st = self.state.lock().unwrap();
        if let Some(pair) = st.clients.get_mut(&self.client) {
            pair.in_flight = pair.in_flight.saturating_sub(1);
        }
    }
}

impl LoginLimiter {
    /// Takes the tokens for one attempt by `client` (a device key for a browser with a valid
    /// device cookie, which skips the ceiling), or says it is limited.
    pub fn begin(&self, client: ClientKey) -> Option<Attempt> {
        self.begin_at(client, Instant::now())
    }

    fn begin_at(&self, client: ClientKey, now: Instant) -> Option<Attempt> {
        let mut st = self.state.lock().unwrap();
        // Device and account buckets are their own: they do not draw on the process-wide ceiling
        // (a client's attempt draws on it once, through its address).
        let own_bucket = self.no_ceiling || matches!(client, ClientKey::Device(_) | ClientKey::Account(_));
        if st.clients.len() >= PRUNE_ABOVE && !st.clients.contains_key(&client) {
            st.clients.retain(|_, p| {
                p.refill(now);
                !p.is_idle()
            });
        }
        let State { global, clients } = &mut *st;
        let pair = clients.entry(client).or_insert_with(|| Pair::new(CLIENT_PER_MINUTE, CLIENT_PER_HOUR, now));
        pair.refill(now);
        if pair.in_flight >= MAX_IN_FLIGHT {
            return None;
        }
        let from_global = if own_bucket {
            None
        } else {
            global.refill(now);
            // Checked before the client's pair is charged, so a refusal costs the client nothing.
            if global.minute.tokens < 1.0 && global.hour.tokens < 1.0 {
                return None;
            }
            Some(())
        };
        let from_client = pair.take()?;
        pair.in_flight += 1;
        let from_global = from_global.map(|()| global.take().expect("checked above"));
        Some(Attempt { state: self.state.clone(), client, from_client, from_global })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ClientKey = ClientKey::V4([10, 0, 0, 1]);
    const B: ClientKey = ClientKey::V4([10, 0, 0, 2]);

    #[test]
    fn accounts_have_no_process_wide_ceiling() {
        let now = Instant::now();
        let addresses =
            |l: &LoginLimiter| (0..150u8).filter(|i| l.begin_at(ClientKey::V4([10, 1, 0, *i]), now).is_some()).count();
        assert!(addresses(&LoginLimiter::default()) < 150, "single-user mode has its ceiling");
        assert_eq!(addresses(&LoginLimiter::per_account()), 150, "multi-user mode counts per address and account");
    }

    fn fail(l: &LoginLimiter, c: ClientKey, now: Instant) -> bool {
        l.begin_at(c, now).is_some()
    }

    #[test]
    fn fifteenth_failure_in_a_row_is_refused() {
        let l = LoginLimiter::default();
        let now = Instant::now();
        for i in 1..=14 {
            assert!(fail(&l, A, now), "attempt {i}");
        }
        assert!(!fail(&l, A, now), "attempt 15");
        // Another client is not locked out by A.
        assert!(fail(&l, B, now));
    }

    #[test]
    fn correct_passwords_cost_nothing() {
        let l = LoginLimiter::default();
        let now = Instant::now();
        for _ in 0..100 {
            l.begin_at(A, now).unwrap().refund();
        }
        for i in 1..=14 {
            assert!(fail(&l, A, now), "attempt {i}");
        }
    }

    #[test]
    fn concurrent_attempts_take_their_tokens_up_front() {
        let l = LoginLimiter::default();
        let now = Instant::now();
        // Two at once are allowed; a third waits its turn (refused) however many tokens remain.
        let one = l.begin_at(A, now).unwrap();
        let two = l.begin_at(A, now).unwrap();
        assert!(l.begin_at(A, now).is_none(), "at most two in flight");
        drop((one, two));
        // 12 tokens are left: exactly 12 more.
        let mut more = 0;
        while let Some(attempt) = l.begin_at(A, now) {
            drop(attempt);
            more += 1;
        }
        assert_eq!(more, 12);
    }

    #[test]
    fn tokens_come_back_over_time_and_strictly() {
        let l = LoginLimiter::default();
        let t0 = Instant::now();
        for _ in 0..14 {
            fail(&l, A, t0);
        }
        // 30 s later one minute-token is back: exactly one more attempt, then refused again
        // (code-server's limiter would let every attempt through until the window rolls over).
        let t1 = t0 + Duration::from_secs(31);
        assert!(fail(&l, A, t1));
        assert!(!fail(&l, A, t1));
    }

    #[test]
    fn global_ceiling_stops_many_addresses_but_not_a_known_device() {
        let l = LoginLimiter::default();
        let now = Instant::now();
        let total = (GLOBAL_PER_MINUTE + GLOBAL_PER_HOUR) as u32;
        for i in 0..total {
            let c = ClientKey::V4([10, 1, (i / 256) as u8, (i % 256) as u8]);
            assert!(fail(&l, c, now), "attempt {i}");
        }
        assert!(!fail(&l, ClientKey::V4([192, 168, 0, 1]), now));
        // The owner's browser is not locked out; its own failures still count.
        let device = ClientKey::Device([7; 16]);
        l.begin_at(device, now).unwrap().refund();
        for i in 1..=14 {
            assert!(fail(&l, device, now), "device attempt {i}");
        }
        assert!(!fail(&l, device, now), "a failing device cookie runs out too");
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
