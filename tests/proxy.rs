//! The port proxy against stand-in upstreams started in this process: `/proxy`, `/absproxy`,
//! proxy domains, streaming, WebSockets and the switches.

use axum::body::Body;
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use hyper::http::StatusCode;
use serde_json::Value;
use testkit::upstream::{Pattern, Upstream, closed_port};
use testkit::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const PASSWORD: &str = "correct-horse";

/// Which way proxied requests go: every test here runs twice, with the express lane on (as it
/// is by default) and off (hyper's path alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    On,
    Off,
}

impl Lane {
    fn env(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Lane::On => &[],
            Lane::Off => &[("CODE_SERVER_EXPRESS_LANE", "off")],
        }
    }
}

/// Runs each named test body (an `async fn(Lane)`) once per lane.
macro_rules! both_lanes {
    ($($(#[$attr:meta])* $name:ident),* $(,)?) => {
        mod lane_on {
            $( $(#[$attr])* async fn $name() { super::$name(super::Lane::On).await } )*
        }
        mod lane_off {
            $( $(#[$attr])* async fn $name() { super::$name(super::Lane::Off).await } )*
        }
    };
}

/// A password-protected server with `args` in the test's own runtime, its home, and a
/// logged-in client's cookie.
async fn server(lane: Lane, args: &[&str], env: &[(&str, &str)]) -> (Home, InProcess, String) {
    let home = Home::new();
    home.write_config(&format!("auth: password\npassword: {PASSWORD}\n"));
    let mut env = env.to_vec();
    env.extend_from_slice(lane.env());
    let s = InProcess::start(&home, args, &env).await;
    let cookie = s.client().login(PASSWORD).await;
    (home, s, cookie)
}

/// The upstream's echo of a request.
struct Echo(Value);

impl Echo {
    fn of(r: &Resp) -> Echo {
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(r.header("x-echo"), Some("1"), "not the echo: {}", r.text());
        Echo(r.json())
    }
    fn method(&self) -> &str {
        self.0["method"].as_str().unwrap()
    }
    fn uri(&self) -> &str {
        self.0["uri"].as_str().unwrap()
    }
    fn headers(&self, name: &str) -> Vec<&str> {
        let list = self.0["headers"].as_array().unwrap();
        list.iter().filter(|p| p[0] == name).map(|p| p[1].as_str().unwrap()).collect()
    }
    fn header(&self, name: &str) -> Option<&str> {
        let all = self.headers(name);
        assert!(all.len() <= 1, "{name} sent {} times", all.len());
        all.first().copied()
    }
}

async fn path_proxy_forwards_every_method_path_query_and_header(lane: Lane) {
    let up = Upstream::start().await;
    let (_home, s, cookie) = server(lane, &[], &[]).await;
    let c = s.client();
    let p = up.port;

    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"] {
        let r = c.send(method, &format!("/proxy/{p}/m"), &[("cookie", &cookie)], Body::from("x")).await;
        let e = Echo::of(&r);
        assert_eq!(e.method(), method);
        assert_eq!(e.uri(), "/m");
    }

    // The prefix goes; everything after it arrives as sent, `//` and escapes included.
    let cases = [
        (format!("/proxy/{p}"), "/"),
        (format!("/proxy/{p}/"), "/"),
        (format!("/proxy/{p}?a=1"), "/?a=1"),
        (format!("/proxy/{p}/a//b/%2F%20%C3%A9?q=//x&&y=%2F+z"), "/a//b/%2F%20%C3%A9?q=//x&&y=%2F+z"),
        (format!("/proxy/{p}//double"), "//double"),
        (format!("/proxy/{p}/dir/"), "/dir/"),
    ];
    for (path, want) in &cases {
        let e = Echo::of(&c.get_with(path, &[("cookie", &cookie)]).await);
        assert_eq!(e.uri(), *want, "{path}");
    }

    // Headers: Host and the rest as sent; hop-by-hop ones dropped; our cookie removed and the
    // others forwarded byte for byte.
    let mixed = format!("a=1; {cookie}; theme=\"dark blue\"; b=%7B%7D");
    let r = c
        .get_with(
            &format!("/proxy/{p}/h"),
            &[
                ("host", "dev.example.com:8443"),
                ("cookie", &mixed),
                ("x-custom", "Value With  Spaces"),
                ("authorization", "Bearer abc"),
                ("x-forwarded-for", "10.0.0.1"),
                ("connection", "keep-alive, x-private"),
                ("x-private", "secret"),
                ("keep-alive", "timeout=5"),
                ("proxy-authorization", "Basic eDp5"),
                ("user-agent", "test/1"),
            ],
        )
        .await;
    let e = Echo::of(&r);
    assert_eq!(e.header("host"), Some("dev.example.com:8443"));
    assert_eq!(e.header("cookie"), Some("a=1; theme=\"dark blue\"; b=%7B%7D"));
    assert_eq!(e.header("x-custom"), Some("Value With  Spaces"));
    assert_eq!(e.header("authorization"), Some("Bearer abc"));
    assert_eq!(e.header("x-forwarded-for"), Some("10.0.0.1"), "passed as sent, nothing added");
    assert_eq!(e.header("user-agent"), Some("test/1"));
    for gone in ["x-private", "keep-alive", "proxy-authorization", "connection", "x-forwarded-host"] {
        assert_eq!(e.header(gone), None, "{gone}");
    }
    // Only our cookie: no Cookie header at all.
    let e = Echo::of(&c.get_with(&format!("/proxy/{p}/"), &[("cookie", &cookie)]).await);
    assert_eq!(e.header("cookie"), None);

    // The upstream's own errors pass through untouched.
    let r = c.get_with(&format!("/proxy/{p}/status/404"), &[("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.header("x-status"), Some("404"));
    let r = c.get_with(&format!("/proxy/{p}/status/500"), &[("cookie", &cookie), ("accept", "text/html")]).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.header("x-status"), Some("500"), "not replaced by our error page");
    assert_eq!(r.header("x-content-type-options"), None, "our own pages' headers are not added");
}

/// HTTP/1.0 may leave out Host; the upstream, spoken to in HTTP/1.1, still gets one: its own
/// address.
async fn a_request_without_host_names_the_upstream(lane: Lane) {
    let up = Upstream::start().await;
    let (_home, s, cookie) = server(lane, &[], &[]).await;
    let mut sock = tokio::net::TcpStream::connect(s.authority()).await.unwrap();
    let head = format!("GET /proxy/{}/echo?q HTTP/1.0\r\nCookie: {cookie}\r\n\r\n", up.port);
    sock.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    sock.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (status, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(status.starts_with("HTTP/1.0 200") || status.starts_with("HTTP/1.1 200"), "{raw}");
    let echo = Echo(serde_json::from_str(body).unwrap());
    assert_eq!(echo.uri(), "/echo?q");
    assert_eq!(echo.header("host"), Some(format!("127.0.0.1:{}", up.port).as_str()));
}

async fn absproxy_keeps_the_path_and_prepends_the_base_path(lane: Lane) {
    let up = Upstream::start().await;
    let p = up.port;
    let (_home, s, cookie) = server(lane, &[], &[]).await;
    let e = Echo::of(&s.client().get_with(&format!("/absproxy/{p}/a//b?q=1"), &[("cookie", &cookie)]).await);
    assert_eq!(e.uri(), format!("/absproxy/{p}/a//b?q=1"));
    let e = Echo::of(&s.client().get_with(&format!("/absproxy/{p}"), &[("cookie", &cookie)]).await);
    assert_eq!(e.uri(), format!("/absproxy/{p}"));

    let (_home, s, cookie) = server(lane, &["--abs-proxy-base-path", "/user/1/"], &[]).await;
    let e = Echo::of(&s.client().get_with(&format!("/absproxy/{p}/a?q=1"), &[("cookie", &cookie)]).await);
    assert_eq!(e.uri(), format!("/user/1/absproxy/{p}/a?q=1"));
}

async fn location_is_rewritten_under_proxy_only(lane: Lane) {
    let up = Upstream::start().await;
    let p = up.port;
    let (_home, s, cookie) = server(lane, &[], &[]).await;
    let c = s.client();
    let loc = |r: &Resp| r.header("location").map(str::to_string);

    let r = c.get_with(&format!("/proxy/{p}/redirect?to=/finale?x=1"), &[("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(loc(&r).as_deref(), Some(format!("/proxy/{p}/finale?x=1").as_str()));
    let r = c.get_with(&format!("/proxy/{p}/redirect?to=http://elsewhere/x"), &[("cookie", &cookie)]).await;
    assert_eq!(loc(&r).as_deref(), Some("http://elsewhere/x"));
    let r = c.get_with(&format!("/proxy/{p}/redirect?to=relative"), &[("cookie", &cookie)]).await;
    assert_eq!(loc(&r).as_deref(), Some("relative"));
    let r = c.get_with(&format!("/absproxy/{p}/redirect?to=/finale"), &[("cookie", &cookie)]).await;
    assert_eq!(loc(&r).as_deref(), Some("/finale"));
}

async fn bad_ports_closed_ports_and_timeouts(lane: Lane) {
    let up = Upstream::start().await;
    let (_home, s, cookie) = server(lane, &["--proxy-timeout", "1s"], &[]).await;
    let c = s.client();

    for bad in ["abc", "0", "65536", "80a", "-1", "%33%30"] {
        for prefix in ["proxy", "absproxy"] {
            let r = c.get_with(&format!("/{prefix}/{bad}/x"), &[("cookie", &cookie)]).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{prefix}/{bad}");
            assert_eq!(r.json(), serde_json::json!({"error": "Invalid port"}));
        }
    }

    let closed = closed_port().await;
    let r = c.get_with(&format!("/proxy/{closed}/x"), &[("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    let msg = r.json()["error"].as_str().unwrap().to_string();
    assert!(msg.contains(&closed.to_string()), "{msg}");
    for leak in ["ECONNREFUSED", "os error", "127.0.0.1", "hyper", "Connect"] {
        assert!(!msg.contains(leak), "{msg}");
    }
    let r = c.get_with(&format!("/proxy/{closed}/x"), &[("cookie", &cookie), ("accept", "text/html")]).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));

    let r = c.get_with(&format!("/proxy/{}/slow", up.port), &[("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(r.json()["error"].as_str().unwrap().contains(&up.port.to_string()));
    let r = c.get_with(&format!("/proxy/{}/slow", up.port), &[("cookie", &cookie), ("accept", "text/html")]).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.text().contains(&up.port.to_string()));
    // The proxy still works afterwards.
    Echo::of(&c.get_with(&format!("/proxy/{}/ok", up.port), &[("cookie", &cookie)]).await);

    // Something that does not speak HTTP: 502, without its words.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let garbage = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let _ = sock.write_all(b"SSH-2.0-OpenSSH_9.2\r\nProtocol mismatch.\r\n\r\n").await;
        }
    });
    let r = c.get_with(&format!("/proxy/{garbage}/"), &[("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    let msg = r.json()["error"].as_str().unwrap().to_string();
    assert!(msg.contains(&garbage.to_string()) && !msg.contains("SSH"), "{msg}");
}

async fn unauthenticated_requests_go_to_login_or_get_401(lane: Lane) {
    let up = Upstream::start().await;
    let p = up.port;
    let (_home, s, _cookie) = server(lane, &[], &[]).await;
    let c = s.client();

    // The proxy's root sends a browser to log in, keeping the way back.
    let r = c.get(&format!("/proxy/{p}")).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.header("location"), Some(format!("./../login?to=/proxy/{p}").as_str()));
    let r = c.get(&format!("/proxy/{p}/?a=1")).await;
    assert_eq!(r.header("location"), Some(format!("./../../login?a=1&to=/proxy/{p}/").as_str()));
    let r = c.get(&format!("/absproxy/{p}/")).await;
    assert_eq!(r.header("location"), Some(format!("./../../login?to=/absproxy/{p}/").as_str()));
    // Following it and logging in lands back on the proxy.
    let r = c.post_form(&format!("/login?to=/proxy/{p}/"), &format!("password={PASSWORD}"), &[]).await;
    assert_eq!(r.header("location"), Some(format!("./proxy/{p}/").as_str()));

    // Anything deeper, or another method, is a 401 (HTML for browsers).
    let r = c.get(&format!("/proxy/{p}/api")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json(), serde_json::json!({"error": "Unauthorized"}));
    let r = c.get_with(&format!("/proxy/{p}/page"), &[("accept", "text/html")]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.text().contains("401"));
    assert_eq!(c.send("POST", &format!("/proxy/{p}/"), &[], Body::empty()).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(c.send("OPTIONS", &format!("/proxy/{p}/x"), &[], Body::empty()).await.status, StatusCode::UNAUTHORIZED);
    // A wrong session is no session, and is not passed on.
    let r = c.get_with(&format!("/proxy/{p}/api"), &[("cookie", "code-server-session=00")]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // --skip-auth-preflight lets OPTIONS through, and only OPTIONS.
    let (_home, s, _) = server(lane, &["--skip-auth-preflight"], &[]).await;
    let c = s.client();
    let r = c.send("OPTIONS", &format!("/proxy/{p}/x"), &[("origin", "http://a.test")], Body::empty()).await;
    assert_eq!(Echo::of(&r).method(), "OPTIONS");
    assert_eq!(c.get(&format!("/proxy/{p}/x")).await.status, StatusCode::UNAUTHORIZED);
}

async fn disable_proxy_forbids_every_route(lane: Lane) {
    let up = Upstream::start().await;
    let p = up.port;
    for (args, env) in [
        (vec!["--disable-proxy", "--proxy-domain", "example.test"], vec![]),
        (vec!["--proxy-domain", "example.test"], vec![("CS_DISABLE_PROXY", "1")]),
    ] {
        let (_home, s, cookie) = server(lane, &args, &env).await;
        let c = s.client();
        for path in [format!("/proxy/{p}/"), format!("/proxy/{p}/x"), format!("/absproxy/{p}/x")] {
            let r = c.get_with(&path, &[("cookie", &cookie)]).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
            assert_eq!(r.json(), serde_json::json!({"error": "Forbidden"}));
            // Even without a session: the switch comes first.
            assert_eq!(c.get(&path).await.status, StatusCode::FORBIDDEN);
        }
        let host = format!("{p}.example.test");
        let r = c.get_with("/x", &[("cookie", &cookie), ("host", &host)]).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        let r = c.get_with("/x", &[("cookie", &cookie), ("host", &host), ("accept", "text/html")]).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert!(r.header("content-type").unwrap().starts_with("text/html"));
        let err = ws_connect(&s, &format!("/proxy/{p}/ws"), &[("cookie", &cookie)]).await.unwrap_err();
        assert_eq!(err, StatusCode::FORBIDDEN);
    }
}

async fn events_and_long_polls_arrive_as_they_are_written(lane: Lane) {
    let up = Upstream::start().await;
    let (_home, s, cookie) = server(lane, &[], &[]).await;
    let c = s.client();

    let res = c.stream("GET", &format!("/proxy/{}/sse", up.port), &[("cookie", &cookie)], Body::empty()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.into_body();
    // The first event arrives while the upstream is still waiting to send the second. (The
    // timeout only turns a buffering proxy's hang into a failure.)
    let first = tokio::time::timeout(std::time::Duration::from_secs(30), body.frame())
        .await
        .expect("the first event was held back")
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(&first[..], b"data: one\n\n");
    up.release();
    let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&second[..], b"data: two\n\n");
    assert!(body.frame().await.is_none());

    // A long poll: the answer comes when the upstream has one.
    let poll = tokio::spawn({
        let c = c.clone();
        let path = format!("/proxy/{}/hold", up.port);
        let cookie = cookie.clone();
        async move { c.get_with(&path, &[("cookie", &cookie)]).await }
    });
    // It cannot finish before the upstream is released, however long we look away.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(!poll.is_finished());
    up.release();
    assert_eq!(poll.await.unwrap().text(), "released");
}

async fn large_bodies_stream_both_ways_intact(lane: Lane) {
    const SIZE: u64 = 256 * 1024 * 1024;
    let up = Upstream::start().await;
    let (_home, s, cookie) = server(lane, &[], &[]).await;
    let c = s.client();
    let want = Pattern::sha256(SIZE);

    // Upload, chunked (no length) and with a length.
    for exact in [false, true] {
        let r = c
            .send(
                "PUT",
                &format!("/proxy/{}/upload", up.port),
                &[("cookie", &cookie)],
                Body::new(Pattern::new(SIZE, exact)),
            )
            .await;
        let e = Echo::of(&r);
        assert_eq!(e.0["body_len"], SIZE, "exact length: {exact}");
        assert_eq!(e.0["body_sha256"], want.as_str());
        assert_eq!(e.header("transfer-encoding").is_some(), !exact);
    }

    // Download, with and without a length, hashed as it streams.
    for query in ["", "&chunked"] {
        let path = format!("/proxy/{}/download?size={SIZE}{query}", up.port);
        let res = c.stream("GET", &path, &[("cookie", &cookie)], Body::empty()).await;
        assert_eq!(res.status(), StatusCode::OK);
        let length = res.headers().get("content-length").map(|v| v.to_str().unwrap().to_string());
        assert_eq!(length, query.is_empty().then(|| SIZE.to_string()));
        let mut body = res.into_body();
        let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
        let mut len = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                len += data.len() as u64;
                hash.update(&data);
            }
        }
        assert_eq!(len, SIZE);
        assert_eq!(upstream::hex(hash.finish().as_ref()), want);
    }
}

async fn head_204_and_304(lane: Lane) {
    let up = Upstream::start().await;
    let (_home, s, cookie) = server(lane, &[], &[]).await;
    let c = s.client();
    let p = up.port;

    let get = c.get_with(&format!("/proxy/{p}/x"), &[("cookie", &cookie)]).await;
    let head = c.send("HEAD", &format!("/proxy/{p}/x"), &[("cookie", &cookie)], Body::empty()).await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    let len: usize = head.header("content-length").unwrap().parse().unwrap();
    assert!(len > 0 && get.body.len().abs_diff(len) < 8, "HEAD announces the GET's length");

    let r = c.get_with(&format!("/proxy/{p}/status/204"), &[("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.body.is_empty());
    assert_eq!(r.header("transfer-encoding"), None);
    let r = c.get_with(&format!("/proxy/{p}/status/304"), &[("cookie", &cookie), ("if-none-match", "\"v1\"")]).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert_eq!(r.header("etag"), Some("\"v1\""));
    assert!(r.body.is_empty());
}

/// Reads from a raw socket until `marker` has been seen.
async fn read_until(sock: &mut tokio::net::TcpStream, buf: &mut Vec<u8>, marker: &[u8]) {
    while !buf.windows(marker.len()).any(|w| w == marker) {
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed; got {}", String::from_utf8_lossy(buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn expect_continue_and_trailers(lane: Lane) {
    let up = Upstream::start().await;
    let (_home, s, cookie) = server(lane, &[], &[]).await;
    let p = up.port;

    // Expect: 100-continue: the interim answer comes once the upstream is reading, then the body
    // goes through.
    let mut sock = tokio::net::TcpStream::connect(s.authority()).await.unwrap();
    let head = format!(
        "POST /proxy/{p}/up HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    read_until(&mut sock, &mut buf, b"\r\n\r\n").await;
    assert!(buf.starts_with(b"HTTP/1.1 100 Continue\r\n"), "{}", String::from_utf8_lossy(&buf));
    sock.write_all(b"hello world").await.unwrap();
    buf.clear();
    read_until(&mut sock, &mut buf, b"\"trailers\"").await;
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("\"body_len\":11"), "{text}");

    // Trailers: the request's reach the upstream, the upstream's reach a client that accepts them.
    let c = s.client();
    let body = Body::new(upstream::WithTrailers { data: Some("abc".into()), trailer_sent: false });
    let r = c.send("POST", &format!("/proxy/{p}/t"), &[("cookie", &cookie), ("trailer", "x-checksum")], body).await;
    let e = Echo::of(&r);
    assert_eq!(e.0["body_len"], 3);
    assert_eq!(e.0["trailers"], serde_json::json!([["x-checksum", "abc"]]));

    let res = c
        .stream("GET", &format!("/proxy/{p}/trailers"), &[("cookie", &cookie), ("te", "trailers")], Body::empty())
        .await;
    let collected = res.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    assert_eq!(&collected.to_bytes()[..], b"payload");
    assert_eq!(trailers.unwrap()["x-checksum"], "abc");
}

async fn domain_proxy(lane: Lane) {
    let up = Upstream::start().await;
    let p = up.port;
    let (_home, s, cookie) =
        server(lane, &["--proxy-domain", "*.example.test", "--proxy-domain", "code-{{port}}-{{host}}"], &[]).await;
    let c = s.client();
    let host = format!("{p}.example.test");

    // Authenticated: the whole URL goes to the port, untouched; redirects are not rewritten.
    let e = Echo::of(&c.get_with("/a//b?x=%2F", &[("cookie", &cookie), ("host", &host)]).await);
    assert_eq!(e.uri(), "/a//b?x=%2F");
    assert_eq!(e.header("host"), Some(host.as_str()));
    assert_eq!(e.header("cookie"), None);
    for h in [format!("{p}.example.test:8443"), format!("code-{p}-box.dev"), format!("{p}.EXAMPLE.test")] {
        Echo::of(&c.get_with("/", &[("cookie", &cookie), ("host", &h)]).await);
    }
    // The host a reverse proxy forwarded counts.
    let e = Echo::of(&c.get_with("/fwd", &[("cookie", &cookie), ("x-forwarded-host", &host)]).await);
    assert_eq!(e.uri(), "/fwd");
    let e =
        Echo::of(&c.get_with("/fwd", &[("cookie", &cookie), ("forwarded", &format!("for=1.2.3.4;host={host}"))]).await);
    assert_eq!(e.uri(), "/fwd");
    // Every path is the app's, ours included.
    for path in ["/login", "/healthz", "/robots.txt", "/proxy/1/x", "/_static/src/browser/pages/login.css"] {
        let e = Echo::of(&c.get_with(path, &[("cookie", &cookie), ("host", &host)]).await);
        assert_eq!(e.uri(), path);
    }
    let r = c.get_with("/redirect?to=/there", &[("cookie", &cookie), ("host", &host)]).await;
    assert_eq!(r.header("location"), Some("/there"));

    // Not logged in: browsers are sent to log in on the same host, keeping the way back; the
    // login page and its assets are ours there; anything else is 401.
    let r = c.get_with("/a/b?x=1", &[("host", &host), ("accept", "text/html")]).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.header("location"), Some("./../login?x=1&to=/a/b"));
    let r = c.get_with("/", &[("host", &host), ("accept", "text/html")]).await;
    assert_eq!(r.header("location"), Some("./login"));
    let r = c.get_with("/login", &[("host", &host), ("accept", "text/html")]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains("login-form"));
    let r = c.get_with("/_static/src/browser/pages/login.css", &[("host", &host)]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-echo"), None);
    let r = c.get_with("/api", &[("host", &host)]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json(), serde_json::json!({"error": "Unauthorized"}));
    assert_eq!(c.send("OPTIONS", "/api", &[("host", &host)], Body::empty()).await.status, StatusCode::UNAUTHORIZED);
    // Logging in on the proxied host works and sends the browser back.
    let r = c
        .post_form("/login?to=/a/b", &format!("password={PASSWORD}"), &[("host", &host), ("accept", "text/html")])
        .await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(r.header("location"), Some("./a/b"));
    let fresh = r.session_cookie().unwrap();
    Echo::of(&c.get_with("/a/b", &[("cookie", &fresh), ("host", &host)]).await);

    // Hosts that do not match are ours; so is our own port (proxying it would loop).
    for h in ["example.test", "x.example.test", "3000.example.test.evil", "localhost"] {
        let r = c.get_with("/healthz", &[("cookie", &cookie), ("host", h)]).await;
        assert_eq!(r.status, StatusCode::OK, "{h}");
        assert!(r.json().get("status").is_some(), "{h}");
    }
    let own = s.authority().rsplit_once(':').unwrap().1.to_string();
    let r = c.get_with("/healthz", &[("cookie", &cookie), ("host", &format!("{own}.example.test"))]).await;
    assert!(r.json().get("status").is_some());
    // A matching host with an impossible port.
    let r = c.get_with("/", &[("cookie", &cookie), ("host", "99999.example.test")]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // --skip-auth-preflight: preflights on a proxied host reach the app.
    let (_home, s, _) = server(lane, &["--proxy-domain", "example.test", "--skip-auth-preflight"], &[]).await;
    let r = s.client().send("OPTIONS", "/api", &[("host", &host)], Body::empty()).await;
    assert_eq!(Echo::of(&r).method(), "OPTIONS");
}

/// Opens a WebSocket sent with a cookie `a=1` besides ours, subprotocols `chat.v2, chat.v1` and
/// extension `x-test; level=3`, and checks what the upstream saw and chose: the subprotocol,
/// the extension, only the other cookie, and `want_path`.
async fn proxied_ws(
    s: &impl Served,
    path: &str,
    headers: &[(&str, &str)],
    want_path: &str,
) -> (tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, hyper::http::Response<Option<Vec<u8>>>) {
    let (ws, res) = ws_connect(s, path, headers).await.unwrap_or_else(|st| panic!("{path}: {st}"));
    let h = res.headers();
    assert_eq!(h["sec-websocket-protocol"], "chat.v2");
    assert_eq!(h["x-seen-extensions"], "x-test; level=3");
    assert_eq!(h["x-seen-cookie"], "a=1");
    assert_eq!(h["x-seen-path"], want_path);
    (ws, res)
}

async fn round_trip(ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) {
    let binary: Vec<u8> = (0..=255u8).chain([0, 0, 255]).collect();
    for msg in [Message::Text("hello".into()), Message::Binary(binary.into()), Message::Text("é ✓".into())] {
        ws.send(msg.clone()).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), msg);
    }
    // A large message crosses in many reads.
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    ws.send(Message::Binary(big.clone().into())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::Binary(big.into()));
    ws.close(None).await.unwrap();
}

async fn websockets_on_every_route(lane: Lane) {
    let up = Upstream::start().await;
    let p = up.port;
    let (_home, s, cookie) =
        server(lane, &["--proxy-domain", "example.test", "--abs-proxy-base-path", "/base"], &[]).await;
    let host = format!("{p}.example.test");
    let mixed = format!("a=1; {cookie}");
    let common = [
        ("cookie", mixed.as_str()),
        ("sec-websocket-protocol", "chat.v2, chat.v1"),
        ("sec-websocket-extensions", "x-test; level=3"),
    ];

    for (path, extra, want_path) in [
        (format!("/proxy/{p}/ws?t=1"), None, "/ws?t=1".to_string()),
        (format!("/absproxy/{p}/ws"), None, format!("/base/absproxy/{p}/ws")),
        ("/ws/deep?x=%2F".to_string(), Some(("host", host.as_str())), "/ws/deep?x=%2F".to_string()),
    ] {
        let mut headers = common.to_vec();
        headers.extend(extra);
        let (mut ws, res) = proxied_ws(&s, &path, &headers, &want_path).await;
        if let Some((_, host)) = extra {
            assert_eq!(res.headers()["x-seen-host"], host);
        }
        round_trip(&mut ws).await;
    }

    // An Origin of another site is refused before anything else; a matching one passes.
    let authority = s.authority();
    let evil = [("cookie", cookie.as_str()), ("origin", "http://evil.test")];
    assert_eq!(ws_connect(&s, &format!("/proxy/{p}/ws"), &evil).await.unwrap_err(), StatusCode::FORBIDDEN);
    let no_session = [("origin", "http://evil.test")];
    assert_eq!(ws_connect(&s, &format!("/proxy/{p}/ws"), &no_session).await.unwrap_err(), StatusCode::FORBIDDEN);
    let evil_domain = [("cookie", cookie.as_str()), ("origin", "http://evil.test"), ("host", host.as_str())];
    assert_eq!(ws_connect(&s, "/ws", &evil_domain).await.unwrap_err(), StatusCode::FORBIDDEN);
    let own = format!("http://{authority}");
    let (mut ws, _) =
        ws_connect(&s, &format!("/proxy/{p}/ws"), &[("cookie", &cookie), ("origin", &own)]).await.unwrap();
    round_trip(&mut ws).await;
    let own_domain = format!("http://{host}");
    let (mut ws, _) =
        ws_connect(&s, "/ws", &[("cookie", &cookie), ("origin", &own_domain), ("host", &host)]).await.unwrap();
    round_trip(&mut ws).await;

    // No session: 401 on every route.
    for (path, headers) in [
        (format!("/proxy/{p}/ws"), vec![]),
        (format!("/absproxy/{p}/ws"), vec![]),
        ("/ws".to_string(), vec![("host", host.as_str())]),
    ] {
        assert_eq!(ws_connect(&s, &path, &headers).await.unwrap_err(), StatusCode::UNAUTHORIZED, "{path}");
    }

    // A closed port is a 502.
    let closed = closed_port().await;
    let r = ws_connect(&s, &format!("/proxy/{closed}/ws"), &[("cookie", &cookie)]).await;
    assert_eq!(r.unwrap_err(), StatusCode::BAD_GATEWAY);
}

async fn proxied_requests_count_as_activity_and_auth_none_needs_no_session(lane: Lane) {
    let up = Upstream::start().await;
    let home = Home::new();
    let s = Server::start(&home, &["--bind-addr", "127.0.0.1:0", "--auth", "none"], lane.env());
    let c = s.client();
    assert_eq!(c.get("/healthz").await.json()["status"], "expired");
    let e = Echo::of(&c.get(&format!("/proxy/{}/x", up.port)).await);
    assert_eq!(e.uri(), "/x");
    assert_eq!(c.get("/healthz").await.json()["status"], "alive");
}

async fn a_slow_upload_is_not_cut_off_by_the_timeout(lane: Lane) {
    let up = Upstream::start().await;
    let (_home, s, cookie) = server(lane, &["--proxy-timeout", "1s"], &[]).await;
    // Eight chunks a quarter of a second apart: the whole upload outlasts the timeout, but the
    // upstream is never kept waiting for that long.
    let chunks = futures_util::stream::unfold(0u8, |i| async move {
        if i == 8 {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        Some((Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(vec![i; 1000])), i + 1))
    });
    let r = s
        .client()
        .send("POST", &format!("/proxy/{}/slow-upload", up.port), &[("cookie", &cookie)], Body::from_stream(chunks))
        .await;
    assert_eq!(Echo::of(&r).0["body_len"], 8000);
}

async fn keep_alive_reuses_upstream_connections_and_hands_over_mid_connection(lane: Lane) {
    let up = Upstream::start().await;
    let (_home, s, cookie) = server(lane, &[], &[]).await;
    let tcp = tokio::net::TcpStream::connect(s.authority()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let mut get = async |path: &str| {
        let req = hyper::Request::get(path).header("host", "h").header("cookie", &cookie).body(Body::empty()).unwrap();
        sender.ready().await.unwrap();
        collect(sender.send_request(req).await.unwrap()).await
    };
    // Bodies ending exactly at a read, chunked, empty, and an echo: one upstream connection.
    let p = up.port;
    for path in [
        format!("/proxy/{p}/download?size=70000"),
        format!("/proxy/{p}/download?size=70000&chunked"),
        format!("/proxy/{p}/status/204"),
        format!("/proxy/{p}/echo"),
    ] {
        for _ in 0..3 {
            let r = get(&path).await;
            assert!(r.status.is_success(), "{path}: {}", r.status);
        }
    }
    assert_eq!(up.connections(), 1, "the upstream connection is reused");
    // A request of ours on the same connection, then proxied ones again: all answered.
    let health = get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    assert!(health.json()["status"].is_string(), "{}", health.text());
    // Served by hyper from here on, over the same pool: still the one upstream connection,
    // whatever the framing, a chunked upload included.
    assert_eq!(Echo::of(&get(&format!("/proxy/{p}/echo?after")).await).uri(), "/echo?after");
    for path in [format!("/proxy/{p}/download?size=70000&chunked"), format!("/proxy/{p}/status/204")] {
        assert!(get(&path).await.status.is_success(), "{path}");
    }
    let chunks = futures_util::stream::iter(["a", "bc"].map(|c| Ok::<_, std::io::Error>(axum::body::Bytes::from(c))));
    let upload = hyper::Request::post(format!("/proxy/{p}/echo"))
        .header("host", "h")
        .header("cookie", &cookie)
        .body(Body::from_stream(chunks))
        .unwrap();
    sender.ready().await.unwrap();
    let echoed = collect(sender.send_request(upload).await.unwrap()).await;
    assert_eq!(Echo::of(&echoed).0["body_len"], 3);
    assert_eq!(up.connections(), 1, "hyper's path takes its connection from the same pool");
    let unauthenticated = hyper::Request::get(format!("/proxy/{p}/x")).header("host", "h").body(Body::empty()).unwrap();
    sender.ready().await.unwrap();
    assert_eq!(sender.send_request(unauthenticated).await.unwrap().status(), StatusCode::UNAUTHORIZED);
}

/// An upstream that answers each connection's first request as if it would keep the connection,
/// then closes it when the second one arrives, unanswered: what a server that reaps idle
/// connections looks like to a proxy that sends on one just as it goes.
async fn one_answer_per_connection() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let mut head = Vec::new();
                read_until(&mut sock, &mut head, b"\r\n\r\n").await;
                let _ = sock.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
                // Wait for the next request (or the proxy's close), and close without a word.
                let _ = sock.read(&mut [0u8; 1024]).await;
            });
        }
    });
    port
}

async fn a_stale_upstream_connection_is_replaced_not_reported(lane: Lane) {
    let port = one_answer_per_connection().await;
    let (_home, s, cookie) = server(lane, &[], &[]).await;
    let tcp = tokio::net::TcpStream::connect(s.authority()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    for i in 0..20 {
        // Half-way, a request of ours hands the connection to hyper, whose path retries too.
        if i == 10 {
            let health = hyper::Request::get("/healthz").header("host", "h").body(Body::empty()).unwrap();
            sender.ready().await.unwrap();
            assert_eq!(sender.send_request(health).await.unwrap().status(), StatusCode::OK);
        }
        let req = hyper::Request::get(format!("/proxy/{port}/{i}"))
            .header("host", "h")
            .header("cookie", &cookie)
            .body(Body::empty())
            .unwrap();
        sender.ready().await.unwrap();
        let r = collect(sender.send_request(req).await.unwrap()).await;
        assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "ok"), "request {i}");
    }
}

async fn websockets_when_connections_start_in_the_express_lane(lane: Lane) {
    // Without proxy domains, connections start in the express lane, which hands a WebSocket
    // handshake (on a fresh connection or after other proxied requests) to hyper.
    let up = Upstream::start().await;
    let p = up.port;
    let (_home, s, cookie) = server(lane, &["--abs-proxy-base-path", "/base"], &[]).await;
    let mixed = format!("a=1; {cookie}");
    let headers = [
        ("cookie", mixed.as_str()),
        ("sec-websocket-protocol", "chat.v2, chat.v1"),
        ("sec-websocket-extensions", "x-test; level=3"),
    ];
    for (path, want_path) in [
        (format!("/proxy/{p}/ws?t=1"), "/ws?t=1".to_string()),
        (format!("/absproxy/{p}/ws"), format!("/base/absproxy/{p}/ws")),
    ] {
        let (mut ws, _) = proxied_ws(&s, &path, &headers, &want_path).await;
        round_trip(&mut ws).await;
    }
    let evil = [("cookie", cookie.as_str()), ("origin", "http://evil.test")];
    assert_eq!(ws_connect(&s, &format!("/proxy/{p}/ws"), &evil).await.unwrap_err(), StatusCode::FORBIDDEN);
    let own = format!("http://{}", s.authority());
    let (mut ws, _) =
        ws_connect(&s, &format!("/proxy/{p}/ws"), &[("cookie", &cookie), ("origin", &own)]).await.unwrap();
    round_trip(&mut ws).await;
    assert_eq!(ws_connect(&s, &format!("/proxy/{p}/ws"), &[]).await.unwrap_err(), StatusCode::UNAUTHORIZED);
    let closed = closed_port().await;
    let r = ws_connect(&s, &format!("/proxy/{closed}/ws"), &[("cookie", &cookie)]).await;
    assert_eq!(r.unwrap_err(), StatusCode::BAD_GATEWAY);

    // An open one is closed at shutdown, and the whole shutdown finishes (nothing forces it).
    let (mut ws, _) = ws_connect(&s, &format!("/proxy/{p}/ws"), &[("cookie", &cookie)]).await.unwrap();
    ws.send(Message::Text("still here".into())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::Text("still here".into()));
    let stopping = tokio::spawn(s.stop());
    let end =
        tokio::time::timeout(std::time::Duration::from_secs(20), async { while let Some(Ok(_)) = ws.next().await {} });
    end.await.expect("the WebSocket is closed at shutdown");
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(30), stopping).await;
    assert_eq!(stopped.expect("shutdown finishes").unwrap(), code_server::app::Stop::Signal);
}

both_lanes! {
    #[tokio::test] path_proxy_forwards_every_method_path_query_and_header,
    #[tokio::test] a_request_without_host_names_the_upstream,
    #[tokio::test] absproxy_keeps_the_path_and_prepends_the_base_path,
    #[tokio::test] location_is_rewritten_under_proxy_only,
    #[tokio::test] bad_ports_closed_ports_and_timeouts,
    #[tokio::test] unauthenticated_requests_go_to_login_or_get_401,
    #[tokio::test] disable_proxy_forbids_every_route,
    #[tokio::test] events_and_long_polls_arrive_as_they_are_written,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] large_bodies_stream_both_ways_intact,
    #[tokio::test] head_204_and_304,
    #[tokio::test] expect_continue_and_trailers,
    #[tokio::test] domain_proxy,
    #[tokio::test] websockets_on_every_route,
    #[tokio::test] proxied_requests_count_as_activity_and_auth_none_needs_no_session,
    #[tokio::test] a_slow_upload_is_not_cut_off_by_the_timeout,
    #[tokio::test] keep_alive_reuses_upstream_connections_and_hands_over_mid_connection,
    #[tokio::test] a_stale_upstream_connection_is_replaced_not_reported,
    #[tokio::test] websockets_when_connections_start_in_the_express_lane,
}
