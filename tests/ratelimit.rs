//! `--rate-limit`: per signed-in user and per address, with the RateLimit headers, 429 and
//! Retry-After; never on `/healthz` or the port proxy; `off` turns it off.

use axum::body::Body;
use testkit::*;

const ADMIN: (&str, &str) = ("ADMIN_USERNAME", "boss");
const ADMIN_PW: (&str, &str) = ("ADMIN_PASSWORD", "boss-password-1");

fn multi(rate: &str) -> (Home, Server) {
    let home = Home::new();
    home.write_config("deployment-mode: multi\nmulti-user:\n  isolation:\n    strategy: directory\n");
    let s = Server::start(&home, &["--bind-addr", "127.0.0.1:0", "--rate-limit", rate], &[ADMIN, ADMIN_PW]);
    (home, s)
}

fn header_num(r: &Resp, name: &str) -> u64 {
    r.header(name).unwrap_or_else(|| panic!("{name} missing: {:?}", r.headers)).parse().unwrap()
}

#[tokio::test]
async fn a_user_past_the_api_limit_gets_429_with_retry_after_and_others_go_on() {
    let (_home, s) = multi("strict");
    let boss = sign_in(&s, "boss", "boss-password-1").await;
    let origin = format!("http://{}", s.authority());
    let made = s
        .client()
        .send(
            "POST",
            "/api/users",
            &[("cookie", &boss), ("origin", &origin), ("content-type", "application/json")],
            Body::from(r#"{"username":"ada","password":"ada-password-1"}"#),
        )
        .await;
    assert_eq!(made.status, 201, "{}", made.text());
    let ada = sign_in(&s, "ada", "ada-password-1").await;

    // strict: 120 API requests a minute per user. The headers count down, then 429.
    let first = s.client().get_with("/api/users/me", &[("cookie", &boss)]).await;
    assert_eq!(first.status, 200);
    assert_eq!(header_num(&first, "ratelimit-limit"), 120);
    assert_eq!(header_num(&first, "x-ratelimit-limit"), 120);
    let mut last = first;
    for _ in 0..140 {
        last = s.client().get_with("/api/users/me", &[("cookie", &boss)]).await;
        if last.status == 429 {
            break;
        }
    }
    assert_eq!(last.status, 429, "{}", last.text());
    assert_eq!(header_num(&last, "ratelimit-remaining"), 0);
    let retry: u64 = last.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(last.json()["error"].as_str().unwrap().starts_with("Too many requests"), "{}", last.text());

    // Another user from the same address goes on (the address's own limit is twice as high).
    let other = s.client().get_with("/api/users/me", &[("cookie", &ada)]).await;
    assert_eq!(other.status, 200, "{}", other.text());
    // Health checks and the port proxy are never limited.
    assert_eq!(s.client().get("/healthz").await.status, 200);
    let up = upstream::Upstream::start().await;
    let proxied = s.client().get_with(&format!("/proxy/{}/", up.port), &[("cookie", &boss)]).await;
    assert_eq!(proxied.status, 200, "{}", proxied.text());
    assert!(proxied.header("ratelimit-limit").is_none());
    // Counted for the operator.
    let metrics = s.client().get_with("/metrics", &[("cookie", &boss)]).await.text();
    let refused = metrics.lines().find_map(|l| l.strip_prefix("code_server_rate_limited_requests_total ")).unwrap();
    assert!(refused.trim().parse::<u64>().unwrap() >= 1, "{metrics}");
}

#[tokio::test]
async fn off_means_no_limit_and_no_headers() {
    let (_home, s) = multi("off");
    let boss = sign_in(&s, "boss", "boss-password-1").await;
    for _ in 0..150 {
        let r = s.client().get_with("/api/users/me", &[("cookie", &boss)]).await;
        assert_eq!(r.status, 200);
        assert!(r.header("ratelimit-limit").is_none());
    }
}

#[tokio::test]
async fn single_user_mode_has_the_standard_limits_by_default() {
    let home = Home::new();
    let (s, cookie) = fake_server(&home, &[], &[]).await;
    let page = s.client().get_with("/login", &[]).await;
    assert_eq!(header_num(&page, "ratelimit-limit"), 12000, "an address's traffic");
    let update = s.client().get_with("/update/check", &[("cookie", &cookie)]).await;
    assert_eq!(header_num(&update, "ratelimit-limit"), 600, "the owner's API");
}
