//! The real workbench in headless Chromium (Debian's `chromium`), driven by Playwright
//! (tests/browser/workbench.mjs) through our binary and the provisioned VS Code build: log in,
//! edit and save a file, run a command in the terminal, `code-server FILE` typed into that
//! terminal opens the file in the window, see an extension installed from a .vsix, open a file
//! from the command line, survive a SIGKILL of the VS Code server, sign out (and the session is
//! refused afterwards). Then SIGKILL our binary and check that nothing of VS Code survives it.

use std::path::Path;
use std::process::Command;

use testkit::*;

#[test]
fn workbench_in_chromium() {
    let home = Home::with_vscode();
    home.write_config("auth: password\npassword: browser-pw\n");
    let project = home.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(project.join("hello.txt"), "hello\n").unwrap();
    std::fs::write(project.join("other.txt"), "opened from the command line\n").unwrap();
    std::fs::write(project.join("bar.txt"), "opened from the integrated terminal\n").unwrap();
    // xterm's DOM renderer, so the page's text can be read (headless Chromium has no GPU).
    let user = home.data_dir().join("User");
    std::fs::create_dir_all(&user).unwrap();
    std::fs::write(user.join("settings.json"), r#"{"terminal.integrated.gpuAcceleration": "off"}"#).unwrap();

    let vsix = home.path().join("hello-fixture.vsix");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make_vsix.py");
    assert!(Command::new("python3").arg(script).arg(&vsix).status().unwrap().success());
    let out = run(&home, &["--install-extension", vsix.to_str().unwrap()], &[]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);

    let mut server = Server::start(&home, &["--bind-addr", "127.0.0.1:0", project.to_str().unwrap()], &[]);
    let runtime = home.path().join("run/code-server");
    // `code-server FILE` run the way a user would, with this instance's environment.
    let open_cmd = format!(
        "env -i HOME='{h}' XDG_CONFIG_HOME='{h}/config' XDG_DATA_HOME='{h}/data' XDG_RUNTIME_DIR='{h}/run' \
         CODE_SERVER_VSCODE_DIR='{v}' PATH=\"$PATH\" '{bin}' '{file}'",
        h = home.path().display(),
        v = vscode_dir().display(),
        bin = BIN.display(),
        file = project.join("other.txt").display(),
    );
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let screenshot = home.path().join("failure.png");
    let status = Command::new("node")
        .arg(browser_dir.join("workbench.mjs"))
        .current_dir(&browser_dir)
        .env("CS_URL", &server.address)
        .env("CS_PASSWORD", "browser-pw")
        .env("CS_FILE", "hello.txt")
        .env("CS_EXTENSION", "Hello Fixture Extension")
        .env("CS_KILL_CMD", format!("pkill -9 -f 'server-main[.]js --socket-path {}/'", runtime.display()))
        .env("CS_OPEN_CMD", &open_cmd)
        .env("CS_OPEN_FILE", "other.txt")
        .env("CS_SCREENSHOT", &screenshot)
        .env("CS_TERMINAL_FILE", "bar.txt")
        .env("CS_LOOK", std::env::var_os("CS_LOOK").unwrap_or_else(|| home.path().join("look.png").into()))
        .status()
        .expect("run node (tests/browser: npm ci first)");
    assert!(
        status.success(),
        "the browser run failed (screenshot: {}).\nserver stdout:\n{}\nstderr:\n{}",
        screenshot.display(),
        server.stdout_text(),
        server.stderr_text()
    );
    let saved = std::fs::read_to_string(project.join("hello.txt")).unwrap();
    assert!(saved.contains("typed in the browser"), "the edit reached the disk: {saved:?}");
    assert!(server.stderr_text().contains("VS Code server exited"), "the SIGKILL was seen");

    // We are killed outright: the kernel takes VS Code down with us (PDEATHSIG), and VS Code
    // its extension host and terminal. Nothing is left in its process group or in the folder.
    let pgid = vscode_pid(&server);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    rt.block_on(assert_no_orphans(pgid, Some(&project)));
}
