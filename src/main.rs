//! The `code-server` binary: reads the configuration, then wires the pieces together.

// Unsafe code here only edits the environment before any thread exists.
#![allow(unsafe_code)]

use std::process::ExitCode;

use code_server::app::{self, AppState};
use code_server::auth::password::PasswordSource;
use code_server::cli::{self, AuthMode, Command, Config};
use code_server::environment::Environment;
use code_server::server::tls::Tls;
use code_server::server::{self, Listener};
use code_server::vscode::provision::Reporter;
use code_server::{lifecycle, logging, multiuser, private_dir, session_socket, vscode, workspaces};

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    let env = Environment::capture();
    let cwd = match std::env::current_dir() {
        Ok(d) => d,
        Err(e) => return fail(&format!("cannot read the working directory: {}", code_server::errno::describe(&e))),
    };
    let loaded = match cli::load(&argv, &env, &cwd) {
        Ok(l) => l,
        Err(e) => return fail(&e.to_string()),
    };
    let (config, mode) = match loaded.command {
        Command::Help => {
            print!("{}", cli::help::help_text());
            return ExitCode::SUCCESS;
        }
        Command::Version { json, vscode_dir } => {
            println!("{}", cli::help::version_text(json, vscode_version(&env, vscode_dir).as_deref()));
            return ExitCode::SUCCESS;
        }
        Command::Completions(shell) => {
            use std::io::Write;
            let script = cli::help::completions(&shell).expect("the parser accepts known shells only");
            let _ = std::io::stdout().write_all(&script);
            return ExitCode::SUCCESS;
        }
        Command::Extensions(config) => (config, Mode::Extensions),
        Command::Provision(config) => (config, Mode::Provision),
        Command::Accounts(config) => (config, Mode::Accounts),
        Command::TrustStore(config) => (config, Mode::TrustStore),
        Command::Serve(config) => (config, Mode::Serve),
    };

    // SAFETY: no other thread exists yet (the runtime is built below), so editing the
    // environment cannot race a reader. Secrets leave it so no child process inherits them.
    unsafe {
        for var in &config.env_changes.remove {
            std::env::remove_var(var);
        }
        for (var, value) in &config.env_changes.set {
            std::env::set_var(var, value);
        }
    }
    logging::init(config.log_level);
    for note in &loaded.notes {
        tracing::info!("{note}");
    }

    if matches!(mode, Mode::Serve) {
        match server::raise_open_files_limit() {
            Ok(n) => tracing::debug!("Open files limit: {n}"),
            Err(e) => tracing::warn!("cannot raise the open files limit: {}", code_server::errno::describe(&e)),
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    let result = runtime.block_on(async {
        match mode {
            Mode::Serve => serve(*config).await.map(|()| 0),
            Mode::Provision => provision(&config).await.map(|()| 0),
            Mode::Accounts => account_command(&config).await.map(|()| 0),
            Mode::TrustStore => trust_command(&config).map(|()| 0),
            Mode::Extensions => extension_commands(&config).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(msg) => {
            tracing::error!("{msg}");
            ExitCode::from(1)
        }
    }
}

/// What the process does after reading its configuration.
enum Mode {
    Serve,
    Provision,
    Extensions,
    Accounts,
    TrustStore,
}

/// The VS Code version for `--version`, when a build is already present (never provisions).
fn vscode_version(env: &Environment, flag: Option<std::path::PathBuf>) -> Option<String> {
    let paths = code_server::paths::Paths::from_env(env);
    let dir = flag
        .or_else(|| env.get("CODE_SERVER_VSCODE_DIR").filter(|d| !d.is_empty()).map(std::path::PathBuf::from))
        .unwrap_or_else(|| vscode::build::default_dir(&paths.data));
    let node = vscode::provision::node_path(&paths.data);
    vscode::build::Build::locate(&dir, Some(&node)).ok().map(|b| b.version)
}

/// Whatever stops the binary: printed as one error line, exit status 1.
type Failure = Box<dyn std::error::Error + Send + Sync>;

fn fail(msg: &str) -> ExitCode {
    eprintln!("{}", logging::line("error", msg));
    ExitCode::from(1)
}

/// The VS Code build to run: `--vscode-dir` as given, else ours, provisioned on first run;
/// `report` hears how provisioning goes.
async fn vscode_build(config: &Config, report: &Reporter) -> Result<vscode::build::Build, Failure> {
    match &config.vscode_dir {
        Some(dir) => match vscode::build::Build::locate(dir, None) {
            // code-server's lib/vscode brings no Node: fetch the runtime it needs, once.
            Err(vscode::build::BuildError::NoNode(_)) => {
                let node = vscode::provision::ensure_node(&config.paths.data, report).await?;
                Ok(vscode::build::Build::locate(dir, Some(&node))?)
            }
            other => Ok(other?),
        },
        None => {
            let target = vscode::build::default_dir(&config.paths.data);
            Ok(vscode::provision::ensure(&target, report).await?)
        }
    }
}

/// The build, when it is there already (nothing to download).
fn ready_build(config: &Config) -> Option<vscode::build::Build> {
    match &config.vscode_dir {
        Some(dir) => vscode::build::Build::locate(dir, None).ok(),
        None => vscode::provision::existing(&vscode::build::default_dir(&config.paths.data)),
    }
}

/// `--provision-vscode`: make sure a build is in place, print where, exit.
async fn provision(config: &Config) -> Result<(), Failure> {
    let target = config.vscode_dir.clone().unwrap_or_else(|| vscode::build::default_dir(&config.paths.data));
    let build = vscode::provision::ensure(&target, &Reporter::none()).await?;
    tracing::info!("VS Code {} ({}) at {}", build.version, build.commit, build.root.display());
    Ok(())
}

/// `--add-user` and the other account actions: against the configured database, then exit.
async fn account_command(config: &Config) -> Result<(), Failure> {
    let (Some(multi), Some(command)) = (config.deployment.multi(), &config.account_command) else {
        unreachable!("the CLI makes an account command only in multi-user mode");
    };
    private_dir::ensure_logged(&config.paths.data, "the user database and the audit log")?;
    let accounts = multiuser::open(multi).await?;
    let outcome = multiuser::admin_cli::run(&accounts, &multi.sessions, command).await;
    accounts.audit().close().await;
    accounts.store().close().await;
    println!("{}", outcome?);
    Ok(())
}

/// `--trust-publisher` and the other trust-store actions, then exit.
fn trust_command(config: &Config) -> Result<(), Failure> {
    let command = config.trust_command.as_ref().expect("the CLI makes this mode only for a trust command");
    let store = vscode::signing::store::TrustStore::new(&config.paths.data);
    print!("{}", vscode::signing::store::run(&store, command)?);
    Ok(())
}

fn failure(message: impl Into<String>) -> Failure {
    cli::CliError::new(message.into()).into()
}

/// `--install-extension` and the other extension commands, through VS Code's CLI; with
/// `--verify-extensions`, every package is checked first (before VS Code is even looked for),
/// and one refusal installs nothing.
async fn extension_commands(config: &Config) -> Result<i32, Failure> {
    let mut commands = config.extensions.clone();
    let _staged = if commands.verify && !commands.install.is_empty() {
        let store = vscode::signing::store::TrustStore::new(&config.paths.data);
        match vscode::extensions::verify_installs(&mut commands, &store, &config.paths.runtime) {
            Ok(staged) => {
                for v in &staged.verified {
                    tracing::info!(
                        "Verified {}: signed by publisher {} ({} key {})",
                        v.identity,
                        v.identity.publisher,
                        v.key.kind(),
                        v.key.fingerprint()
                    );
                }
                Some(staged)
            }
            Err(vscode::extensions::VerifyError::Refused(refusals)) => {
                for r in &refusals {
                    tracing::error!("{r}");
                }
                tracing::error!("Nothing was installed (--verify-extensions)");
                return Ok(1);
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    let build = vscode_build(config, &Reporter::none()).await?;
    let options = app::vscode_options(config);
    let Some(name) = &config.for_user else {
        return Ok(vscode::extensions::run(&commands, &app::owner_dirs(config), &options, &build, None).await?);
    };
    // A user's workspace: their directories, as their account.
    let Some(multi) = config.deployment.multi() else {
        return Err(failure("--for-user needs deployment-mode: multi"));
    };
    if commands.verify && multi.isolation == multiuser::config::Isolation::OsUser {
        // The checked copies are ours (in our private runtime dir), out of the account's reach.
        return Err(failure(
            "--verify-extensions cannot be combined with --for-user under os-user isolation yet: \
             install the verified package into the user's workspace from the admin's own session instead",
        ));
    }
    private_dir::ensure_logged(&config.paths.data, "the user database and the audit log")?;
    let accounts = multiuser::open(multi).await?;
    let found = accounts.user_by_name(name).await;
    let user = match found {
        Ok(u) => u,
        Err(e) => {
            accounts.store().close().await;
            return Err(failure(format!("--for-user {name}: {e}")));
        }
    };
    let identity = code_server::identity::Identity {
        user: code_server::identity::UserId::new(user.id.as_str()),
        name: user.username.clone(),
        roles: vec![user.role],
        session: None,
    };
    let users = multiuser::workspaces::UserWorkspaces::new(
        multi,
        options.clone(),
        build.clone(),
        lifecycle::Lifecycle::new(),
        accounts.clone(),
    );
    let layout = users.layout_for(&identity).await;
    accounts.store().close().await;
    let layout = layout.map_err(|e| failure(format!("--for-user {name}: {e}")))?;
    let set_up = layout
        .run_as
        .clone()
        .map(|r| move |cmd: &mut tokio::process::Command| workspaces::spawner::run_as_account(cmd, &r));
    let set_up = set_up.as_ref().map(|f| f as &(dyn Fn(&mut tokio::process::Command) + Sync));
    Ok(vscode::extensions::run(&commands, &layout.dirs, &options, &build, set_up).await?)
}

/// Multi-user mode's accounts, opened before anything listens; the first admin made.
async fn open_accounts(config: &Config) -> Result<Option<std::sync::Arc<multiuser::accounts::Accounts>>, Failure> {
    let Some(multi) = config.deployment.multi() else { return Ok(None) };
    let accounts = multiuser::open(multi).await?;
    let (users, sessions) = multiuser::describe(&accounts);
    tracing::info!("Multi-user mode: users in {users}, sessions in {sessions}");
    if let Some(path) = accounts.ensure_first_admin(multi.first_admin.as_ref(), &config.paths.data).await? {
        tracing::info!("Created the first admin, \"admin\"; its password is in {}", path.display());
    }
    Ok(Some(accounts))
}

async fn serve(config: Config) -> Result<(), Failure> {
    // `code-server FILE` while an instance runs (or from its terminal) opens FILE there.
    let hook = std::env::var("VSCODE_IPC_HOOK_CLI").ok();
    let open = app::open_request(&config);
    if let Some(window) = session_socket::existing_instance(&open, hook.as_deref()).await? {
        return Ok(session_socket::open_in(&window, &open).await?);
    }
    // Where we keep code, sockets and secrets: ours alone, or we do not start.
    let private = [
        (&config.user_data_dir, "sessions, keys and the session registry's socket"),
        (&config.paths.data, "certificates and the provisioned VS Code"),
        (&config.paths.runtime, "VS Code's socket and the script node preloads"),
    ];
    for (dir, what) in private {
        private_dir::ensure_logged(dir, what)?;
    }
    // From here on our output is also kept in the data dir, as code-server keeps it.
    logging::mirror_to(&config.paths.data.join("coder-logs"));
    tracing::info!("code-server {} {}", code_server::version::VERSION, code_server::version::commit());
    tracing::info!("Using user-data-dir {}", config.user_data_dir.display());
    tracing::debug!("Using extensions-dir {}", config.extensions_dir.display());
    tracing::info!("Using config file {}", config.config_file.display());
    if config.extensions.verify {
        // Said at every start so nobody mistakes it for a guard on the workbench's own installs.
        tracing::info!(
            "verify-extensions checks installs from the command line (--install-extension); the workbench's Extensions view installs without it"
        );
    }

    let tls = match &config.tls {
        Some(t) => Some(server::tls::load(t, &config.paths.data)?),
        None => None,
    };
    AppState::check(&config)?;
    let accounts = open_accounts(&config).await?;
    // The port is ours before anything is downloaded: a busy one is reported at once, and on a
    // first run a browser sees how provisioning goes instead of a refused connection.
    let listener = Listener::bind_shared(&config.listen, config.reuse_port).await?;
    let signals_failed = |e: std::io::Error| format!("cannot catch signals: {}", code_server::errno::describe(&e));
    let mut signals = server::Signals::install().map_err(signals_failed)?;
    let hotswap = server::HotswapSignals::install().map_err(signals_failed)?;
    log_startup(&config, &listener, tls.as_ref().map(|t| t.cert_path.as_path()));
    let build = match ready_build(&config) {
        Some(build) => build,
        None => {
            let (report, progress) = Reporter::new();
            let page = vscode::first_run::app(progress, &config.app_name);
            let work = vscode_build(&config, &report);
            tokio::pin!(work);
            let mut outcome = None;
            let until = async {
                outcome = tokio::select! {
                    built = &mut work => Some(built),
                    // Stopped while provisioning: a clean exit.
                    _ = signals.recv() => None,
                };
            };
            server::serve_meanwhile(&listener, page, tls.as_ref().map(|t| t.config.clone()), until).await;
            match outcome {
                Some(built) => built?,
                None => {
                    tracing::info!("Shutting down");
                    listener.remove_socket_file();
                    return Ok(());
                }
            }
        }
    };
    tracing::info!("Using VS Code {} from {}", build.version, build.root.display());
    let state = match accounts {
        Some(accounts) => AppState::multi(config.clone(), build, accounts)?,
        None => AppState::with_file_store(config.clone(), build)?,
    };
    match state.auth.sessions.prune().await {
        Ok(0) => {}
        Ok(n) => tracing::debug!("Dropped {n} expired or outdated sessions"),
        Err(e) => tracing::warn!("{e}"),
    }
    if let Some(addr) = config.metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on --metrics-addr {addr}: {}", code_server::errno::describe(&e)))?;
        let (token, bound) = (config.metrics_token.clone(), listener.local_addr().unwrap_or(addr));
        tracing::info!("  - Metrics on http://{bound}/metrics");
        let auth = state.auth.clone();
        state.lifecycle.spawn("metrics listener", |t| code_server::scrape::serve_dedicated(listener, auth, token, t));
    }
    let workspaces = state.workspaces.clone();
    state.lifecycle.spawn("hotswap signals", |t| workspaces::hotswap_on_signals(hotswap, workspaces, t));

    // Both ways of stopping (a signal, the idle timeout) are a clean exit.
    app::run(state, listener, tls.map(|t| t.config), lifecycle::first_signal(signals)).await;
    Ok(())
}

/// The start-up lines of spec §1.2, which test harnesses wait for.
fn log_startup(config: &Config, listener: &Listener, cert: Option<&std::path::Path>) {
    let scheme = if cert.is_some() { "HTTPS" } else { "HTTP" };
    tracing::info!("{scheme} server listening on {}", listener.describe(cert.is_some()));
    match (&config.auth, &config.password) {
        _ if config.deployment.multi().is_some() => {
            tracing::info!("  - Authentication is enabled");
            tracing::info!("    - Multi-user mode: each user signs in with a username and password");
        }
        (AuthMode::Password, Some(p)) => {
            tracing::info!("  - Authentication is enabled");
            let file = config.config_file.display();
            match p.source {
                PasswordSource::EnvPassword => tracing::info!("    - Using password from $PASSWORD"),
                PasswordSource::EnvHashedPassword => tracing::info!("    - Using password from $HASHED_PASSWORD"),
                PasswordSource::ConfigHashedPassword => tracing::info!("    - Using hashed-password from {file}"),
                PasswordSource::ConfigPassword => tracing::info!("    - Using password from {file}"),
            }
        }
        _ => tracing::info!("  - Authentication is disabled"),
    }
    match cert {
        Some(path) => {
            tracing::info!("  - Using certificate for HTTPS: {}", path.display());
            if let Some(Tls::SelfSigned { host }) = &config.tls {
                tracing::debug!("    - Self-signed for {host}");
            }
        }
        None => tracing::info!("  - Not serving HTTPS"),
    }
    if config.reuse_port {
        tracing::info!("  - Sharing the port with the deployment's other fronts (reuse-port)");
        // Linux 5.14+: with it, connections still queued in a closing front's listener move
        // to another front's instead of waiting for this one to serve them.
        if std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req").is_ok_and(|v| v.trim() == "0") {
            tracing::info!("    - Tip: sysctl net.ipv4.tcp_migrate_req=1 hands a stopping front's queue to the others");
        }
    }
    if let Some(t) = config.idle_timeout {
        tracing::info!("  - Idle timeout set to {} seconds", t.as_secs());
    }
    if config.disable_proxy {
        tracing::info!("  - Proxy disabled");
    } else if !config.proxy_domains.is_empty() {
        let plural = if config.proxy_domains.len() > 1 { "domains" } else { "domain" };
        tracing::info!("  - Proxying the following {plural}:");
        for d in &config.proxy_domains {
            tracing::info!("    - {d}");
        }
    }
    if config.skip_auth_preflight {
        tracing::info!("  - Skipping authentication for preflight requests");
    }
    if let Ok(uri) = std::env::var("VSCODE_PROXY_URI")
        && !uri.is_empty()
    {
        tracing::info!("Using proxy URI in PORTS tab: {uri}");
    }
}
