//! Our dynamic responses (the login page, `/update/check`, multi-user mode's API and pages) are
//! compressed by `Accept-Encoding`, brotli or gzip; static files keep their own precompressed
//! forms, and nothing forwarded to VS Code or proxied to a dev server is touched.

use std::io::Read;

use testkit::upstream::Upstream;
use testkit::*;

fn brotli(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    brotli::Decompressor::new(bytes, 4096).read_to_end(&mut out).expect("valid brotli");
    out
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).expect("valid gzip");
    out
}

#[tokio::test]
async fn the_login_page_is_compressed_by_accept_encoding() {
    let home = Home::new();
    home.write_config("auth: password\npassword: pw\n");
    let s = InProcess::start(&home, &[], &[]).await;
    let c = s.client();
    let plain = c.get_with("/login", &[("accept-encoding", "identity")]).await;
    assert_eq!(plain.status, 200);
    assert!(plain.header("content-encoding").is_none());
    let page = plain.text();
    assert!(page.contains("<form class=\"login-form\""), "{page}");

    let br = c.get_with("/login", &[("accept-encoding", "gzip, deflate, br")]).await;
    assert_eq!(br.header("content-encoding"), Some("br"));
    assert!(br.header("vary").is_some_and(|v| v.to_ascii_lowercase().contains("accept-encoding")));
    assert!(br.body.len() < page.len(), "smaller: {} < {}", br.body.len(), page.len());
    assert_eq!(String::from_utf8(brotli(&br.body)).unwrap(), page);

    let gz = c.get_with("/login", &[("accept-encoding", "gzip")]).await;
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert_eq!(String::from_utf8(gunzip(&gz.body)).unwrap(), page);
}

#[tokio::test]
async fn the_api_is_compressed_and_what_is_proxied_or_forwarded_is_not() {
    let home = Home::new();
    home.write_config("deployment-mode: multi\nmulti-user:\n  isolation:\n    strategy: directory\n");
    let env = [("ADMIN_USERNAME", "boss"), ("ADMIN_PASSWORD", "boss-password-1")];
    let s = InProcess::start(&home, &[], &env).await;
    let c = s.client();
    let login = c.post_form("/login", "username=boss&password=boss-password-1", &[]).await;
    let cookie = login.session_cookie().expect("signed in");

    let me = c.get_with("/api/users/me", &[("cookie", &cookie), ("accept-encoding", "gzip")]).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.header("content-encoding"), Some("gzip"));
    let json: serde_json::Value = serde_json::from_slice(&gunzip(&me.body)).unwrap();
    assert_eq!(json["username"], "boss");

    let admin = c.get_with("/admin", &[("cookie", &cookie), ("accept-encoding", "br")]).await;
    assert_eq!(admin.header("content-encoding"), Some("br"));
    assert!(String::from_utf8(brotli(&admin.body)).unwrap().contains("data-username=\"boss\""));

    // An error's JSON is compressed; the HTML page that replaces it for a browser is not, and
    // says so (no Content-Encoding left over from the JSON).
    let json_404 = c.get_with("/api/nope", &[("cookie", &cookie), ("accept-encoding", "gzip")]).await;
    assert_eq!(json_404.status, 404);
    assert!(json_404.header("content-encoding").is_none_or(|e| e == "gzip"));
    let page_404 =
        c.get_with("/api/nope", &[("cookie", &cookie), ("accept-encoding", "gzip"), ("accept", "text/html")]).await;
    assert_eq!(page_404.status, 404);
    assert!(page_404.header("content-encoding").is_none(), "the page goes out as it is");
    assert!(String::from_utf8(page_404.body.clone()).unwrap().contains("<html"), "a readable page");

    // The port proxy passes the dev server's body as it is.
    let upstream = Upstream::start().await;
    let proxied = c
        .get_with(&format!("/proxy/{}/echo", upstream.port), &[("cookie", &cookie), ("accept-encoding", "gzip, br")])
        .await;
    assert_eq!(proxied.status, 200);
    assert!(proxied.header("content-encoding").is_none(), "not compressed by us");
    let echoed: serde_json::Value = serde_json::from_slice(&proxied.body).unwrap();
    assert!(echoed.to_string().contains("gzip, br"), "the client's Accept-Encoding reached the dev server");

    // Nor does what goes to VS Code (the stand-in answers uncompressed).
    let forwarded = c.get_with("/static-probe", &[("cookie", &cookie), ("accept-encoding", "gzip, br")]).await;
    assert!(forwarded.header("content-encoding").is_none(), "VS Code's answer untouched: {:?}", forwarded.status);
}
