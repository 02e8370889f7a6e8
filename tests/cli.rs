//! The binary's command line and config file, end to end.

use std::os::unix::fs::PermissionsExt;

use testkit::*;

#[test]
fn first_run_writes_a_private_config_with_a_random_password() {
    let home = Home::new();
    let server = Server::start(&home, &["--bind-addr", "127.0.0.1:0"], &[]);
    let text = std::fs::read_to_string(home.config_file()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(lines[0], "bind-addr: 127.0.0.1:8080");
    assert_eq!(lines[1], "auth: password");
    let pw = lines[2].strip_prefix("password: ").unwrap();
    assert_eq!(pw.len(), 24);
    assert!(pw.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    assert_eq!(lines[3], "cert: false");
    assert!(text.ends_with('\n'));
    let mode = std::fs::metadata(home.config_file()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let out = server.stdout_text();
    assert!(out.contains(&format!("Wrote default config file to {}", home.config_file().display())), "{out}");
    assert!(out.contains("  - Authentication is enabled"));
    assert!(out.contains(&format!("    - Using password from {}", home.config_file().display())));
    assert!(out.contains("  - Not serving HTTPS"));
    // A second start keeps the file as it is.
    assert_eq!(server.stop(), Some(0));
    let again = Server::start(&home, &["--bind-addr", "127.0.0.1:0"], &[]);
    assert_eq!(std::fs::read_to_string(home.config_file()).unwrap(), text);
    assert!(!again.stdout_text().contains("Wrote default config file"));
}

#[test]
fn log_lines_have_code_server_format() {
    let home = Home::new();
    let server = Server::start(&home, &["--bind-addr", "127.0.0.1:0"], &[]);
    let out = server.stdout_text();
    let first = out.lines().find(|l| l.contains("server listening on")).unwrap();
    // [2026-11-28T02:37:57.167Z] info  HTTP server listening on http://127.0.0.1:40473/
    assert!(first.starts_with('['), "{first}");
    assert_eq!(&first[25..33], "] info  ", "{first}");
    assert!(first.ends_with('/'));
    assert!(out.contains(&format!("Using user-data-dir {}", home.data_dir().display())));
    assert!(out.contains(&format!("Using config file {}", home.config_file().display())));
}

#[test]
fn help_and_version() {
    let home = Home::new();
    let out = run(&home, &["--help"], &[]);
    assert_eq!(out.code, Some(0));
    assert!(out.stdout.contains("\nUsage: code-server [options] [path]\n"));
    for opt in ["--auth", "--bind-addr", "--cert-host", "--proxy-domain", "-vvv --verbose", "--idle-timeout-seconds"] {
        assert!(out.stdout.contains(opt), "{opt}");
    }
    assert!(!home.config_file().exists(), "--help must not create the config file");

    let out = run(&home, &["--version"], &[]);
    assert_eq!(out.code, Some(0));
    let parts: Vec<&str> = out.stdout.trim().split(' ').collect();
    assert_eq!(parts[0], env!("CARGO_PKG_VERSION"));
    assert_eq!(&parts[2..4], &["with", "Code"]);
    // With a VS Code build present (here the stand-in), its version.
    let product: serde_json::Value =
        serde_json::from_slice(&std::fs::read(stand_in_dir().join("product.json")).unwrap()).unwrap();
    assert_eq!(parts[4], product["version"].as_str().unwrap());

    let out = run(&home, &["-v", "--json"], &[]);
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(v["codeServer"], env!("CARGO_PKG_VERSION"));
    assert!(v["commit"].is_string() && v["vscode"].is_string());
    assert_eq!(out.stdout.trim().lines().count(), 1);
}

/// Arguments, config file, environment, and the expected error text.
type BadInput<'a> = (&'a [&'a str], Option<&'a str>, &'a [(&'a str, &'a str)], &'a str);

/// Each bad input ends the process with exit 1 and one line naming the problem.
#[test]
fn bad_input_is_a_one_line_error() {
    let cases: &[BadInput] = &[
        (&["--foo"], None, &[], "Unknown option --foo"),
        (&["--port", "80a"], None, &[], "--port must be a number"),
        (&["--auth", "magic"], None, &[], "--auth valid values: [password, none]"),
        (&["--bind-addr", "::1:80"], None, &[], "--bind-addr \"::1:80\" is not a valid address"),
        (&["--bind-addr", "host:99999"], None, &[], "is not a valid address"),
        (&["--password", "x"], None, &[], "--password can only be set in the config file or passed in via $PASSWORD"),
        (&["--cert", "c.pem"], None, &[], "--cert-key is missing"),
        (&["--idle-timeout-seconds", "30"], None, &[], "--idle-timeout-seconds must be greater than 60 seconds."),
        (&["--idle-timeout-seconds=60"], None, &[], "--idle-timeout-seconds must be greater than 60 seconds."),
        (
            &[],
            None,
            &[("CODE_SERVER_IDLE_TIMEOUT_SECONDS", "soon")],
            "CODE_SERVER_IDLE_TIMEOUT_SECONDS must be a number",
        ),
        (&[], None, &[("PORT", "http")], "$PORT must be a port number"),
        (&[], Some("nonsense: 1\n"), &[], "Unknown option --nonsense"),
        (&[], Some("port: eighty\n"), &[], "--port must be a number"),
        (&[], Some("just text\n"), &[], "invalid config"),
        (
            &[],
            Some("auth: password\n"),
            &[],
            "Please pass in a password via the config file or environment variable ($PASSWORD or $HASHED_PASSWORD)",
        ),
        (
            &[],
            Some("auth: password\nhashed-password: $argon2id$v=19$garbage\n"),
            &[],
            "hashed-password is not a valid argon2 hash",
        ),
        (&["--socket-mode", "rwx", "--socket", "s.sock"], None, &[], "--socket-mode must be an octal file mode"),
        (&["--session-timeout", "soon"], None, &[], "--session-timeout must be a duration"),
        (&["--trusted-proxies", "proxy.local"], None, &[], "--trusted-proxies: \"proxy.local\" is not an IP address"),
    ];
    for (args, config, env, expected) in cases {
        let home = Home::new();
        if let Some(c) = config {
            home.write_config(c);
        }
        let out = run(&home, args, env);
        assert_eq!(out.code, Some(1), "{args:?} {config:?}: {}", out.stderr);
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {}", out.stderr);
        assert!(lines[0].contains("] error "), "{}", lines[0]);
        assert!(lines[0].contains(expected), "{args:?} {config:?}: {}", lines[0]);
        if config.is_some() && expected.starts_with("Unknown option") {
            assert!(lines[0].contains(&format!("error reading {}: ", home.config_file().display())), "{}", lines[0]);
        }
        assert!(out.stdout.is_empty() || !out.stdout.contains("listening"));
    }
}

#[test]
fn custom_strings_errors_are_fatal() {
    let home = Home::new();
    let out = run(&home, &["--bind-addr", "127.0.0.1:0", "--i18n", "missing.json"], &[]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains(&format!("Custom strings file not found: {}", home.path().join("missing.json").display()))
    );
    assert!(out.stderr.contains("Please ensure the file exists and is readable."));
    std::fs::write(home.path().join("bad.json"), "{oops").unwrap();
    let out = run(&home, &["--bind-addr", "127.0.0.1:0", "--i18n", "bad.json"], &[]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("Invalid JSON in custom strings file: "), "{}", out.stderr);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn listen_address_precedence() {
    let home = Home::new();
    let (a, b) = (free_port(), free_port());
    home.write_config(&format!("bind-addr: 127.0.0.1:{a}\nauth: none\n"));
    // Config file alone.
    let s = Server::start(&home, &[], &[]);
    assert_eq!(s.address, format!("http://127.0.0.1:{a}/"));
    assert!(s.stdout_text().contains("  - Authentication is disabled"));
    drop(s);
    // $PORT beats the config file's port...
    let s = Server::start(&home, &[], &[("PORT", &b.to_string())]);
    assert_eq!(s.address, format!("http://127.0.0.1:{b}/"));
    drop(s);
    // ...and --port beats $PORT; $CODE_SERVER_HOST sets the host (another loopback address than
    // the file's, so it shows).
    let s = Server::start(&home, &["--port", "0"], &[("PORT", &b.to_string()), ("CODE_SERVER_HOST", "127.0.0.2")]);
    assert!(s.address.starts_with("http://127.0.0.2:"), "{}", s.address);
    assert_ne!(s.address, format!("http://127.0.0.2:{b}/"));
    drop(s);
    // IPv6 in brackets, where the machine has it.
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        let s = Server::start(&home, &["--bind-addr", "[::1]:0"], &[]);
        assert!(s.address.starts_with("http://[::1]:"), "{}", s.address);
    } else {
        eprintln!("SKIPPED the IPv6 case: this machine has no ::1");
    }
}

#[test]
fn env_password_and_config_flag() {
    let home = Home::new();
    let custom = home.path().join("elsewhere/custom.yaml");
    let s = Server::start(
        &home,
        &["--config", custom.to_str().unwrap(), "--bind-addr", "127.0.0.1:0"],
        &[("PASSWORD", "from-env")],
    );
    assert!(custom.exists(), "--config names where the config is created");
    assert!(!home.config_file().exists());
    assert!(s.stdout_text().contains("    - Using password from $PASSWORD"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = s.client();
        let page = c.get("/login").await.text();
        assert!(page.contains("Password was set from $PASSWORD."), "{page}");
        c.login("from-env").await;
    });
    drop(s);

    // $CODE_SERVER_CONFIG when --config is absent.
    let other = home.path().join("other.yaml");
    let s = Server::start(&home, &["--bind-addr", "127.0.0.1:0"], &[("CODE_SERVER_CONFIG", other.to_str().unwrap())]);
    assert!(other.exists());
    assert!(s.stdout_text().contains(&format!("Using config file {}", other.display())));
}

/// Shell completions, generated from the same table that parses the command line.
#[test]
fn shell_completions() {
    let home = Home::new();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = run(&home, &["--completions", shell], &[]);
        assert_eq!(out.code, Some(0), "{shell}: {}", out.stderr);
        for flag in ["bind-addr", "proxy-domain", "install-extension", "vscode-dir"] {
            assert!(out.stdout.contains(flag), "{shell} completes --{flag}");
        }
    }
    let out = run(&home, &["--completions", "tcsh"], &[]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("--completions valid values: [bash, zsh, fish, elvish, powershell]"), "{}", out.stderr);
    home.write_config("completions: bash\n");
    let out = run(&home, &["--bind-addr", "127.0.0.1:0"], &[]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("--completions can only be given on the command line"), "{}", out.stderr);
}
