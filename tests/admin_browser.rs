//! Multi-user mode in headless Chromium (tests/browser/admin.mjs), through the real binary and
//! the real VS Code build: an admin signs in and creates a user on the admin page, the user
//! signs in in a second browser context and reaches the workbench (their own folder), the admin revokes their
//! sessions on the page, and the user's next request lands on the login page. Each page is
//! photographed; the pictures must be real renderings (not blank), and the run keeps them when
//! `CS_LOOK_DIR` names a directory.

use testkit::*;

#[test]
fn admin_page_in_chromium() {
    let home = Home::with_vscode();
    home.write_config("deployment-mode: multi\nmulti-user:\n  isolation:\n    strategy: directory\n");
    let server = Server::start(
        &home,
        &["--bind-addr", "127.0.0.1:0"],
        &[("ADMIN_USERNAME", "boss"), ("ADMIN_PASSWORD", "boss-password-1")],
    );
    let shots = shots_dir(home.path().join("shots"));
    let (ok, log) = run_browser(
        browser_script("admin.mjs")
            .env("CS_URL", &server.address)
            .env("CS_ADMIN", "boss")
            .env("CS_ADMIN_PASSWORD", "boss-password-1")
            .env("CS_USER", "ada")
            .env("CS_USER_PASSWORD", "ada-password-1")
            .env("CS_FILE", "mine.txt")
            .env("CS_BASE_PATH", home.data_dir().join("users"))
            .env("CS_SHOTS", &shots),
    );
    assert!(
        ok,
        "the browser run failed:\n{log}\nserver stdout:\n{}\nstderr:\n{}",
        server.stdout_text(),
        server.stderr_text()
    );
    for name in [
        "admin-created",
        "user-workbench",
        "user-account",
        "admin-revoked",
        "admin-workspace-stopped",
        "user-login-again",
    ] {
        let png = std::fs::read(shots.join(format!("{name}.png"))).unwrap_or_else(|e| panic!("{name}.png: {e}"));
        assert!(png.starts_with(b"\x89PNG"), "{name}.png is a PNG");
        // A blank page compresses to a few kB; a rendered table, form or workbench does not.
        assert!(png.len() > 15_000, "{name}.png looks blank ({} bytes)", png.len());
    }
    let out = server.stdout_text();
    assert!(!out.contains("ada-password-1") && !out.contains("boss-password-1"), "no password in the log");
}
