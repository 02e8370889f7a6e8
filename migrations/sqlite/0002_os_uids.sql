-- Multi-user mode, part 2: the uids users' VS Code servers run as (os-user isolation).
-- Every uid ever allocated from the configured range stays recorded here, also after its user
-- is deleted: a uid is never handed to a second user, who could otherwise read what the first
-- left behind on disk.
CREATE TABLE os_uids (
    uid BIGINT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL,
    allocated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX users_by_os_uid ON users (os_uid);
