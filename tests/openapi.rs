//! `/api/openapi.json`: the description is served to a signed-in user only, and a
//! property-based API fuzzer (schemathesis, from PyPI; scripts/test installs it) drives every
//! described operation of a real multi-user server with it: no 5xx, and every answer (its
//! status, content type and body) within what the description says.

use std::path::PathBuf;
use std::process::Command;

use testkit::*;

const ADMIN: (&str, &str) = ("ADMIN_USERNAME", "boss");
const ADMIN_PW: (&str, &str) = ("ADMIN_PASSWORD", "boss-password-1");

/// The schemathesis to run: `$CODE_SERVER_TEST_SCHEMATHESIS`, or one on PATH.
fn schemathesis() -> PathBuf {
    if let Some(p) = std::env::var_os("CODE_SERVER_TEST_SCHEMATHESIS") {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join("schemathesis")).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "schemathesis is not installed: scripts/test installs it (tests/api-fuzz/requirements.txt), \
             or set CODE_SERVER_TEST_SCHEMATHESIS"
        )
    })
}

fn multi(home: &Home) -> Server {
    home.write_config("deployment-mode: multi\nmulti-user:\n  isolation:\n    strategy: directory\n");
    // The fuzzer sends thousands of requests a minute: the API's rate limit (tested in
    // tests/ratelimit.rs) would answer most of them with a 429 and leave the routes untried.
    Server::start(home, &["--bind-addr", "127.0.0.1:0", "--rate-limit", "off"], &[ADMIN, ADMIN_PW])
}

/// A personal API token of the admin (the fuzzer's credentials).
async fn admin_token(s: &Server) -> String {
    let cookie = sign_in(s, "boss", "boss-password-1").await;
    let made = api(s, "POST", "/api/users/me/tokens", &cookie, r#"{"name":"fuzzer"}"#).await;
    assert_eq!(made.status, 201, "{}", made.text());
    made.json()["token_secret"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_description_is_for_signed_in_users_and_names_every_route() {
    let home = Home::new();
    let s = multi(&home);
    let anonymous = s.client().get("/api/openapi.json").await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());

    let token = admin_token(&s).await;
    let res = s.client().get_with("/api/openapi.json", &[("authorization", &format!("Bearer {token}"))]).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("content-type"), Some("application/json"));
    let doc = res.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let paths = doc["paths"].as_object().unwrap();
    for p in ["/api/users/me", "/api/users/me/tokens/{id}", "/api/users/{id}", "/api/audit", "/api/workspaces"] {
        assert!(paths.contains_key(p), "{p} in {:?}", paths.keys());
    }
    // What a user may not see is not described either: no hash, no token secret but the new one.
    let text = res.text();
    assert!(!text.contains("password_hash") && !text.contains("token_hash"), "{text}");

    // A plain user may read it too (it describes what they may call, and the admin routes'
    // 403), but it is never served in single-user mode, where /api is VS Code's.
    let single = Home::new();
    single.write_config("auth: none\n");
    let s1 = Server::start(&single, &["--bind-addr", "127.0.0.1:0"], &[]);
    let r = s1.client().get("/api/openapi.json").await;
    // The stand-in VS Code answers with the request it got.
    assert_eq!(r.json()["url"], "/api/openapi.json", "{}", r.text());
    assert!(r.json()["openapi"].is_null());
}

#[tokio::test]
async fn the_api_fuzzer_finds_no_server_error_and_no_answer_outside_the_description() {
    let fuzzer = schemathesis();
    let home = Home::new();
    let s = multi(&home);
    let token = admin_token(&s).await;
    let doc = s.client().get_with("/api/openapi.json", &[("authorization", &format!("Bearer {token}"))]).await;
    assert_eq!(doc.status, 200);
    let scratch = tempfile::tempdir().unwrap();
    let schema = scratch.path().join("openapi.json");
    std::fs::write(&schema, doc.text()).unwrap();

    let out = Command::new(&fuzzer)
        .arg("run")
        .arg(&schema)
        .args(["--url", &format!("http://{}", s.authority())])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        // What the issue asks of the API: no 5xx, and every answer's status, content type,
        // headers and body as described; that authentication is not ignored; and that what a
        // DELETE removed is gone. Positive and negative inputs both.
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,\
             response_schema_conformance,ignored_auth,use_after_free,unsupported_method",
        ])
        .args(["--mode", "all", "--max-examples", "40", "--seed", "1", "--workers", "2"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .arg("--no-color")
        // Hypothesis keeps its database in the working directory.
        .current_dir(scratch.path())
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(out.status.success(), "schemathesis found problems:\n{stdout}\n{stderr}");
    // It really ran the operations (a run that tested nothing also exits 0).
    assert!(stdout.contains("19 selected") || stdout.contains("19 total"), "{stdout}");
    // The server is still whole: the admin still signs in.
    sign_in(&s, "boss", "boss-password-1").await;
    assert_eq!(s.client().get("/healthz").await.status, 200);
}
