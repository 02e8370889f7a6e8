//! `test-services start`: one PostgreSQL and one Redis for a whole test run, shared by every test
//! process (see `testkit::services`).
//!
//! It prints `CODE_SERVER_TEST_POSTGRES_URL=...` and `CODE_SERVER_TEST_REDIS_URL=...`, then
//! `ready`, and keeps both servers until its standard input closes or it gets SIGTERM or SIGINT;
//! then it stops them and removes their data. Killed outright, it still leaves nothing behind:
//! each server's supervisor sees its pipe close and cleans up by itself. `scripts/test` runs it
//! as a coprocess.

use std::io::Write;
use std::process::ExitCode;

use testkit::services::{POSTGRES_URL_VAR, PrivatePostgres, PrivateRedis, REDIS_URL_VAR};
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args != ["start"] {
        eprintln!("usage: test-services start");
        return ExitCode::from(2);
    }
    let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("test-services: installing signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let postgres = match PrivatePostgres::try_start().await {
        Ok(pg) => pg,
        Err(e) => {
            eprintln!("test-services: {e}");
            return ExitCode::FAILURE;
        }
    };
    let redis = match tokio::task::spawn_blocking(PrivateRedis::start_blocking).await.expect("a blocking task") {
        Ok(r) => r,
        Err(e) => {
            eprintln!("test-services: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let printed = writeln!(out, "{POSTGRES_URL_VAR}={}", postgres.admin_url())
        .and_then(|()| writeln!(out, "{REDIS_URL_VAR}={}", redis.url()))
        .and_then(|()| writeln!(out, "ready"))
        .and_then(|()| out.flush());
    drop(out);
    if printed.is_ok() {
        // Until whoever started us is done: its end of our input closes, or it signals. The
        // reader is a plain thread, not a blocking task: the runtime would wait for it at exit,
        // and after a signal our input may stay open (scripts/test waits for us with it open).
        let (closed, stdin_closed) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            let _ = closed.send(());
        });
        tokio::select! {
            _ = stdin_closed => {}
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    // Stop both, in order, before exiting (the drops wait for the servers to exit).
    tokio::task::spawn_blocking(move || {
        drop(redis);
        drop(postgres);
    })
    .await
    .expect("a blocking task");
    // Exit now: the runtime would wait for the task still reading standard input, which our
    // owner (a shell's coprocess pipe) may keep open after signalling us.
    std::process::exit(0)
}
