//! Where a user's workspace is served from. With one front, [`Here`] starts it in this process.
//! With several fronts of one deployment, the shared registry
//! ([`crate::multiuser::registry`]) decides: the front whose claim wins starts it, and every
//! other front forwards to it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::Workspace;
use super::supervisor::NotReady;

/// Where the workspace's VS Code server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// Its socket.
    pub socket: PathBuf,
    /// Run by this front (else by another one on this host).
    pub here: bool,
}

/// Why a workspace cannot be served now.
#[derive(Debug, thiserror::Error)]
pub enum NotPlaced {
    #[error(transparent)]
    NotReady(#[from] NotReady),
    /// It may not start (its storage is over the quota); the message says why, for the user.
    #[error("{0}")]
    Refused(String),
    /// The registry could not be asked (it answers again by itself).
    #[error("{0}")]
    Unavailable(String),
    /// It runs where this front cannot reach it.
    #[error("{0}")]
    Unreachable(String),
}

#[async_trait::async_trait]
pub trait Placement: Send + Sync + 'static {
    /// The workspace's server, started (here or on another front) if need be and waited for,
    /// at most `wait`.
    async fn serve(&self, workspace: &Arc<Workspace>, wait: Duration) -> Result<Served, NotPlaced>;

    /// `served` (from [`Placement::serve`]) refused the connection: what is known of it is
    /// checked again, so the next [`Placement::serve`] does not give it out blindly.
    async fn refused(&self, workspace: &Workspace, served: &Served);
}

/// One front: every workspace runs here.
pub struct Here;

#[async_trait::async_trait]
impl Placement for Here {
    async fn serve(&self, workspace: &Arc<Workspace>, wait: Duration) -> Result<Served, NotPlaced> {
        if let Some(why) = workspace.start_refused() {
            return Err(NotPlaced::Refused(why));
        }
        let socket = workspace.ready(wait).await?;
        Ok(Served { socket, here: true })
    }

    async fn refused(&self, _: &Workspace, _: &Served) {}
}
