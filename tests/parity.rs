//! What code-server users expect from the real binary: log files, signals, versions, language,
//! error names, first-run behaviour, restarts.

mod common;

use common::*;
use hyper::http::StatusCode;

const PASSWORD: &str = "correct-horse";

fn password_home() -> Home {
    let home = Home::new();
    home.write_config(&format!("auth: password\npassword: {PASSWORD}\n"));
    home
}

/// code-server mirrors its output to `<data dir>/coder-logs/code-server-std{out,err}.log`.
#[tokio::test]
async fn output_is_mirrored_to_log_files_in_the_data_dir() {
    let home = password_home();
    let s = Server::start(&home, &["--bind-addr", "127.0.0.1:0"], &[]);
    let r = s.client().post_form("/login", "password=wrong", &[]).await;
    assert!(r.text().contains("Incorrect password"));
    let logs = home.data_dir().join("coder-logs");
    let out = logs.join("code-server-stdout.log");
    let err = logs.join("code-server-stderr.log");
    wait_until("the failed login in the stderr log", || {
        std::fs::read_to_string(&err).is_ok_and(|t| t.contains("Failed login attempt"))
    });
    let stdout = std::fs::read_to_string(&out).unwrap();
    assert!(stdout.contains("HTTP server listening on http://127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("Using user-data-dir"), "{stdout}");
    assert!(!stdout.contains("Failed login attempt"), "warnings go to the stderr log only");
    // The same lines as on the terminal.
    let first = s.stdout.lock().unwrap().iter().find(|l| l.contains("server listening on")).cloned().unwrap();
    assert!(stdout.contains(&first));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&logs).unwrap().permissions().mode() & 0o777, 0o700);
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
    // A command that does not serve writes no server log.
    let other = Home::new();
    let ran = run(&other, &["--help"], &[]);
    assert_eq!(ran.code, Some(0));
    assert!(!other.data_dir().join("coder-logs").exists());
    drop(s);
}
