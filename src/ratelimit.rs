//! Rate limits on requests beyond the login's own limiter (`--rate-limit`): one token bucket
//! per signed-in user and one per client address, for two classes of request:
//!
//! * `api`: multi-user mode's `/api` (and single-user mode's own JSON routes);
//! * `traffic`: everything else that reaches us as HTTP: our pages, VS Code's requests.
//!
//! A request takes a token from its user's bucket (when signed in) and from its address's
//! bucket; when either is empty it is answered 429 with `Retry-After`. Every answer in a limited
//! class carries `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (the IETF
//! draft's names) and their `X-RateLimit-*` twins, for the tighter of the two buckets. Never
//! limited: WebSocket upgrades (and so every open WebSocket, VS Code's or proxied), `/healthz`,
//! VS Code's static files, and the port proxy (it is taken before the router, on the express
//! lane at wire speed; a user's dev server is theirs to protect).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::Auth;
use crate::error::AppError;

/// `--rate-limit`'s presets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Preset {
    /// Far above what a person with a browser does (a workbench load is a few hundred
    /// requests); stops scripts that hammer.
    #[default]
    Standard,
    /// A fifth of standard.
    Strict,
    Off,
}

impl Preset {
    pub const NAMES: &'static [&'static str] = &["standard", "strict", "off"];

    pub fn parse(s: &str) -> Option<Preset> {
        match s {
            "standard" => Some(Preset::Standard),
            "strict" => Some(Preset::Strict),
            "off" => Some(Preset::Off),
            _ => None,
        }
    }

    /// Requests a minute: (api per user, api per address, traffic per user, traffic per address).
    fn rates(self) -> Option<[u32; 4]> {
        match self {
            Preset::Standard => Some([600, 1200, 6000, 12000]),
            Preset::Strict => Some([120, 240, 1200, 2400]),
            Preset::Off => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Class {
    Api,
    Traffic,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Address(IpAddr),
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// What a bucket says about a request.
#[derive(Debug, Clone, Copy)]
struct Verdict {
    allowed: bool,
    limit: u32,
    remaining: u32,
    /// Seconds until a token is back (when refused), or until the bucket is full.
    reset: u64,
}

/// Forget idle buckets once this many are tracked.
const PRUNE_ABOVE: usize = 8192;

pub struct RateLimiter {
    rates: Option<[u32; 4]>,
    buckets: Mutex<HashMap<(Class, Key), Bucket>>,
    auth: Arc<Auth>,
}

impl RateLimiter {
    pub fn new(preset: Preset, auth: Arc<Auth>) -> RateLimiter {
        RateLimiter { rates: preset.rates(), buckets: Mutex::default(), auth }
    }

    /// Takes a token of `key`'s bucket for `class` at `per_minute`.
    fn take(&self, class: Class, key: Key, per_minute: u32, now: Instant) -> Verdict {
        let capacity = f64::from(per_minute);
        let per_second = capacity / 60.0;
        let mut buckets = self.buckets.lock().unwrap();
        if buckets.len() > PRUNE_ABOVE {
            // A full bucket is one nobody has used for a minute: nothing is lost by forgetting it.
            buckets.retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_second < capacity);
        }
        let b = buckets.entry((class, key)).or_insert(Bucket { tokens: capacity, at: now });
        b.tokens = (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_second).min(capacity);
        b.at = now;
        let allowed = b.tokens >= 1.0;
        if allowed {
            b.tokens -= 1.0;
        }
        let reset = if allowed { (capacity - b.tokens) / per_second } else { (1.0 - b.tokens) / per_second };
        Verdict { allowed, limit: per_minute, remaining: b.tokens.floor() as u32, reset: reset.ceil() as u64 }
    }
}

fn class_of(path: &str) -> Option<Class> {
    if path == "/healthz" || path.contains("/static/") || path.starts_with("/_static/") {
        return None;
    }
    if path == "/api" || path.starts_with("/api/") || path == "/update/check" || path == "/mint-key" {
        return Some(Class::Api);
    }
    Some(Class::Traffic)
}

/// The middleware (see the module docs).
pub async fn limit(State(limiter): State<Arc<RateLimiter>>, req: Request, next: Next) -> Response {
    let Some(rates) = limiter.rates else { return next.run(req).await };
    let path = req.uri().path();
    let Some(class) = class_of(path) else { return next.run(req).await };
    if crate::websocket::is_websocket(req.method().as_str(), req.headers()) {
        return next.run(req).await;
    }
    let [api_user, api_addr, traffic_user, traffic_addr] = rates;
    let (per_user, per_addr) = match class {
        Class::Api => (api_user, api_addr),
        Class::Traffic => (traffic_user, traffic_addr),
    };
    let peer = req.extensions().get::<crate::server::ConnInfo>().and_then(|c| c.peer).map(|p| p.ip());
    let address = limiter.auth.client_ip(peer, req.headers());
    // A store outage is not ours to answer here: the handler answers it.
    let user = limiter.auth.identify(req.headers()).await.ok().flatten().map(|i| i.user.to_string());
    let now = Instant::now();
    let mut verdicts = vec![];
    if let Some(user) = user {
        verdicts.push(limiter.take(class, Key::User(user), per_user, now));
    }
    if let Some(ip) = address {
        verdicts.push(limiter.take(class, Key::Address(ip), per_addr, now));
    }
    // The tighter of the two speaks: a refusal first, else the fewest remaining.
    let Some(verdict) = verdicts.iter().copied().min_by_key(|v| (v.allowed, v.remaining)) else {
        return next.run(req).await;
    };
    let mut res = if verdict.allowed {
        next.run(req).await
    } else {
        crate::metrics::rate_limited();
        AppError::new(StatusCode::TOO_MANY_REQUESTS, "Too many requests: slow down and try again shortly")
            .retry_after(u32::try_from(verdict.reset.max(1)).unwrap_or(60))
            .into_response()
    };
    let headers = res.headers_mut();
    for (names, value) in [
        (["ratelimit-limit", "x-ratelimit-limit"], u64::from(verdict.limit)),
        (["ratelimit-remaining", "x-ratelimit-remaining"], u64::from(verdict.remaining)),
        (["ratelimit-reset", "x-ratelimit-reset"], verdict.reset),
    ] {
        for name in names {
            headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(class_of("/api/users/me"), Some(Class::Api));
        assert_eq!(class_of("/"), Some(Class::Traffic));
        assert_eq!(class_of("/stable-abc/static/out/x.js"), None);
        assert_eq!(class_of("/healthz"), None);
    }
}
