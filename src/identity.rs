//! Who a request is for, once authenticated: the one thing handlers look at.
//!
//! Single-user mode has exactly one identity, the owner, so the same handlers serve one user or
//! many; multi-user mode resolves a session or token to one of its users.

use std::fmt;
use std::sync::Arc;

/// A user's id: random and opaque in multi-user mode; [`UserId::owner`] in single-user mode.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(Arc<str>);

impl UserId {
    pub fn new(id: impl Into<Arc<str>>) -> UserId {
        UserId(id.into())
    }

    /// The one user of single-user mode.
    pub fn owner() -> UserId {
        UserId::new("owner")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a user may do beyond their own things.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    User,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "user" => Some(Role::User),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: UserId,
    /// The user's name (the owner's is the OS account the server runs as).
    pub name: String,
    pub roles: Vec<Role>,
    /// The session's store key; `None` without one (authentication off).
    pub session: Option<String>,
}

impl Identity {
    /// The single user, an admin of their own server.
    pub fn owner(name: &str, session: Option<String>) -> Identity {
        Identity { user: UserId::owner(), name: name.to_string(), roles: vec![Role::Admin], session }
    }

    pub fn is_admin(&self) -> bool {
        self.roles.contains(&Role::Admin)
    }
}
