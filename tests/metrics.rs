//! `/metrics` through the real binary: who may read it, that its counters move with traffic
//! (logins, the port proxy on both of its paths, WebSockets, VS Code), the metrics token, and
//! the `--metrics-addr` listener. Each test runs its own server in its own HOME.

use axum::body::Body;
use futures_util::SinkExt;
use hyper::http::StatusCode;
use testkit::upstream::Upstream;
use testkit::*;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "metrics-token-for-the-tests-0123";

/// One scrape: every sample, as `name{labels}` → value.
struct Scrape(Vec<(String, f64)>);

impl Scrape {
    fn of(r: &Resp) -> Scrape {
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let samples = r
            .text()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let (name, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {l}"));
                (name.to_string(), value.parse().unwrap_or_else(|_| panic!("not a number: {l}")))
            })
            .collect();
        Scrape(samples)
    }

    /// The sample's value; it must be there.
    fn get(&self, series: &str) -> f64 {
        self.0.iter().find(|(n, _)| n == series).map(|(_, v)| *v).unwrap_or_else(|| {
            let names: Vec<&str> = self.0.iter().map(|(n, _)| n.as_str()).collect();
            panic!("no {series} among {names:#?}")
        })
    }
}

async fn scrape(s: &Server, cookie: &str) -> Scrape {
    Scrape::of(&s.client().get_with("/metrics", &[("cookie", cookie)]).await)
}

/// Polls the metrics until `cond` holds (the counts are made on other tasks than the answer).
async fn until(s: &Server, cookie: &str, what: &str, cond: impl Fn(&Scrape) -> bool) -> Scrape {
    for _ in 0..500 {
        let now = scrape(s, cookie).await;
        if cond(&now) {
            return now;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn metrics_are_for_an_admin_or_the_token() {
    let home = Home::new();
    let (s, cookie) = fake_server(&home, &[], &[("CODE_SERVER_METRICS_TOKEN", TOKEN)]).await;
    let c = s.client();

    let r = c.get("/metrics").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    for wrong in [format!("Bearer {TOKEN}x"), "Bearer cs_0123456789abcdef".into(), format!("Basic {TOKEN}")] {
        let r = c.get_with("/metrics", &[("authorization", &wrong)]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{wrong}: {}", r.text());
    }

    // The owner's session: single-user mode's admin.
    let r = c.get_with("/metrics", &[("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let text = r.text();
    for line in [
        "# TYPE code_server_http_requests_total counter",
        "# TYPE code_server_http_request_duration_seconds histogram",
        "# TYPE code_server_websockets_open gauge",
        "# TYPE process_cpu_seconds_total counter",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    let first = Scrape::of(&r);
    assert!(first.get("process_resident_memory_bytes") > 0.0);
    assert!(first.get("process_open_fds") > 0.0);
    assert!(first.get("process_max_fds") >= first.get("process_open_fds"));

    // The token, without a session.
    let r = c.get_with("/metrics", &[("authorization", &format!("Bearer {TOKEN}"))]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // The 401s above were counted as requests of ours.
    assert!(Scrape::of(&r).get("code_server_http_requests_total{route=\"other\",status=\"4xx\"}") >= 4.0);
}

/// Logins, proxied requests and their bytes, latency observations: each moves its counter.
async fn counters_move_with_traffic(lane_off: bool) {
    let home = Home::new();
    let env: &[(&str, &str)] = if lane_off { &[("CODE_SERVER_EXPRESS_LANE", "off")] } else { &[] };
    let (s, cookie) = fake_server(&home, &[], env).await;
    let up = Upstream::start().await;
    let c = s.client();
    let before = scrape(&s, &cookie).await;
    assert!(before.get("code_server_logins_total{result=\"success\"}") >= 1.0, "fake_server logged in");

    let r = c.post_form("/login", "password=wrong", &[]).await;
    assert_eq!(r.status, StatusCode::OK, "the login page again");

    const DOWNLOAD: u64 = 100_000;
    const UPLOAD: usize = 5_000;
    for _ in 0..3 {
        let r = c.get_with(&format!("/proxy/{}/download?size={DOWNLOAD}", up.port), &[("cookie", &cookie)]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body.len() as u64, DOWNLOAD);
    }
    let body = vec![b'x'; UPLOAD];
    let r = c
        .send(
            "POST",
            &format!("/proxy/{}/echo", up.port),
            &[("cookie", &cookie), ("content-length", &UPLOAD.to_string())],
            Body::from(body),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["body_len"], UPLOAD as u64);
    let r = c.get_with(&format!("/proxy/{}/status/404", up.port), &[("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let after = until(&s, &cookie, "the proxied bytes", |m| {
        m.get("code_server_proxy_received_bytes_total")
            >= before.get("code_server_proxy_received_bytes_total") + 3.0 * DOWNLOAD as f64
    })
    .await;
    let delta = |series: &str| after.get(series) - before.get(series);
    assert_eq!(delta("code_server_logins_total{result=\"failure\"}"), 1.0);
    assert_eq!(delta("code_server_logins_total{result=\"success\"}"), 0.0);
    let (taken, idle) = if lane_off { ("hyper", "lane") } else { ("lane", "hyper") };
    assert_eq!(delta(&format!("code_server_proxy_requests_total{{path=\"{taken}\"}}")), 5.0);
    assert_eq!(delta(&format!("code_server_proxy_requests_total{{path=\"{idle}\"}}")), 0.0);
    assert_eq!(delta("code_server_http_requests_total{route=\"proxy\",status=\"2xx\"}"), 4.0);
    assert_eq!(delta("code_server_http_requests_total{route=\"proxy\",status=\"4xx\"}"), 1.0);
    assert!(delta("code_server_http_request_duration_seconds_count{route=\"proxy\"}") >= 5.0);
    assert!(delta("code_server_proxy_sent_bytes_total") >= UPLOAD as f64);
    assert!(delta("code_server_proxy_received_bytes_total") >= 3.0 * DOWNLOAD as f64);
    // The failed login, and the scrape before this one.
    assert!(delta("code_server_http_requests_total{route=\"login\",status=\"2xx\"}") >= 1.0);
    assert!(delta("code_server_http_requests_total{route=\"other\",status=\"2xx\"}") >= 1.0);
    assert!(delta("code_server_connections_total") >= 6.0, "every request came on a connection of its own");
}

#[tokio::test]
async fn counters_move_with_traffic_through_the_express_lane() {
    counters_move_with_traffic(false).await;
}

#[tokio::test]
async fn counters_move_with_traffic_through_hyper() {
    counters_move_with_traffic(true).await;
}

#[tokio::test]
async fn rate_limited_logins_are_counted() {
    let home = Home::new();
    let (s, cookie) = fake_server(&home, &[], &[]).await;
    let c = s.client();
    // Two a minute and twelve an hour for one client: the fifteenth is refused unchecked.
    for _ in 0..16 {
        c.post_form("/login", "password=wrong", &[]).await;
    }
    let m = scrape(&s, &cookie).await;
    assert!(m.get("code_server_logins_total{result=\"rate_limited\"}") >= 1.0);
    assert!(m.get("code_server_logins_total{result=\"failure\"}") >= 1.0);
    let attempts = m.get("code_server_logins_total{result=\"rate_limited\"}")
        + m.get("code_server_logins_total{result=\"failure\"}");
    assert_eq!(attempts, 16.0, "every attempt counted once");
}

#[tokio::test]
async fn open_websockets_and_vscode_starts_are_counted() {
    let home = Home::new();
    let (s, cookie) = fake_server(&home, &[], &[]).await;
    let up = Upstream::start().await;
    let proxied = "code_server_websockets_open{kind=\"proxy\"}";
    let before = scrape(&s, &cookie).await;
    assert_eq!(before.get(proxied), 0.0);

    let (mut ws, _) = ws_connect(&s, &format!("/proxy/{}/ws", up.port), &[("cookie", &cookie)]).await.unwrap();
    let text = "x".repeat(10_000);
    ws.send(Message::Text(text.as_str().into())).await.unwrap();
    until(&s, &cookie, "the proxied WebSocket", |m| m.get(proxied) == 1.0).await;
    ws.close(None).await.unwrap();
    // The echo and the close handshake come back before the server ends the connection.
    while futures_util::StreamExt::next(&mut ws).await.is_some_and(|m| m.is_ok()) {}
    drop(ws);
    until(&s, &cookie, "the proxied WebSocket to close", |m| m.get(proxied) == 0.0).await;
    // Its bytes both ways, frames and all, counted as it closed.
    let m = until(&s, &cookie, "the WebSocket's bytes", |m| {
        m.get("code_server_proxy_sent_bytes_total") - before.get("code_server_proxy_sent_bytes_total") >= 10_000.0
    })
    .await;
    let down = m.get("code_server_proxy_received_bytes_total") - before.get("code_server_proxy_received_bytes_total");
    assert!(down >= 10_000.0, "the echo: {down}");
    assert!(m.get("code_server_http_requests_total{route=\"proxy\",status=\"1xx\"}") >= 1.0, "the upgrade");

    // The workbench starts VS Code (the stand-in build).
    let r = s.client().get_with("/", &[("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let m = until(&s, &cookie, "a VS Code start", |m| {
        m.get("code_server_vscode_server_events_total{event=\"start\"}") >= 1.0
    })
    .await;
    assert_eq!(m.get("code_server_vscode_server_events_total{event=\"exit\"}"), 0.0);
    assert!(m.get("code_server_http_requests_total{route=\"vscode\",status=\"2xx\"}") >= 1.0);
}

/// The `Metrics on http://…/metrics` line's address.
async fn metrics_address(s: &Server) -> String {
    let mut found = None;
    eventually("the metrics listener's line", || {
        found = s.stdout_text().lines().find_map(|l| {
            l.split_once("Metrics on http://").map(|(_, rest)| rest.trim().trim_end_matches("/metrics").to_string())
        });
        found.is_some()
    })
    .await;
    found.unwrap()
}

#[tokio::test]
async fn a_loopback_metrics_listener_serves_metrics_alone_without_credentials() {
    let home = Home::new();
    let (s, _) = fake_server(&home, &["--metrics-addr", "127.0.0.1:0"], &[]).await;
    let addr = metrics_address(&s).await;
    assert_ne!(addr, s.authority());
    let c = Client::tcp(&addr);
    let r = c.get("/metrics").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(Scrape::of(&r).get("code_server_logins_total{result=\"success\"}") >= 1.0);
    assert_eq!(c.get("/").await.status, StatusCode::NOT_FOUND);
    assert_eq!(c.get("/login").await.status, StatusCode::NOT_FOUND);
    // And the main port still wants a session.
    assert_eq!(s.client().get("/metrics").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_metrics_listener_off_loopback_needs_the_token() {
    let home = Home::new();
    home.write_config("auth: password\npassword: pw\n");
    let out = run(&home, &["--metrics-addr", "0.0.0.0:0"], &[]);
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(out.stderr.contains("metrics token"), "{}", out.stderr);
    let out = run(&home, &["--metrics-addr", "localhost:9100"], &[]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("IP address and port"), "{}", out.stderr);
    let out = run(&home, &[], &[("CODE_SERVER_METRICS_TOKEN", "short")]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("at least 16 characters"), "{}", out.stderr);
    let out = run(&home, &["--metrics-token", TOKEN], &[]);
    assert_eq!(out.code, Some(1), "never on the command line");

    // With the token, on every address of the machine: the token is asked for there.
    let (s, _) = fake_server(&home, &["--metrics-addr", "0.0.0.0:0"], &[("CODE_SERVER_METRICS_TOKEN", TOKEN)]).await;
    let port = metrics_address(&s).await.rsplit_once(':').unwrap().1.to_string();
    let c = Client::tcp(&format!("127.0.0.1:{port}"));
    assert_eq!(c.get("/metrics").await.status, StatusCode::UNAUTHORIZED);
    let r = c.get_with("/metrics", &[("authorization", &format!("Bearer {TOKEN}"))]).await;
    assert_eq!(r.status, StatusCode::OK);
}

/// `code_server_sessions_active`: counted in the session store at each scrape, in both modes.
#[tokio::test]
async fn live_sessions_are_counted() {
    let home = Home::new();
    let (s, first) = fake_server(&home, &[], &[]).await;
    assert_eq!(scrape(&s, &first).await.get("code_server_sessions_active"), 1.0);
    let second = s.client().login("pw").await;
    assert_eq!(scrape(&s, &first).await.get("code_server_sessions_active"), 2.0);
    let out = s.client().get_with("/logout", &[("cookie", &second)]).await;
    assert_eq!(out.status, StatusCode::FOUND, "{}", out.text());
    assert_eq!(scrape(&s, &first).await.get("code_server_sessions_active"), 1.0);

    // Multi-user mode: every user's sessions in the user database, read with the token.
    let multi = Home::new();
    multi.write_config("deployment-mode: multi\nmulti-user:\n  isolation:\n    strategy: directory\n");
    let admin =
        [("ADMIN_USERNAME", "boss"), ("ADMIN_PASSWORD", "boss-password-1"), ("CODE_SERVER_METRICS_TOKEN", TOKEN)];
    let m = Server::start(&multi, &["--bind-addr", "127.0.0.1:0"], &admin);
    let by_token = || async {
        let r = m.client().get_with("/metrics", &[("authorization", &format!("Bearer {TOKEN}"))]).await;
        Scrape::of(&r).get("code_server_sessions_active")
    };
    assert_eq!(by_token().await, 0.0);
    let boss = sign_in(&m, "boss", "boss-password-1").await;
    sign_in(&m, "boss", "boss-password-1").await;
    assert_eq!(by_token().await, 2.0);
    let revoked = api(&m, "DELETE", "/api/users/me/sessions/x", &boss, "").await;
    assert_eq!(revoked.status, 404, "{}", revoked.text());
    let mine = api(&m, "GET", "/api/users/me/sessions", &boss, "").await.json();
    let other =
        mine.as_array().unwrap().iter().find(|s| s["current"] == false).unwrap()["id"].as_str().unwrap().to_string();
    let revoked = api(&m, "DELETE", &format!("/api/users/me/sessions/{other}"), &boss, "").await;
    assert_eq!(revoked.status, 204, "{}", revoked.text());
    assert_eq!(by_token().await, 1.0);
}
