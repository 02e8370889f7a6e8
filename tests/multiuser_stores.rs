//! Multi-user mode on the real servers: users in PostgreSQL and sessions in Redis (the tests'
//! own, see testkit::services), through the real binary on the stand-in VS Code build. Two
//! fronts share one deployment; an outage of either server is a 503 (never a 500, never a pass)
//! and heals by itself; an unreachable server at start is an error naming its address.

use std::time::Duration;

use testkit::*;

const ADMIN: (&str, &str) = ("ADMIN_USERNAME", "boss");
const ADMIN_PW: (&str, &str) = ("ADMIN_PASSWORD", "boss-password-1");

/// The design's bound on how long a revocation may take to hold on another front.
const REVOCATION_BOUND: Duration = Duration::from_millis(1000);

fn config(database_url: &str, redis: Option<(&str, &str)>) -> String {
    let sessions = match redis {
        Some((url, prefix)) => format!(
            "    session:\n      store: redis\n      redis:\n        url: {url}\n        prefix: \"{prefix}\"\n"
        ),
        None => "    session:\n      store: database\n".to_string(),
    };
    format!(
        "deployment-mode: multi\nmulti-user:\n  isolation:\n    strategy: directory\n  auth:\n    database:\n      url: {database_url}\n{sessions}"
    )
}

fn front(config: &str) -> (Home, Server) {
    let home = Home::new();
    home.write_config(config);
    let server = Server::start(&home, &["--bind-addr", "127.0.0.1:0"], &[ADMIN, ADMIN_PW]);
    (home, server)
}

async fn me_status(s: &Server, cookie: &str) -> u16 {
    s.client().get_with("/api/users/me", &[("cookie", cookie)]).await.status.as_u16()
}

#[tokio::test]
async fn two_fronts_share_users_in_postgres_and_sessions_in_redis() {
    let db = postgres_database().await;
    let (redis, prefix) = redis_prefix();
    let cfg = config(&db, Some((&redis, &prefix)));
    let (_ha, a) = front(&cfg);
    let (_hb, b) = front(&cfg);

    // Signed in through A, known to B.
    let admin = sign_in(&a, "boss", "boss-password-1").await;
    assert_eq!(me_status(&b, &admin).await, 200);
    let created = api(&b, "POST", "/api/users", &admin, r#"{"username":"ada","password":"ada-password-1"}"#).await;
    assert_eq!(created.status, 201, "{}", created.text());
    let ada_id = created.json()["id"].as_str().unwrap().to_string();

    // A session revoked through B is refused by A within the bound, though A has it cached.
    let ada = sign_in(&a, "ada", "ada-password-1").await;
    assert_eq!(me_status(&a, &ada).await, 200, "A has just seen (and cached) the session");
    let sessions = b.client().get_with("/api/users/me/sessions", &[("cookie", &ada)]).await.json();
    let id = sessions[0]["id"].as_str().unwrap().to_string();
    let revoked = api(&b, "DELETE", &format!("/api/users/me/sessions/{id}"), &ada, "").await;
    assert_eq!(revoked.status, 204, "{}", revoked.text());
    tokio::time::sleep(REVOCATION_BOUND).await;
    assert_eq!(me_status(&a, &ada).await, 401, "A refuses the revoked session");

    // Her password changed through B (keeping that session): her session on A is refused
    // within the bound, and the new password works on A.
    let on_a = sign_in(&a, "ada", "ada-password-1").await;
    let on_b = sign_in(&b, "ada", "ada-password-1").await;
    assert_eq!(me_status(&a, &on_a).await, 200, "A has just seen (and cached) the session");
    let changed = api(
        &b,
        "PATCH",
        "/api/users/me",
        &on_b,
        r#"{"password":"ada-password-2","current_password":"ada-password-1"}"#,
    )
    .await;
    assert_eq!(changed.status, 200, "{}", changed.text());
    tokio::time::sleep(REVOCATION_BOUND).await;
    assert_eq!(me_status(&a, &on_a).await, 401, "A refuses a session from before the password change");
    let ada = sign_in(&a, "ada", "ada-password-2").await;
    assert_eq!(me_status(&b, &ada).await, 200);

    // Disabled through A: B refuses her next session within the bound.
    let ada = sign_in(&b, "ada", "ada-password-2").await;
    assert_eq!(me_status(&b, &ada).await, 200);
    let disabled = api(&a, "PATCH", &format!("/api/users/{ada_id}"), &admin, r#"{"active":false}"#).await;
    assert_eq!(disabled.status, 200, "{}", disabled.text());
    tokio::time::sleep(REVOCATION_BOUND).await;
    assert_eq!(me_status(&b, &ada).await, 401, "B refuses a disabled user's session");
    let again = b.client().post_form("/login", "username=ada&password=ada-password-2", &[]).await;
    assert_eq!(again.status, 200);
    assert!(again.text().contains("This account is disabled"), "{}", again.text());
}

/// A server the test owns, to stop and start again.
enum Owned<'a> {
    Redis(&'a mut PrivateRedis),
    Postgres(&'a mut PrivatePostgres),
}

impl Owned<'_> {
    async fn stop(&mut self) {
        match self {
            Owned::Redis(r) => r.stop().await,
            Owned::Postgres(p) => p.stop().await,
        }
    }

    async fn start_again(&mut self) {
        match self {
            Owned::Redis(r) => r.start_again().await,
            Owned::Postgres(p) => p.start_again().await,
        }
    }
}

/// While the store is down: our JSON and HTML errors are 503s with Retry-After, the workbench
/// and the port proxy refuse rather than pass, nothing says more than that; once it is back,
/// the same cookie works again within the design's five seconds.
async fn outage_then_heal(s: &Server, cookie: &str, mut server: Owned<'_>) {
    assert_eq!(me_status(s, cookie).await, 200);
    server.stop().await;
    // The session cache may answer for up to half a second; after that every request asks.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let json = s.client().get_with("/api/users/me", &[("cookie", cookie)]).await;
    assert_eq!(json.status, 503, "{}", json.text());
    assert!(json.header("retry-after").is_some(), "Retry-After");
    let text = json.text();
    assert!(json.json()["error"].as_str().is_some_and(|e| e.starts_with("Service Unavailable")), "{text}");
    assert!(
        !text.contains("127.0.0.1") && !text.contains("postgres") && !text.contains("edis"),
        "no internals: {text}"
    );
    let page = s.client().get_with("/", &[("cookie", cookie), ("accept", "text/html")]).await;
    assert_eq!(page.status, 503, "the workbench neither passes nor fails with a 500");
    assert!(page.text().contains("<html"), "an error page");
    let proxied = s.client().get_with("/proxy/1/", &[("cookie", cookie)]).await;
    assert_eq!(proxied.status, 503, "the port proxy neither passes nor fails with a 500");
    let login = s.client().post_form("/login", "username=boss&password=boss-password-1", &[]).await;
    assert_eq!(login.status, 503, "a login cannot be recorded: {}", login.text());
    server.start_again().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(me_status(s, cookie).await, 200, "service resumed by itself");
    let login = s.client().post_form("/login", "username=boss&password=boss-password-1", &[]).await;
    assert_eq!(login.status, 302, "logins work again: {}", login.text());
}

#[tokio::test]
async fn a_redis_outage_is_a_503_and_heals() {
    let db = postgres_database().await;
    let mut redis = PrivateRedis::start().await;
    let (_h, s) = front(&config(&db, Some((&redis.url(), "t:"))));
    let cookie = sign_in(&s, "boss", "boss-password-1").await;
    outage_then_heal(&s, &cookie, Owned::Redis(&mut redis)).await;
}

#[tokio::test]
async fn a_postgres_outage_is_a_503_and_heals() {
    let mut pg = PrivatePostgres::start().await;
    let db = pg.create_database().await;
    let (_h, s) = front(&config(&db, None));
    let cookie = sign_in(&s, "boss", "boss-password-1").await;
    outage_then_heal(&s, &cookie, Owned::Postgres(&mut pg)).await;
}

#[tokio::test]
async fn unreachable_servers_at_start_are_named() {
    let port = testkit::upstream::closed_port().await;
    let db_url = format!("postgres://code_server:hunter2secret@127.0.0.1:{port}/code_server");
    let home = Home::new();
    home.write_config(&config(&db_url, None));
    let out = run(&home, &["--bind-addr", "127.0.0.1:0"], &[ADMIN, ADMIN_PW]);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert_eq!(out.code, Some(1), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "names the address: {text}");
    assert!(!text.contains("hunter2secret"), "not the password: {text}");
    assert!(!text.contains("listening on"), "never listened: {text}");

    let db = postgres_database().await;
    let redis_url = format!("redis://:hunter2secret@127.0.0.1:{port}");
    let home = Home::new();
    home.write_config(&config(&db, Some((&redis_url, "t:"))));
    let out = run(&home, &["--bind-addr", "127.0.0.1:0"], &[ADMIN, ADMIN_PW]);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert_eq!(out.code, Some(1), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}")) && text.contains("Redis"), "names Redis' address: {text}");
    assert!(!text.contains("hunter2secret"), "not the password: {text}");
}
