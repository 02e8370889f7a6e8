-- Multi-user mode, part 3: several fronts serving one deployment.
-- `fronts`: the front processes, each heartbeating its row; one whose heartbeat lapsed is dead
-- and its workspaces are reclaimed. `workspace_registry`: where each user's workspace runs. Its
-- primary key is what makes exactly one start per user win, whichever front asks and however
-- many at once: the front whose row is inserted starts it, every other front forwards to it.
CREATE TABLE fronts (
    id TEXT PRIMARY KEY NOT NULL,
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);
CREATE TABLE workspace_registry (
    user_id TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    front_id TEXT NOT NULL REFERENCES fronts (id) ON DELETE CASCADE,
    -- The host the front runs on: only there are its process groups ours to end.
    host TEXT NOT NULL,
    -- `starting` while the front starts it, then `running`, with its address.
    state TEXT NOT NULL,
    -- `unix:/path` of the VS Code server's socket on that host (or `tcp:host:port` for a
    -- spawner that runs it elsewhere); NULL while starting.
    address TEXT,
    -- The server's process group on that host, once running.
    pgid BIGINT,
    started_at BIGINT NOT NULL,
    last_activity_at BIGINT NOT NULL
);
CREATE INDEX workspace_registry_by_front ON workspace_registry (front_id);
