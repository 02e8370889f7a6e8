//! The account actions of the command line (`--add-user NAME`, `--list-users`, ...), done
//! against the configured database directly, so they work whether or not a server is running
//! (a running server sees the change within [`super::sessions::CACHE_FOR`]). Passwords come from
//! a prompt, or from standard input when it is not a terminal; never from argv.

use std::io::{BufRead, IsTerminal, Write};

use super::accounts::{AccountError, Accounts, Actor, AdminChange, NewUser};
use super::config::SessionBackend;
use super::store::{Role, UserQuery};
use crate::util::iso8601;

/// An account action of the command line (`--add-user`, ...): done against the configured
/// database, then the process exits. Read from the options by [`crate::cli`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountCommand {
    Add { username: String, admin: bool, email: Option<String> },
    List,
    ResetPassword(String),
    Disable(String),
    Enable(String),
    Remove(String),
    RevokeSessions(String),
}

/// Runs `command`; the text to print on success, else the error line.
pub async fn run(accounts: &Accounts, sessions: &SessionBackend, command: &AccountCommand) -> Result<String, String> {
    let actor = Actor::cli();
    let fail = |e: AccountError| e.to_string();
    let user_named = |name: &str| {
        let name = name.to_string();
        async move {
            accounts.user_by_name(&name).await.map_err(|e| match e {
                AccountError::NotFound => format!("no such user: {name}"),
                e => e.to_string(),
            })
        }
    };
    match command {
        AccountCommand::Add { username, admin, email } => {
            let password = read_password(&format!("Password for {username}: "), true).await?;
            let role = if *admin { Role::Admin } else { Role::User };
            let new = NewUser { username: username.clone(), email: email.clone(), password, role };
            let user = accounts.create(new, &actor).await.map_err(fail)?;
            Ok(format!("Created user {} ({}), id {}", user.username, user.role.as_str(), user.id))
        }
        AccountCommand::List => {
            let mut out = format!(
                "{:<32}  {:<5}  {:<8}  {:<8}  {:<24}  {}\n",
                "USERNAME", "ROLE", "STATE", "SESSIONS", "LAST LOGIN", "EMAIL"
            );
            let mut offset = 0;
            loop {
                let query = UserQuery { search: None, limit: 500, offset };
                let (users, total) = accounts.list(&query).await.map_err(fail)?;
                for u in &users {
                    let live = accounts.sessions_of(&u.id).await.map_err(fail)?.len();
                    out.push_str(&format!(
                        "{:<32}  {:<5}  {:<8}  {:<8}  {:<24}  {}\n",
                        u.username,
                        u.role.as_str(),
                        if u.active { "active" } else { "disabled" },
                        live,
                        u.last_login_at.map_or_else(|| "never".to_string(), |t| iso8601(t as u64)),
                        u.email.as_deref().unwrap_or("")
                    ));
                }
                offset += users.len() as u32;
                if users.is_empty() || u64::from(offset) >= total {
                    break;
                }
            }
            Ok(out.trim_end().to_string())
        }
        AccountCommand::ResetPassword(name) => {
            let user = user_named(name).await?;
            let password = read_password(&format!("New password for {}: ", user.username), true).await?;
            let change = AdminChange { password: Some(password), ..AdminChange::default() };
            accounts.update(&user.id, change, &actor).await.map_err(fail)?;
            Ok(format!("Password of {} changed; their sessions are revoked", user.username))
        }
        AccountCommand::Disable(name) => {
            let user = user_named(name).await?;
            let change = AdminChange { active: Some(false), ..AdminChange::default() };
            accounts.update(&user.id, change, &actor).await.map_err(fail)?;
            Ok(format!("Disabled {}; their sessions are revoked", user.username))
        }
        AccountCommand::Enable(name) => {
            let user = user_named(name).await?;
            let change = AdminChange { active: Some(true), ..AdminChange::default() };
            accounts.update(&user.id, change, &actor).await.map_err(fail)?;
            Ok(format!("Enabled {}", user.username))
        }
        AccountCommand::Remove(name) => {
            let user = user_named(name).await?;
            accounts.delete(&user.id, &actor).await.map_err(fail)?;
            Ok(format!("Removed {}", user.username))
        }
        AccountCommand::RevokeSessions(name) => {
            if matches!(sessions, SessionBackend::Memory) {
                return Err("sessions are kept in the running server's memory (session.store: memory); \
                            revoke them on its admin page or API"
                    .to_string());
            }
            let user = user_named(name).await?;
            let n = accounts.revoke_sessions(&user.id, &actor).await.map_err(fail)?;
            Ok(format!("Revoked {n} session(s) of {}", user.username))
        }
    }
}

/// A password from a prompt (asked twice) on a terminal, else the first line of standard input.
async fn read_password(prompt: &str, confirm: bool) -> Result<String, String> {
    let prompt = prompt.to_string();
    tokio::task::spawn_blocking(move || {
        if std::io::stdin().is_terminal() {
            let first = rpassword::prompt_password(&prompt).map_err(|e| format!("cannot read the password: {e}"))?;
            if confirm {
                let again =
                    rpassword::prompt_password("Again: ").map_err(|e| format!("cannot read the password: {e}"))?;
                if again != first {
                    return Err("the passwords differ".to_string());
                }
            }
            Ok(first)
        } else {
            let _ = std::io::stderr().flush();
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).map_err(|e| format!("cannot read the password: {e}"))?;
            let line = line.strip_suffix('\n').unwrap_or(&line);
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                return Err("no password: give it on standard input, or run this in a terminal".to_string());
            }
            Ok(line.to_string())
        }
    })
    .await
    .map_err(|e| e.to_string())?
}
