//! Flag, config-file and environment precedence (spec §2.5), through the library's loader with a
//! private environment per test.

use std::path::Path;
use std::time::Duration;

use code_server::auth::password::PasswordSource;
use code_server::cli::{self, AuthMode, CertArg, Command, Config};
use code_server::environment::Environment;
use code_server::logging::LogLevel;
use code_server::server::listen::Listen;
use code_server::server::tls::Tls;

struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new(config: Option<&str>) -> Case {
        let dir = tempfile::tempdir().unwrap();
        if let Some(c) = config {
            std::fs::create_dir_all(dir.path().join("cfg/code-server")).unwrap();
            std::fs::write(dir.path().join("cfg/code-server/config.yaml"), c).unwrap();
        }
        Case { dir }
    }

    fn env(&self, extra: &[(&str, &str)]) -> Environment {
        let mut env: Environment = [
            ("HOME", self.dir.path().to_str().unwrap()),
            ("XDG_CONFIG_HOME", self.dir.path().join("cfg").to_str().unwrap()),
            ("XDG_DATA_HOME", self.dir.path().join("data").to_str().unwrap()),
        ]
        .into_iter()
        .collect();
        for (k, v) in extra {
            env.set(k, v);
        }
        env
    }

    fn load(&self, args: &[&str], env: &[(&str, &str)]) -> Result<Config, String> {
        let argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match cli::load(&argv, &self.env(env), Path::new("/work")) {
            Ok(l) => match l.command {
                Command::Serve(c) | Command::Extensions(c) => Ok(*c),
                other => panic!("unexpected command {other:?}"),
            },
            Err(e) => Err(e.to_string()),
        }
    }
}

#[test]
fn defaults_from_a_fresh_config() {
    let case = Case::new(None);
    let c = case.load(&[], &[]).unwrap();
    assert_eq!(c.listen, Listen::Tcp { host: "127.0.0.1".into(), port: 8080 });
    assert_eq!(c.auth, AuthMode::Password);
    assert_eq!(c.password.as_ref().unwrap().source, PasswordSource::ConfigPassword);
    assert_eq!(c.tls, None);
    assert_eq!(c.user_data_dir, case.dir.path().join("data/code-server"));
    assert_eq!(c.extensions_dir, case.dir.path().join("data/code-server/extensions"));
    assert_eq!(c.app_name, "code-server");
    assert_eq!(c.log_level, LogLevel::Info);
    assert_eq!(c.session_timeout, Duration::from_secs(30 * 86_400));
    assert_eq!(c.config_file, case.dir.path().join("cfg/code-server/config.yaml"));
}

#[test]
fn without_bind_addr_anywhere_the_default_is_localhost_8080() {
    let case = Case::new(Some("auth: none\n"));
    assert_eq!(case.load(&[], &[]).unwrap().listen, Listen::Tcp { host: "localhost".into(), port: 8080 });
}

#[test]
fn flags_beat_the_config_file() {
    let case = Case::new(Some(
        "bind-addr: 0.0.0.0:9000\nauth: none\napp-name: FromFile\nproxy-domain: [a.com, b.com]\nlog: debug\n",
    ));
    let c = case.load(&[], &[]).unwrap();
    assert_eq!(c.listen, Listen::Tcp { host: "0.0.0.0".into(), port: 9000 });
    assert_eq!(c.app_name, "FromFile");
    assert_eq!(c.proxy_domains, vec!["{{port}}.a.com", "{{port}}.b.com"]);
    assert_eq!(c.log_level, LogLevel::Debug);

    let c = case
        .load(&["--bind-addr", "127.0.0.2:9001", "--app-name", "FromFlag", "--proxy-domain", "c.com", "-vvv"], &[])
        .unwrap();
    assert_eq!(c.listen, Listen::Tcp { host: "127.0.0.2".into(), port: 9001 });
    assert_eq!(c.app_name, "FromFlag");
    // A list on the command line replaces the file's list wholesale.
    assert_eq!(c.proxy_domains, vec!["{{port}}.c.com"]);
    assert_eq!(c.log_level, LogLevel::Trace);
}

#[test]
fn bind_address_passes() {
    let case = Case::new(Some("bind-addr: 10.0.0.1:9000\nport: 9100\nhost: 10.0.0.2\nauth: none\n"));
    // Config's host/port keys refine its bind-addr.
    assert_eq!(case.load(&[], &[]).unwrap().listen, Listen::Tcp { host: "10.0.0.2".into(), port: 9100 });
    // $PORT and $CODE_SERVER_HOST beat the config file...
    let env = [("PORT", "9200"), ("CODE_SERVER_HOST", "10.0.0.3")];
    assert_eq!(case.load(&[], &env).unwrap().listen, Listen::Tcp { host: "10.0.0.3".into(), port: 9200 });
    // ...but not --host/--port, nor a --bind-addr's host (the env port still applies after it).
    assert_eq!(
        case.load(&["--host", "10.0.0.4", "--port", "9300"], &env).unwrap().listen,
        Listen::Tcp { host: "10.0.0.4".into(), port: 9300 }
    );
    assert_eq!(
        case.load(&["--bind-addr", "[::1]:9400"], &[("PORT", "9200")]).unwrap().listen,
        Listen::Tcp { host: "::1".into(), port: 9200 }
    );
    // --socket-fd > --socket > TCP.
    assert_eq!(
        case.load(&["--socket", "s.sock", "--socket-mode", "660"], &[]).unwrap().listen,
        Listen::Socket { path: "/work/s.sock".into(), mode: Some(0o660) }
    );
    assert_eq!(case.load(&["--socket", "s.sock", "--socket-fd", "3"], &[]).unwrap().listen, Listen::Fd(3));
}

#[test]
fn environment_overrides_and_fallbacks() {
    let case = Case::new(Some(
        "auth: password\npassword: file-pw\ncookie-suffix: file\napp-name: FileName\nreconnection-grace-time: '5'\n",
    ));
    let c = case
        .load(
            &[],
            &[
                ("PASSWORD", "env-pw"),
                ("GITHUB_TOKEN", "gh"),
                ("CODE_SERVER_COOKIE_SUFFIX", "my.suffix!"),
                ("CODE_SERVER_APP_NAME", "EnvName"),
                ("CODE_SERVER_RECONNECTION_GRACE_TIME", "60"),
                ("CODE_SERVER_IDLE_TIMEOUT_SECONDS", "120"),
                ("CS_DISABLE_PROXY", "1"),
                ("CS_DISABLE_FILE_DOWNLOADS", "true"),
                ("CS_DISABLE_GETTING_STARTED_OVERRIDE", "yes"),
                ("LOG_LEVEL", "warn"),
                ("VSCODE_OPTIONS", "enable-sandbox  agents=true"),
                ("CODE_SERVER_EXPRESS_LANE", "off"),
            ],
        )
        .unwrap();
    assert!(!c.express_lane, "the diagnostic switch turns the express lane off");
    assert!(case.load(&[], &[]).unwrap().express_lane, "on by default");
    let pw = c.password.as_ref().unwrap();
    assert_eq!(pw.password.as_ref().unwrap().expose(), "env-pw");
    assert_eq!(pw.source, PasswordSource::EnvPassword);
    assert_eq!(format!("{:?}", pw.password), "Some(***)", "secrets never print");
    assert_eq!(c.github_auth.as_ref().unwrap().expose(), "gh");
    assert_eq!(c.cookie_suffix.as_deref(), Some("my-suffix-"), "sanitised to [A-Za-z0-9-]");
    assert_eq!(c.app_name, "FileName", "$CODE_SERVER_APP_NAME is only a fallback");
    assert_eq!(c.reconnection_grace_time.as_deref(), Some("60"));
    assert_eq!(c.idle_timeout, Some(Duration::from_secs(120)));
    assert!(c.disable_proxy && c.disable_file_downloads);
    assert!(!c.disable_getting_started_override, "only 1 or true switch it on");
    assert_eq!(c.log_level, LogLevel::Warn);
    assert_eq!(c.vscode_options, vec!["enable-sandbox", "agents=true"]);
    // Secrets are removed from the environment before anything else runs; the level is written.
    assert_eq!(c.env_changes.remove, vec!["PASSWORD", "GITHUB_TOKEN"]);
    assert!(c.env_changes.set.contains(&("LOG_LEVEL", "warn".to_string())));

    // $HASHED_PASSWORD wins over $PASSWORD.
    let c = case.load(&[], &[("PASSWORD", "a"), ("HASHED_PASSWORD", "abc123")]).unwrap();
    let pw = c.password.unwrap();
    assert_eq!(pw.source, PasswordSource::EnvHashedPassword);
    assert_eq!(pw.hashed_password.unwrap().expose(), "abc123");
    assert_eq!(c.env_changes.remove, vec!["PASSWORD", "HASHED_PASSWORD"]);

    // An invalid $LOG_LEVEL is ignored; --log beats it.
    assert_eq!(case.load(&[], &[("LOG_LEVEL", "loud")]).unwrap().log_level, LogLevel::Info);
    assert_eq!(case.load(&["--log", "error"], &[("LOG_LEVEL", "debug")]).unwrap().log_level, LogLevel::Error);
}

#[test]
fn switches_and_cert_from_the_file() {
    let case = Case::new(Some("auth: none\nopen: false\ndisable-proxy: true\ncert: true\ncert-host: dev.box\n"));
    let c = case.load(&[], &[]).unwrap();
    assert!(!c.open, "open: false means off (code-server would turn it on)");
    assert!(c.disable_proxy);
    assert_eq!(c.tls, Some(Tls::SelfSigned { host: "dev.box".into() }));
    // --cert=false on the command line turns the file's cert off.
    assert_eq!(case.load(&["--cert=false"], &[]).unwrap().tls, None);
    let c = case.load(&["--cert", "c.pem", "--cert-key", "k.pem"], &[]).unwrap();
    assert_eq!(c.tls, Some(Tls::Files { cert: "/work/c.pem".into(), key: "/work/k.pem".into() }));
    let _ = CertArg::Off;
}

#[test]
fn positionals_and_proxy_uri() {
    let case = Case::new(Some("auth: none\n"));
    let c = case.load(&["./project", "--proxy-domain", "*.coder.com", "../x.code-workspace"], &[]).unwrap();
    assert_eq!(c.paths_to_open, vec![Path::new("/work/project"), Path::new("/x.code-workspace")]);
    assert!(c.env_changes.set.contains(&("VSCODE_PROXY_URI", "//{{port}}.coder.com".to_string())));
    // An existing VSCODE_PROXY_URI is kept.
    let c = case.load(&["--proxy-domain", "coder.com"], &[("VSCODE_PROXY_URI", "https://mine/{{port}}")]).unwrap();
    assert!(!c.env_changes.set.iter().any(|(k, _)| *k == "VSCODE_PROXY_URI"));
    assert_eq!(c.cli_option_names, vec!["proxy-domain"]);
}

#[test]
fn extension_flags_select_the_extension_command() {
    let case = Case::new(Some("auth: none\n"));
    let argv: Vec<String> = ["--install-extension", "a.b@1.0.0", "--force"].iter().map(|s| s.to_string()).collect();
    let loaded = cli::load(&argv, &case.env(&[]), Path::new("/work")).unwrap();
    let Command::Extensions(c) = loaded.command else { panic!("expected the extension command") };
    assert_eq!(c.extensions.install, vec!["a.b@1.0.0"]);
    assert!(c.extensions.force);
}
