//! Prometheus metrics: what the server counts, and `/metrics` in the text exposition format
//! (version 0.0.4, rendered by `prometheus-client`, never formatted by hand).
//!
//! The counters live in one process-wide [`Metrics`], as the `metrics` facade's recorder does:
//! they are touched from the express lane, hyper's proxy path, the accept loop, the login
//! handler and the VS Code supervisor, and threading a handle through all of them would cost
//! every one of those modules a parameter for what is an atomic add. Every labelled series is
//! created up front and kept as a handle, so counting is one relaxed `fetch_add` (a histogram
//! observation takes a short uncontended lock) with no label lookup; the set of label values is
//! fixed by the enums below, so no path, port or user string ever becomes a label.
//!
//! Who may read them, and where, is [`crate::scrape`]'s: this module depends on nothing that
//! counts into it.
//!
//! Process figures (CPU seconds, resident memory, open descriptors) are read from `/proc/self`
//! at scrape time, under the names Prometheus' own client libraries use.

// Unsafe code here only asks the C library for the clock tick (a `sysconf` query).
#![allow(unsafe_code)]

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// What a request was for: the `route` label. Fixed, so the label set is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/login`, `/logout`.
    Login,
    /// Our assets and VS Code's static files (`/_static`, `/{quality}-{commit}/static`, ...).
    Static,
    /// Everything forwarded to a VS Code server (the workbench, its API and WebSockets).
    Vscode,
    /// The port proxy, both of its paths.
    Proxy,
    /// Multi-user mode's `/api`, admin and account pages.
    Api,
    /// `/healthz`.
    Health,
    /// Our other routes (`/update/check`, `/mint-key`, `/metrics`, ...).
    Other,
}

impl Route {
    const ALL: [Route; 7] =
        [Route::Login, Route::Static, Route::Vscode, Route::Proxy, Route::Api, Route::Health, Route::Other];

    fn as_str(self) -> &'static str {
        match self {
            Route::Login => "login",
            Route::Static => "static",
            Route::Vscode => "vscode",
            Route::Proxy => "proxy",
            Route::Api => "api",
            Route::Health => "health",
            Route::Other => "other",
        }
    }

    /// The class of a request the router serves (not the port proxy's, which
    /// [`crate::proxy::Front`] recognises itself), by its path. `multi`: multi-user mode, where
    /// `/api`, `/admin` and `/account` are ours (in single-user mode `/api` is VS Code's).
    pub fn of_path(path: &str, multi: bool) -> Route {
        let mut segments = path.trim_start_matches('/').split('/');
        let mut first = segments.next().unwrap_or("");
        if first == "vscode" {
            first = segments.next().unwrap_or("");
        }
        match first {
            "login" | "logout" => Route::Login,
            "healthz" => Route::Health,
            "_static" | "manifest.json" | "robots.txt" | "security.txt" | ".well-known" | "favicon.ico" => {
                Route::Static
            }
            "api" | "admin" | "account" if multi => Route::Api,
            "update" | "mint-key" | "metrics" | "session" | "add-session" | "delete-session" => Route::Other,
            // `/{quality}-{commit}/static/…`: VS Code's files, served from disk by us.
            product if product.contains('-') && segments.next() == Some("static") => Route::Static,
            _ => Route::Vscode,
        }
    }
}

/// The `status` label: the class of the response status.
fn status_index(status: u16) -> usize {
    usize::from((status / 100).clamp(1, 5)) - 1
}
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Which of the proxy's two paths served a proxied request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyPath {
    /// The express lane ([`crate::proxy::lane`]).
    Lane,
    /// hyper's path (WebSockets, HTTP/2, chunked uploads, the lane switched off...).
    Hyper,
}

/// Whose WebSocket is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Socket {
    /// A VS Code window's (forwarded to its server).
    Vscode,
    /// A proxied app's (`/proxy/<port>/`, ...).
    Proxy,
}

/// How a login attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    Success,
    /// A wrong password or username, or a disabled account.
    Failure,
    /// Refused by the login rate limiter before any check.
    RateLimited,
}

/// A VS Code server's life, as its supervisor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vscode {
    /// A process was spawned.
    Start,
    /// It ended and the supervisor starts another (after a crash or on request).
    Restart,
    /// It ended without being asked to (exited, failed to start or to get ready).
    Exit,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabels {
    path: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: &'static str,
}

/// Latency buckets, in seconds: a proxied small response takes well under a millisecond, a
/// workbench asset a few, a login with argon2 tens, a long poll seconds.
const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Every series, as handles into the registry's families.
pub struct Metrics {
    registry: Registry,
    requests: [[Counter; 5]; 7],
    latency: [Histogram; 7],
    proxied: [Counter; 2],
    proxy_sent: Counter,
    proxy_received: Counter,
    websockets: [Gauge; 2],
    connections_open: Gauge,
    connections: Counter,
    logins: [Counter; 3],
    vscode: [Counter; 3],
    /// Multi-user mode's workspaces: running, over quota, memory (sum, largest), storage (sum).
    workspaces: [Gauge; 5],
    rate_limited: Counter,
    sessions_active: Gauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();

        let requests_family = Family::<RequestLabels, Counter>::default();
        let requests = Route::ALL.map(|r| {
            STATUS_CLASSES
                .map(|s| requests_family.get_or_create(&RequestLabels { route: r.as_str(), status: s }).clone())
        });
        registry.register(
            "code_server_http_requests",
            "HTTP requests served, by route class and status class (WebSocket upgrades are 1xx)",
            requests_family,
        );

        let latency_family =
            Family::<RouteLabels, Histogram>::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS.iter().copied()));
        let latency = Route::ALL.map(|r| latency_family.get_or_create(&RouteLabels { route: r.as_str() }).clone());
        registry.register(
            "code_server_http_request_duration_seconds",
            "Time from a request's head to its response's head, by route class",
            latency_family,
        );

        let proxied_family = Family::<PathLabels, Counter>::default();
        let proxied = ["lane", "hyper"].map(|p| proxied_family.get_or_create(&PathLabels { path: p }).clone());
        registry.register(
            "code_server_proxy_requests",
            "Requests the port proxy sent to an upstream, by the proxy's path (express lane or hyper)",
            proxied_family,
        );
        let proxy_sent = Counter::default();
        registry.register(
            "code_server_proxy_sent_bytes",
            "Request body bytes the port proxy sent to upstreams",
            proxy_sent.clone(),
        );
        let proxy_received = Counter::default();
        registry.register(
            "code_server_proxy_received_bytes",
            "Response body bytes the port proxy relayed from upstreams",
            proxy_received.clone(),
        );

        let ws_family = Family::<KindLabels, Gauge>::default();
        let websockets = ["vscode", "proxy"].map(|k| ws_family.get_or_create(&KindLabels { kind: k }).clone());
        registry.register("code_server_websockets_open", "WebSockets open, VS Code's and proxied ones", ws_family);

        let connections_open = Gauge::default();
        registry.register(
            "code_server_connections_open",
            "Client connections being served as HTTP (an upgraded one counts as a WebSocket instead)",
            connections_open.clone(),
        );
        let connections = Counter::default();
        registry.register("code_server_connections", "Client connections accepted", connections.clone());

        let logins_family = Family::<ResultLabels, Counter>::default();
        let logins = ["success", "failure", "rate_limited"]
            .map(|r| logins_family.get_or_create(&ResultLabels { result: r }).clone());
        registry.register("code_server_logins", "Login attempts, by result", logins_family);

        let vscode_family = Family::<EventLabels, Counter>::default();
        let vscode =
            ["start", "restart", "exit"].map(|e| vscode_family.get_or_create(&EventLabels { event: e }).clone());
        registry.register(
            "code_server_vscode_server_events",
            "VS Code server processes started, restarted, and ended unasked",
            vscode_family,
        );

        // Totals and the largest, not one series per user: labels stay bounded however many
        // users there are (and a username is the user's own string).
        let workspaces: [Gauge; 5] = Default::default();
        for (g, (name, help)) in workspaces.iter().zip([
            ("code_server_workspaces_running", "Multi-user mode: users' VS Code servers running"),
            ("code_server_workspaces_over_quota", "Multi-user mode: workspaces over their storage quota"),
            ("code_server_workspaces_memory_bytes", "Multi-user mode: resident memory of all running workspaces"),
            ("code_server_workspace_memory_max_bytes", "Multi-user mode: resident memory of the largest workspace"),
            (
                "code_server_workspaces_storage_bytes",
                "Multi-user mode: storage used by all workspaces, as last measured",
            ),
        ]) {
            registry.register(name, help, g.clone());
        }

        let rate_limited = Counter::default();
        registry.register(
            "code_server_rate_limited_requests",
            "Requests answered 429 by --rate-limit (logins have their own limiter: code_server_logins)",
            rate_limited.clone(),
        );

        let sessions_active = Gauge::default();
        registry.register(
            "code_server_sessions_active",
            "Live sessions, every user's (counted in the store at each scrape)",
            sessions_active.clone(),
        );

        registry.register_collector(Box::new(Process));
        Metrics {
            sessions_active,
            rate_limited,
            workspaces,
            registry,
            requests,
            latency,
            proxied,
            proxy_sent,
            proxy_received,
            websockets,
            connections_open,
            connections,
            logins,
            vscode,
        }
    }

    /// The registry in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing to a String cannot fail; a collector's error leaves what was written.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

fn route_index(route: Route) -> usize {
    Route::ALL.iter().position(|&r| r == route).unwrap_or(Route::ALL.len() - 1)
}

/// The live sessions, as counted for this scrape.
pub fn sessions_active(n: u64) {
    get().sessions_active.set(i64::try_from(n).unwrap_or(i64::MAX));
}

/// A request refused by `--rate-limit`.
pub fn rate_limited() {
    get().rate_limited.inc();
}

/// Multi-user mode's workspaces as last sampled (see [`crate::multiuser::limits`]).
pub fn workspaces(running: u64, over_quota: u64, memory: u64, memory_max: u64, storage: u64) {
    let g = &get().workspaces;
    for (gauge, v) in g.iter().zip([running, over_quota, memory, memory_max, storage]) {
        gauge.set(i64::try_from(v).unwrap_or(i64::MAX));
    }
}

/// A request answered: its class, its status, and how long until the response head.
pub fn request(route: Route, status: u16, elapsed: Duration) {
    let m = get();
    let r = route_index(route);
    m.requests[r][status_index(status)].inc();
    m.latency[r].observe(elapsed.as_secs_f64());
}

/// A request sent to an upstream by the port proxy.
pub fn proxied(path: ProxyPath) {
    get().proxied[path as usize].inc();
}

/// Body bytes the port proxy sent to an upstream (`sent`) and relayed back (`received`); called
/// once per request or response, with its total.
pub fn proxied_bytes(sent: u64, received: u64) {
    let m = get();
    if sent > 0 {
        m.proxy_sent.inc_by(sent);
    }
    if received > 0 {
        m.proxy_received.inc_by(received);
    }
}

/// A login attempt's result.
pub fn login(result: Login) {
    get().logins[result as usize].inc();
}

/// A VS Code server's start, restart or exit.
pub fn vscode(event: Vscode) {
    get().vscode[event as usize].inc();
}

/// The supervisor's view of a child that ended: a restart follows; `requested` says whether
/// anybody asked for it (otherwise it is also an exit).
pub fn vscode_ended(requested: bool) {
    vscode(Vscode::Restart);
    if !requested {
        vscode(Vscode::Exit);
    }
}

/// Counts one open thing for as long as it is held.
#[must_use = "the count drops with the guard"]
pub struct Open(&'static Gauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A WebSocket open, for as long as the guard lives.
pub fn websocket(kind: Socket) -> Open {
    let gauge = &get().websockets[kind as usize];
    gauge.inc();
    Open(gauge)
}

/// A client connection accepted, open for as long as the guard lives.
pub fn connection() -> Open {
    let m = get();
    m.connections.inc();
    m.connections_open.inc();
    Open(&m.connections_open)
}

/// The process's own figures, read at each scrape.
#[derive(Debug)]
struct Process;

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // The fields after the command name (which is in parentheses and may hold spaces).
        let fields: Vec<&str> =
            stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
        // utime and stime are fields 14 and 15 of stat(5); `fields` starts at field 3.
        let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        if let (Some(user), Some(system)) = (ticks(11), ticks(12)) {
            let cpu = ConstCounter::new((user + system) as f64 / clock_ticks());
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds",
                None,
                cpu.metric_type(),
            )?)?;
        }
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let rss_kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok());
        if let Some(kb) = rss_kb {
            let rss = ConstGauge::new(kb * 1024);
            rss.encode(encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory size, in bytes",
                None,
                rss.metric_type(),
            )?)?;
        }
        // The listing's own descriptor is among those listed.
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            let fds = ConstGauge::new(dir.count().saturating_sub(1) as i64);
            fds.encode(encoder.encode_descriptor(
                "process_open_fds",
                "Open file descriptors",
                None,
                fds.metric_type(),
            )?)?;
        }
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let max = limits
            .lines()
            .find_map(|l| l.strip_prefix("Max open files"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<i64>().ok());
        if let Some(max) = max {
            let max = ConstGauge::new(max);
            max.encode(encoder.encode_descriptor(
                "process_max_fds",
                "The limit on open file descriptors",
                None,
                max.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// Clock ticks per second, the unit of `/proc/self/stat`'s CPU times.
fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a configuration value; it has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_classed_by_their_first_segment() {
        for (path, class) in [
            ("/login", Route::Login),
            ("/logout", Route::Login),
            ("/vscode/login", Route::Login),
            ("/healthz", Route::Health),
            ("/_static/src/browser/media/favicon.ico", Route::Static),
            ("/stable-0123abc/static/out/vs/code/browser/workbench/workbench.js", Route::Static),
            ("/vscode/stable-0123abc/static/x.js", Route::Static),
            ("/manifest.json", Route::Static),
            ("/", Route::Vscode),
            ("/vscode", Route::Vscode),
            ("/some-thing/else", Route::Vscode),
            ("/update/check", Route::Other),
            ("/metrics", Route::Other),
        ] {
            assert_eq!(Route::of_path(path, false), class, "{path}");
        }
        assert_eq!(Route::of_path("/api/users", true), Route::Api);
        assert_eq!(Route::of_path("/api/users", false), Route::Vscode, "VS Code's in single-user mode");
    }

    #[test]
    fn status_classes() {
        assert_eq!(STATUS_CLASSES[status_index(101)], "1xx");
        assert_eq!(STATUS_CLASSES[status_index(200)], "2xx");
        assert_eq!(STATUS_CLASSES[status_index(302)], "3xx");
        assert_eq!(STATUS_CLASSES[status_index(429)], "4xx");
        assert_eq!(STATUS_CLASSES[status_index(504)], "5xx");
        assert_eq!(STATUS_CLASSES[status_index(999)], "5xx");
    }

    #[test]
    fn the_exposition_has_every_family_and_the_process() {
        request(Route::Proxy, 200, Duration::from_millis(1));
        let text = get().render();
        for name in [
            "code_server_http_requests_total{route=\"proxy\",status=\"2xx\"}",
            "code_server_http_request_duration_seconds_bucket{",
            "code_server_proxy_requests_total{path=\"lane\"}",
            "code_server_proxy_sent_bytes_total",
            "code_server_websockets_open{kind=\"vscode\"}",
            "code_server_connections_open",
            "code_server_logins_total{result=\"rate_limited\"}",
            "code_server_vscode_server_events_total{event=\"restart\"}",
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
