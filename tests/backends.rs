//! One suite for every store backend (MULTIUSER.md: "Each backend passes the same test suite"):
//! each test is written once, as a function of the store, and instantiated below per backend.
//! Users on SQLite (a file in a temporary directory) and PostgreSQL (a fresh database on the
//! run's server); sessions in memory, in the user database (SQLite and PostgreSQL) and in Redis
//! (a fresh key prefix on the run's server); then what only one backend has (Redis expiry,
//! outages, unreachable servers). The servers are real: see `testkit::services`.
//!
//! Times are Unix milliseconds from the real clock: Redis expires keys by it. No test asserts
//! how long anything took; tests that wait for time to pass poll, with a generous bound.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use code_server::multiuser::audit::{self, Audit};
use code_server::multiuser::config::{Database, PostgresConfig, RedisConfig};
use code_server::multiuser::sessions::redis::RedisSessions;
use code_server::multiuser::sessions::{CACHE_FOR, MemorySessions, SessionRecord, SessionStore, UserSessions};
use code_server::multiuser::store::{
    self, ApiToken, AuditEvent, AuditQuery, FrontRecord, Role, StoreError, User, UserChange, UserQuery, UserStore,
    WorkspaceRecord,
};
use code_server::secret::Secret;
use code_server::util::random_hex;

const HOUR: i64 = 3_600_000;
/// The most any wait in these tests may take before it fails (never reached when all is well).
const PATIENCE: Duration = Duration::from_secs(30);

fn now() -> i64 {
    code_server::util::now_ms() as i64
}

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A user store under test, with what opening it again needs.
struct Users {
    store: Arc<dyn UserStore>,
    config: Database,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite_users() -> Users {
    let dir = tempfile::tempdir().unwrap();
    let config = Database::Sqlite { path: dir.path().join("users.db") };
    let store = store::open(&config).await.expect("opening SQLite");
    Users { store, config, _dir: Some(dir) }
}

/// A fresh database on the run's PostgreSQL, configured by its parts (host, port, ...).
async fn postgres_users() -> Users {
    let url = url::Url::parse(&testkit::postgres_database().await).unwrap();
    let config = Database::Postgres(PostgresConfig {
        url: None,
        host: url.host_str().unwrap().to_string(),
        port: url.port().unwrap(),
        database: url.path().trim_start_matches('/').to_string(),
        user: url.username().to_string(),
        password: None,
    });
    let store = store::open(&config).await.expect("opening PostgreSQL");
    Users { store, config, _dir: None }
}

enum Kind {
    Memory,
    Database,
    Redis(RedisConfig),
}

/// A session store under test; the database backends also have the user store their sessions
/// belong to (a session's user must exist there).
struct Sessions {
    store: Arc<dyn SessionStore>,
    users: Option<Users>,
    kind: Kind,
}

impl Sessions {
    /// A user to own sessions: in the user database when there is one.
    async fn owner(&self, name: &str) -> String {
        let u = user(name);
        if let Some(users) = &self.users {
            users.store.create_user(&u).await.unwrap();
        }
        u.id
    }

    /// The same sessions through a connection of their own, as another front sees them.
    async fn another_front(&self) -> Arc<dyn SessionStore> {
        match &self.kind {
            Kind::Memory => self.store.clone(),
            Kind::Database => store::open(&self.users.as_ref().unwrap().config).await.unwrap().sessions(),
            Kind::Redis(cfg) => Arc::new(redis_connect(cfg).await),
        }
    }

    fn redis(&self) -> Option<&RedisConfig> {
        match &self.kind {
            Kind::Redis(cfg) => Some(cfg),
            _ => None,
        }
    }
}

async fn memory_sessions() -> Sessions {
    Sessions { store: Arc::new(MemorySessions::default()), users: None, kind: Kind::Memory }
}

async fn sqlite_sessions() -> Sessions {
    let users = sqlite_users().await;
    Sessions { store: users.store.sessions(), users: Some(users), kind: Kind::Database }
}

async fn postgres_sessions() -> Sessions {
    let users = postgres_users().await;
    Sessions { store: users.store.sessions(), users: Some(users), kind: Kind::Database }
}

async fn redis_sessions() -> Sessions {
    let (url, prefix) = testkit::redis_prefix();
    let cfg = redis_config(&url, &prefix);
    Sessions { store: Arc::new(redis_connect(&cfg).await), users: None, kind: Kind::Redis(cfg) }
}

fn redis_config(url: &str, prefix: &str) -> RedisConfig {
    RedisConfig {
        url: Some(Secret::new(url)),
        host: String::new(),
        port: 0,
        password: None,
        db: 0,
        prefix: prefix.to_string(),
    }
}

async fn redis_connect(cfg: &RedisConfig) -> RedisSessions {
    match RedisSessions::connect(cfg).await {
        Ok(r) => r,
        Err(e) => panic!("connecting to Redis: {e}"),
    }
}

/// A raw connection, to look at the keys themselves.
async fn raw_redis(cfg: &RedisConfig) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(cfg.connection_url().expose()).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

fn user(name: &str) -> User {
    let t = now();
    User {
        id: random_hex(16),
        username: name.to_string(),
        email: Some(format!("{name}@example.com")),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".to_string(),
        role: Role::User,
        active: true,
        created_at: t,
        updated_at: t,
        last_login_at: None,
        password_changed_at: t,
        os_uid: None,
    }
}

fn session(user_id: &str, created_at: i64, expires_at: i64) -> SessionRecord {
    SessionRecord {
        id: random_hex(16),
        key: random_hex(32),
        user_id: user_id.to_string(),
        ip: Some("127.0.0.1".to_string()),
        user_agent: Some("backends test".to_string()),
        created_at,
        last_seen_at: created_at,
        expires_at,
    }
}

fn token(user_id: &str, name: &str, created_at: i64) -> ApiToken {
    ApiToken {
        id: random_hex(16),
        user_id: user_id.to_string(),
        name: name.to_string(),
        token_hash: random_hex(32),
        created_at,
        last_used_at: None,
    }
}

/// Waits (polling) until the real clock is past `at`.
async fn until_past(at: i64) {
    let deadline = Instant::now() + PATIENCE;
    while now() <= at {
        assert!(Instant::now() < deadline, "the clock did not pass {at}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ids(records: &[SessionRecord]) -> Vec<String> {
    records.iter().map(|r| r.id.clone()).collect()
}

// ---------------------------------------------------------------------------------------------
// Each test, once per backend

/// Instantiates each named test as `#[tokio::test]` on the store `$fixture` makes.
macro_rules! tests_on {
    ($fixture:ident: $($test:ident),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $test() {
                super::$test(super::$fixture().await).await;
            }
        )+
    };
}

macro_rules! user_store_suite {
    ($fixture:ident) => {
        tests_on!(
            $fixture: users_create_and_get,
            users_list_pages_searches_and_counts,
            users_update_changes_only_what_is_given,
            users_unique_username_and_email,
            users_delete_cascades_to_tokens_and_sessions,
            os_uids_are_unique_never_reused_and_skip_taken_ones,
            tokens_create_list_use_delete,
            audit_append_is_idempotent_and_query_filters,
            audit_pages_by_cursor_newest_first,
            audit_writer_writes_to_the_database,
            migrations_run_twice,
            fronts_heartbeat_until_retired,
            one_claim_of_a_workspace_wins_across_fronts,
            a_dead_fronts_workspaces_are_reclaimed,
            workspace_activity_and_rows_per_front,
        );
    };
}

macro_rules! session_store_suite {
    ($fixture:ident) => {
        tests_on!(
            $fixture: sessions_insert_get_and_expiry,
            sessions_touch_extends,
            sessions_remove,
            sessions_remove_by_id_only_for_the_owner,
            sessions_remove_all_of_a_user,
            sessions_of_user_oldest_first_once_each_live_only,
            sessions_count_and_prune,
            policy_sixth_session_revokes_the_oldest,
            policy_only_live_sessions_count,
            policy_revoked_is_invalid_at_once_on_this_front,
            policy_revoke_reaches_another_front_within_the_cache_time,
        );
    };
}

mod users_sqlite {
    user_store_suite!(sqlite_users);
}
mod users_postgres {
    user_store_suite!(postgres_users);
}
mod sessions_memory {
    session_store_suite!(memory_sessions);
}
mod sessions_sqlite {
    session_store_suite!(sqlite_sessions);
}
mod sessions_postgres {
    session_store_suite!(postgres_sessions);
}
mod sessions_redis {
    session_store_suite!(redis_sessions);
}

// ---------------------------------------------------------------------------------------------
// Users

async fn users_create_and_get(u: Users) {
    let s = &u.store;
    let mut alice = user("alice");
    alice.last_login_at = Some(alice.created_at - 5);
    alice.role = Role::Admin;
    s.create_user(&alice).await.unwrap();
    let mut bob = user("bob");
    bob.email = None;
    bob.active = false;
    s.create_user(&bob).await.unwrap();

    assert_eq!(s.user_by_id(&alice.id).await.unwrap().as_ref(), Some(&alice), "every field as written");
    assert_eq!(s.user_by_name("alice").await.unwrap().as_ref(), Some(&alice));
    assert_eq!(s.user_by_name("bob").await.unwrap().as_ref(), Some(&bob), "no email, inactive");
    assert_eq!(s.user_by_id("no-such-id").await.unwrap(), None);
    assert_eq!(s.user_by_name("carol").await.unwrap(), None);
    assert_eq!(s.count_users().await.unwrap(), 2);
    assert!(!s.describe().is_empty());
}

async fn users_list_pages_searches_and_counts(u: Users) {
    let s = &u.store;
    let mut names: Vec<String> = (1..=7).map(|i| format!("user{i:02}")).collect();
    names.extend(["bob".to_string(), "x_y".to_string(), "zed".to_string()]);
    for name in &names {
        let mut new = user(name);
        if name == "bob" {
            new.email = Some("robert@corp.example".to_string());
        }
        if name == "zed" {
            new.email = None;
        }
        s.create_user(&new).await.unwrap();
    }
    let list = |search: Option<&str>, limit: u32, offset: u32| {
        let q = UserQuery { search: search.map(str::to_string), limit, offset };
        let s = s.clone();
        async move {
            let (users, total) = s.list_users(&q).await.unwrap();
            (users.into_iter().map(|u| u.username).collect::<Vec<_>>(), total)
        }
    };
    let mut sorted = names.clone();
    sorted.sort();

    // Pages by username, and the total of all that match.
    let mut paged = vec![];
    for offset in (0..12).step_by(4) {
        let (page, total) = list(None, 4, offset).await;
        assert_eq!(total, 10, "the total counts every match, not the page");
        assert!(page.len() <= 4);
        paged.extend(page);
    }
    assert_eq!(paged, sorted, "pages in username order, each user once");
    assert_eq!(list(None, 4, 40).await, (vec![], 10), "past the end");

    // Search: part of the username or the email, case-blind; pattern characters are literal.
    assert_eq!(list(Some("USER0"), 3, 0).await, (vec!["user01".into(), "user02".into(), "user03".into()], 7));
    assert_eq!(list(Some("USER0"), 3, 6).await, (vec!["user07".into()], 7));
    assert_eq!(list(Some("Corp.Example"), 10, 0).await, (vec!["bob".into()], 1), "by email");
    assert_eq!(list(Some("_"), 10, 0).await, (vec!["x_y".into()], 1), "`_` is not a wildcard");
    assert_eq!(list(Some("%"), 10, 0).await, (vec![], 0), "`%` is not a wildcard");
    assert_eq!(list(Some("zed"), 10, 0).await, (vec!["zed".into()], 1), "a user without email");
    assert_eq!(list(Some("nobody"), 10, 0).await, (vec![], 0));
}

async fn users_update_changes_only_what_is_given(u: Users) {
    let s = &u.store;
    let alice = user("alice");
    let bob = user("bob");
    s.create_user(&alice).await.unwrap();
    s.create_user(&bob).await.unwrap();
    let t = alice.created_at + 1000;

    let changed = s
        .update_user(
            &alice.id,
            &UserChange {
                email: Some(Some("alice@new.example".into())),
                role: Some(Role::Admin),
                active: Some(false),
                ..Default::default()
            },
            t,
        )
        .await
        .unwrap();
    let expected = User {
        email: Some("alice@new.example".into()),
        role: Role::Admin,
        active: false,
        updated_at: t,
        ..alice.clone()
    };
    assert_eq!(changed, expected, "the password and its time stay");
    assert_eq!(s.user_by_id(&alice.id).await.unwrap(), Some(expected.clone()), "and it is stored");

    let changed = s
        .update_user(
            &alice.id,
            &UserChange { password_hash: Some("$argon2id$new".into()), ..Default::default() },
            t + 1,
        )
        .await
        .unwrap();
    assert_eq!(
        changed,
        User {
            password_hash: "$argon2id$new".into(),
            password_changed_at: t + 1,
            updated_at: t + 1,
            ..expected.clone()
        }
    );

    // A sign-in is not a change of the account.
    let changed = s
        .update_user(&alice.id, &UserChange { last_login_at: Some(t + 2), ..Default::default() }, t + 2)
        .await
        .unwrap();
    assert_eq!(changed.last_login_at, Some(t + 2));
    assert_eq!(changed.updated_at, t + 1);

    let cleared =
        s.update_user(&alice.id, &UserChange { email: Some(None), ..Default::default() }, t + 3).await.unwrap();
    assert_eq!(cleared.email, None, "Some(None) clears the email");
    assert_eq!(cleared.role, Role::Admin);

    let nothing = s.update_user(&alice.id, &UserChange::default(), t + 4).await.unwrap();
    assert_eq!(nothing, cleared, "an empty change changes nothing");

    match s.update_user(&alice.id, &UserChange { email: Some(bob.email.clone()), ..Default::default() }, t + 5).await {
        Err(StoreError::Conflict(field)) => assert_eq!(field, "email"),
        other => panic!("taking bob's email: {other:?}"),
    }
    match s.update_user("no-such-id", &UserChange { active: Some(true), ..Default::default() }, t).await {
        Err(StoreError::NotFound) => {}
        other => panic!("updating nobody: {other:?}"),
    }
    assert_eq!(s.user_by_id(&bob.id).await.unwrap(), Some(bob), "bob is untouched");
}

async fn users_unique_username_and_email(u: Users) {
    let s = &u.store;
    let alice = user("alice");
    s.create_user(&alice).await.unwrap();

    let mut again = user("alice");
    again.email = Some("other@example.com".into());
    match s.create_user(&again).await {
        Err(StoreError::Conflict(field)) => assert_eq!(field, "username"),
        other => panic!("a second alice: {other:?}"),
    }
    let mut bob = user("bob");
    bob.email = alice.email.clone();
    match s.create_user(&bob).await {
        Err(StoreError::Conflict(field)) => assert_eq!(field, "email"),
        other => panic!("bob with alice's email: {other:?}"),
    }
    // Users without email do not collide with each other.
    for name in ["carol", "dave"] {
        let mut new = user(name);
        new.email = None;
        s.create_user(&new).await.unwrap();
    }
    assert_eq!(s.count_users().await.unwrap(), 3);
    assert_eq!(s.user_by_name("alice").await.unwrap(), Some(alice), "the first alice is intact");
}

async fn users_delete_cascades_to_tokens_and_sessions(u: Users) {
    let s = &u.store;
    let sessions = s.sessions();
    let (alice, bob) = (user("alice"), user("bob"));
    s.create_user(&alice).await.unwrap();
    s.create_user(&bob).await.unwrap();
    let t = now();
    let alice_token = token(&alice.id, "ci", t);
    let bob_token = token(&bob.id, "ci", t);
    s.create_token(&alice_token).await.unwrap();
    s.create_token(&bob_token).await.unwrap();
    let alice_session = session(&alice.id, t, t + HOUR);
    let bob_session = session(&bob.id, t, t + HOUR);
    sessions.insert(&alice_session).await.unwrap();
    sessions.insert(&bob_session).await.unwrap();

    s.delete_user(&alice.id).await.unwrap();
    assert_eq!(s.user_by_id(&alice.id).await.unwrap(), None);
    assert_eq!(s.tokens_of(&alice.id).await.unwrap(), vec![]);
    assert_eq!(s.use_token(&alice_token.token_hash, t).await.unwrap(), None, "her token signs no one in");
    assert_eq!(sessions.get(&alice_session.key, t).await.unwrap(), None, "nor her session");
    assert_eq!(sessions.of_user(&alice.id, t).await.unwrap(), vec![]);

    assert_eq!(s.tokens_of(&bob.id).await.unwrap(), vec![bob_token]);
    assert_eq!(sessions.get(&bob_session.key, t).await.unwrap(), Some(bob_session));
    assert_eq!(s.count_users().await.unwrap(), 1);
    match s.delete_user(&alice.id).await {
        Err(StoreError::NotFound) => {}
        other => panic!("deleting alice twice: {other:?}"),
    }
}

async fn os_uids_are_unique_never_reused_and_skip_taken_ones(u: Users) {
    let s = u.store.clone();
    let range = (300_000, 300_011);
    let t = now();
    // Ten users at once, from what could be ten fronts: ten different uids of the range.
    let users: Vec<User> = (0..10).map(|i| user(&format!("u{i}"))).collect();
    for x in &users {
        s.create_user(x).await.unwrap();
    }
    let skip = |uid: u32| uid == 300_003;
    let tasks = users.iter().map(|x| {
        let (s, id) = (s.clone(), x.id.clone());
        tokio::spawn(async move { s.allocate_os_uid(&id, range, &skip, t).await.unwrap() })
    });
    let mut uids = vec![];
    for t in tasks {
        uids.push(t.await.unwrap());
    }
    let mut sorted = uids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 10, "no uid twice: {uids:?}");
    assert!(uids.iter().all(|u| (300_000..=300_011).contains(u) && *u != 300_003), "{uids:?}");
    // Asking again gives the same uid, and it is stored with the user.
    let first = &users[0];
    assert_eq!(s.allocate_os_uid(&first.id, range, &skip, t).await.unwrap(), uids[0]);
    assert_eq!(s.user_by_id(&first.id).await.unwrap().unwrap().os_uid, Some(uids[0]));

    // A deleted user's uid is never handed out again: the range (12 uids, one taken) has one
    // left, then none.
    s.delete_user(&first.id).await.unwrap();
    let late = user("late");
    s.create_user(&late).await.unwrap();
    let got = s.allocate_os_uid(&late.id, range, &skip, t).await.unwrap();
    assert!(!uids.contains(&got), "{got} was someone's");
    let later = user("later");
    s.create_user(&later).await.unwrap();
    match s.allocate_os_uid(&later.id, range, &skip, t).await {
        Err(StoreError::Conflict("uid")) => {}
        other => panic!("an exhausted range: {other:?}"),
    }
    // A system account's uid is recorded as is, once.
    assert_eq!(s.set_os_uid(&later.id, 1234).await.unwrap(), 1234);
    assert_eq!(s.set_os_uid(&later.id, 999).await.unwrap(), 1234, "theirs stands");
}

async fn tokens_create_list_use_delete(u: Users) {
    let s = &u.store;
    let (alice, bob) = (user("alice"), user("bob"));
    s.create_user(&alice).await.unwrap();
    s.create_user(&bob).await.unwrap();
    let t = now();
    let second = token(&alice.id, "laptop", t + 1);
    let first = token(&alice.id, "ci", t);
    let bobs = token(&bob.id, "bob's", t);
    for tk in [&second, &first, &bobs] {
        s.create_token(tk).await.unwrap();
    }
    assert_eq!(s.tokens_of(&alice.id).await.unwrap(), vec![first.clone(), second.clone()], "oldest first");

    let used = s.use_token(&second.token_hash, t + 50).await.unwrap();
    assert_eq!(used, Some(ApiToken { last_used_at: Some(t + 50), ..second.clone() }));
    assert_eq!(s.tokens_of(&alice.id).await.unwrap()[1].last_used_at, Some(t + 50), "the use is recorded");
    assert_eq!(s.use_token(&random_hex(32), t).await.unwrap(), None, "an unknown token");

    assert!(!s.delete_token(&bob.id, &first.id).await.unwrap(), "bob cannot delete alice's token");
    assert_eq!(s.tokens_of(&alice.id).await.unwrap().len(), 2);
    assert!(s.delete_token(&alice.id, &first.id).await.unwrap());
    assert!(!s.delete_token(&alice.id, &first.id).await.unwrap(), "gone already");
    assert_eq!(s.use_token(&first.token_hash, t).await.unwrap(), None, "a deleted token signs no one in");
    assert_eq!(s.tokens_of(&alice.id).await.unwrap().iter().map(|t| &t.id).collect::<Vec<_>>(), vec![&second.id]);
    assert_eq!(s.tokens_of(&bob.id).await.unwrap(), vec![bobs]);
}

/// Twelve events over two users, two kinds and both statuses, with two pairs at the same
/// millisecond (the cursor must still order and split them).
fn audit_events() -> Vec<AuditEvent> {
    let base = now() - HOUR;
    (0..12)
        .map(|i| AuditEvent {
            id: random_hex(16),
            at: base + [0, 10, 10, 20, 30, 40, 50, 50, 60, 70, 80, 90][i],
            kind: if i % 3 == 0 { audit::kind::LOGOUT } else { audit::kind::LOGIN }.to_string(),
            status: if i % 4 == 1 { "failure" } else { "success" }.to_string(),
            user_id: Some(if i % 2 == 0 { "u-alice" } else { "u-bob" }.to_string()),
            username: Some(if i % 2 == 0 { "alice" } else { "bob" }.to_string()),
            actor: (i == 5).then(|| "cli".to_string()),
            ip: Some(format!("10.0.0.{i}")),
            details: serde_json::json!({ "n": i, "nested": { "ok": true } }),
        })
        .collect()
}

/// `events` newest first, as a query must answer.
fn newest_first(mut events: Vec<AuditEvent>) -> Vec<AuditEvent> {
    events.sort_by(|a, b| (b.at, &b.id).cmp(&(a.at, &a.id)));
    events
}

async fn audit_append_is_idempotent_and_query_filters(u: Users) {
    let s = &u.store;
    let events = audit_events();
    s.append_audit(&events[..8]).await.unwrap();
    // A retried batch: some already written, some new.
    s.append_audit(&events[5..]).await.unwrap();
    s.append_audit(&events[..3]).await.unwrap();
    s.append_audit(&[]).await.unwrap();

    let q = |f: &dyn Fn(&mut AuditQuery)| {
        let mut q = AuditQuery { limit: 100, ..Default::default() };
        f(&mut q);
        q
    };
    let all = s.query_audit(&q(&|_| {})).await.unwrap();
    assert_eq!(all, newest_first(events.clone()), "each event once, every field as written, newest first");

    let expect =
        |pred: &dyn Fn(&AuditEvent) -> bool| newest_first(events.iter().filter(|e| pred(e)).cloned().collect());
    assert_eq!(
        s.query_audit(&q(&|q| q.user_id = Some("u-alice".into()))).await.unwrap(),
        expect(&|e| e.user_id.as_deref() == Some("u-alice"))
    );
    assert_eq!(
        s.query_audit(&q(&|q| q.kind = Some(audit::kind::LOGOUT.into()))).await.unwrap(),
        expect(&|e| e.kind == audit::kind::LOGOUT)
    );
    assert_eq!(
        s.query_audit(&q(&|q| q.status = Some("failure".into()))).await.unwrap(),
        expect(&|e| e.status == "failure")
    );
    let (from, to) = (events[3].at, events[7].at);
    let ranged = s
        .query_audit(&q(&|q| {
            q.from = Some(from);
            q.to = Some(to);
        }))
        .await
        .unwrap();
    assert_eq!(ranged, expect(&|e| e.at >= from && e.at <= to), "from and to are inclusive");
    assert_eq!(ranged.len(), 5, "both bounds' events, the pair at `to` included");
    let combined = s
        .query_audit(&q(&|q| {
            q.user_id = Some("u-bob".into());
            q.kind = Some(audit::kind::LOGIN.into());
            q.status = Some("success".into());
            q.from = Some(from);
        }))
        .await
        .unwrap();
    assert_eq!(
        combined,
        expect(&|e| e.user_id.as_deref() == Some("u-bob")
            && e.kind == audit::kind::LOGIN
            && e.status == "success"
            && e.at >= from)
    );
    assert!(!combined.is_empty());
    assert_eq!(s.query_audit(&q(&|q| q.user_id = Some("u-nobody".into()))).await.unwrap(), vec![]);
    assert_eq!(s.query_audit(&q(&|q| q.limit = 4)).await.unwrap(), all[..4].to_vec(), "the limit keeps the newest");
}

async fn audit_pages_by_cursor_newest_first(u: Users) {
    let s = &u.store;
    let events = audit_events();
    s.append_audit(&events).await.unwrap();
    let all = newest_first(events.clone());
    for limit in [1, 3, 5] {
        let mut pages: Vec<AuditEvent> = vec![];
        let mut before = None;
        loop {
            let page =
                s.query_audit(&AuditQuery { limit, before: before.clone(), ..Default::default() }).await.unwrap();
            assert!(page.len() <= limit as usize);
            let Some(last) = page.last() else { break };
            before = Some((last.at, last.id.clone()));
            pages.extend(page);
        }
        assert_eq!(pages, all, "pages of {limit}: every event once, in order, across equal times");
    }
    // The cursor with a filter: bob's events only.
    let bobs: Vec<AuditEvent> = all.iter().filter(|e| e.user_id.as_deref() == Some("u-bob")).cloned().collect();
    let first =
        s.query_audit(&AuditQuery { user_id: Some("u-bob".into()), limit: 2, ..Default::default() }).await.unwrap();
    let last = first.last().unwrap();
    let rest = s
        .query_audit(&AuditQuery {
            user_id: Some("u-bob".into()),
            before: Some((last.at, last.id.clone())),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!([first, rest].concat(), bobs);
}

async fn audit_writer_writes_to_the_database(u: Users) {
    let audit = Audit::start(None, Some(u.store.clone())).unwrap();
    audit.record(audit::Event::new(audit::kind::USER_CREATED, true).user("u1", "alice").actor(Some("cli")));
    audit.record(audit::Event::new(audit::kind::LOGIN, false).user("u1", "alice").ip(Some("10.1.2.3")));
    audit.flush(PATIENCE).await;
    let found = audit.query(&AuditQuery { user_id: Some("u1".into()), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(u.store.query_audit(&AuditQuery { limit: 10, ..Default::default() }).await.unwrap(), found);
    let failure = found.iter().find(|e| e.kind == audit::kind::LOGIN).unwrap();
    assert_eq!((failure.status.as_str(), failure.ip.as_deref()), ("failure", Some("10.1.2.3")));
    audit.close().await;
}

async fn migrations_run_twice(u: Users) {
    let alice = user("alice");
    u.store.create_user(&alice).await.unwrap();
    // Opened again (a second front, or a restart): the migrations find their work done.
    let config = match &u.config {
        // And by URL this time.
        Database::Postgres(pg) => Database::Postgres(PostgresConfig {
            url: Some(Secret::new(format!("postgres://{}@{}:{}/{}", pg.user, pg.host, pg.port, pg.database))),
            ..pg.clone()
        }),
        other => other.clone(),
    };
    let again = store::open(&config).await.expect("opening the migrated database again");
    assert_eq!(again.user_by_name("alice").await.unwrap(), Some(alice));
    let third = store::open(&config).await.expect("and again");
    assert_eq!(third.count_users().await.unwrap(), 1);
    third.close().await;
    again.close().await;
    assert_eq!(u.store.count_users().await.unwrap(), 1, "the first pool is unaffected");
}

// ---------------------------------------------------------------------------------------------
// The workspace registry (several fronts)

fn front(id: &str, heartbeat_at: i64) -> FrontRecord {
    FrontRecord { id: id.into(), host: "devbox".into(), pid: 4242, started_at: heartbeat_at, heartbeat_at }
}

fn claim(user_id: &str, front_id: &str, at: i64) -> WorkspaceRecord {
    WorkspaceRecord {
        user_id: user_id.into(),
        front_id: front_id.into(),
        host: "devbox".into(),
        address: None,
        pgid: None,
        started_at: at,
        last_activity_at: at,
    }
}

async fn fronts_heartbeat_until_retired(u: Users) {
    let s = &u.store;
    let t = now();
    assert!(!s.heartbeat_front("a", t).await.unwrap(), "no row, no heartbeat");
    s.register_front(&front("a", t)).await.unwrap();
    s.register_front(&front("a", t)).await.unwrap(); // registering again is harmless
    assert!(s.heartbeat_front("a", t + 1).await.unwrap());
    let alice = user("alice");
    s.create_user(&alice).await.unwrap();
    s.claim_workspace(&claim(&alice.id, "a", t)).await.unwrap();
    s.retire_front("a").await.unwrap();
    assert!(!s.heartbeat_front("a", t + 2).await.unwrap(), "a retired front's heartbeat finds no row");
    assert_eq!(s.workspace_of(&alice.id).await.unwrap(), None, "its workspaces' rows went with it");
}

async fn one_claim_of_a_workspace_wins_across_fronts(u: Users) {
    let s = u.store.clone();
    let t = now();
    for f in ["a", "b", "c"] {
        s.register_front(&front(f, t)).await.unwrap();
    }
    let alice = user("alice");
    s.create_user(&alice).await.unwrap();
    // Twelve claims at once from three fronts: every one sees the same winner.
    let tasks = (0..12).map(|i| {
        let (s, claim) = (s.clone(), claim(&alice.id, ["a", "b", "c"][i % 3], t));
        tokio::spawn(async move { s.claim_workspace(&claim).await.unwrap() })
    });
    let mut winners = BTreeSet::new();
    for task in tasks {
        let row = task.await.unwrap();
        assert_eq!(row.state(), "starting");
        winners.insert(row.front_id);
    }
    assert_eq!(winners.len(), 1, "one start wins: {winners:?}");
    let winner = winners.pop_first().unwrap();
    let loser = if winner == "a" { "b" } else { "a" };
    // Only the winner can say where it runs, or give it up.
    assert!(!s.workspace_running(&alice.id, loser, "unix:/elsewhere.sock", Some(9)).await.unwrap());
    assert!(s.workspace_running(&alice.id, &winner, "unix:/run/alice.sock", Some(1234)).await.unwrap());
    let (row, holder) = s.workspace_of(&alice.id).await.unwrap().unwrap();
    assert_eq!((row.front_id.as_str(), row.state()), (winner.as_str(), "running"));
    assert_eq!((row.address.as_deref(), row.pgid), (Some("unix:/run/alice.sock"), Some(1234)));
    assert_eq!(holder, front(&winner, t), "with the front that has it");
    assert_eq!(s.claim_workspace(&claim(&alice.id, loser, t)).await.unwrap(), row, "a later claim changes nothing");
    assert!(!s.release_workspace(&alice.id, loser).await.unwrap());
    assert!(s.release_workspace(&alice.id, &winner).await.unwrap());
    assert_eq!(s.workspace_of(&alice.id).await.unwrap(), None);
    // Released, it is anyone's again.
    assert_eq!(s.claim_workspace(&claim(&alice.id, loser, t)).await.unwrap().front_id, loser);
    // A deleted user's row goes with them.
    s.delete_user(&alice.id).await.unwrap();
    assert_eq!(s.workspace_of(&alice.id).await.unwrap(), None);
}

async fn a_dead_fronts_workspaces_are_reclaimed(u: Users) {
    let s = &u.store;
    let t = now();
    s.register_front(&front("dead", t - 60_000)).await.unwrap();
    s.register_front(&front("live", t)).await.unwrap();
    let (alice, bob) = (user("alice"), user("bob"));
    s.create_user(&alice).await.unwrap();
    s.create_user(&bob).await.unwrap();
    s.claim_workspace(&claim(&alice.id, "dead", t - 60_000)).await.unwrap();
    s.workspace_running(&alice.id, "dead", "unix:/run/a.sock", Some(77)).await.unwrap();
    s.claim_workspace(&claim(&bob.id, "live", t)).await.unwrap();
    // Held by a front whose heartbeat lapsed: another front still sees it taken until reclaimed.
    assert_eq!(s.claim_workspace(&claim(&alice.id, "live", t)).await.unwrap().front_id, "dead");
    let reclaimed = s.reclaim_fronts(t - 30_000).await.unwrap();
    assert_eq!(reclaimed.len(), 1, "{reclaimed:?}");
    assert_eq!((reclaimed[0].user_id.as_str(), reclaimed[0].pgid), (alice.id.as_str(), Some(77)));
    assert!(s.reclaim_fronts(t - 30_000).await.unwrap().is_empty(), "once");
    assert!(!s.heartbeat_front("dead", t).await.unwrap(), "the dead front learns it was taken for dead");
    assert_eq!(s.workspace_of(&bob.id).await.unwrap().unwrap().0.front_id, "live", "a live front keeps its own");
    assert_eq!(s.claim_workspace(&claim(&alice.id, "live", t)).await.unwrap().front_id, "live");

    // A front seen gone (its process is not there) is reclaimed at once, heartbeat or not.
    s.register_front(&front("gone", t)).await.unwrap();
    s.release_workspace(&bob.id, "live").await.unwrap();
    s.claim_workspace(&claim(&bob.id, "gone", t)).await.unwrap();
    assert!(s.reclaim_fronts(t - 30_000).await.unwrap().is_empty(), "a fresh heartbeat");
    s.expire_front("gone").await.unwrap();
    let reclaimed = s.reclaim_fronts(t - 30_000).await.unwrap();
    assert_eq!(reclaimed.iter().map(|r| r.user_id.as_str()).collect::<Vec<_>>(), [bob.id.as_str()]);
    assert!(!s.heartbeat_front("gone", t).await.unwrap());
}

async fn workspace_activity_and_rows_per_front(u: Users) {
    let s = &u.store;
    let t = now();
    s.register_front(&front("a", t)).await.unwrap();
    s.register_front(&front("b", t)).await.unwrap();
    let users: Vec<User> = ["alice", "bob", "carol"].iter().map(|n| user(n)).collect();
    for (x, f) in users.iter().zip(["a", "b", "a"]) {
        s.create_user(x).await.unwrap();
        s.claim_workspace(&claim(&x.id, f, t)).await.unwrap();
    }
    let of_a: Vec<String> = s.workspaces_of_front("a").await.unwrap().into_iter().map(|r| r.user_id).collect();
    let mut expected = vec![users[0].id.clone(), users[2].id.clone()];
    expected.sort();
    assert_eq!(of_a, expected);
    let mut everyone: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
    everyone.sort();
    let all: Vec<String> = s.all_workspaces().await.unwrap().into_iter().map(|r| r.user_id).collect();
    assert_eq!(all, everyone, "every front's rows");
    // Activity seen by any front is recorded, and never moved back.
    s.touch_workspaces(&[users[0].id.clone(), users[1].id.clone()], t + 5_000).await.unwrap();
    s.touch_workspaces(&[users[0].id.clone()], t + 1_000).await.unwrap();
    for (x, expected) in users.iter().zip([t + 5_000, t + 5_000, t]) {
        assert_eq!(s.workspace_of(&x.id).await.unwrap().unwrap().0.last_activity_at, expected, "{}", x.username);
    }
}

// ---------------------------------------------------------------------------------------------
// Sessions

async fn sessions_insert_get_and_expiry(s: Sessions) {
    let st = &s.store;
    let alice = s.owner("alice").await;
    let t = now();
    let r = SessionRecord { ip: None, user_agent: None, ..session(&alice, t, t + HOUR) };
    let full = session(&alice, t + 1, t + HOUR);
    st.insert(&r).await.unwrap();
    st.insert(&full).await.unwrap();

    assert_eq!(st.get(&r.key, t).await.unwrap(), Some(r.clone()), "every field as written");
    assert_eq!(st.get(&full.key, t).await.unwrap(), Some(full.clone()));
    assert_eq!(st.get(&random_hex(32), t).await.unwrap(), None);
    assert_eq!(st.get(&r.key, r.expires_at - 1).await.unwrap(), Some(r.clone()), "live until expires_at");
    assert_eq!(st.get(&r.key, r.expires_at).await.unwrap(), None, "expired at expires_at");
    assert_eq!(st.of_user(&alice, r.expires_at).await.unwrap(), vec![], "an expired session is not listed");
    // Asking about a later time removes nothing that is still live now.
    assert_eq!(st.of_user(&alice, t).await.unwrap(), vec![r.clone(), full.clone()]);
    assert_eq!(st.get(&r.key, t).await.unwrap(), Some(r));
    assert_eq!(st.count(t).await.unwrap(), 2);
    assert!(!st.describe().is_empty());
}

async fn sessions_touch_extends(s: Sessions) {
    let st = &s.store;
    let alice = s.owner("alice").await;
    let t = now();
    let r = session(&alice, t, t + 60_000);
    st.insert(&r).await.unwrap();
    st.touch(&r.key, t + 5, t + HOUR).await.unwrap();
    let touched = SessionRecord { last_seen_at: t + 5, expires_at: t + HOUR, ..r.clone() };
    assert_eq!(st.get(&r.key, t + 60_000).await.unwrap(), Some(touched.clone()), "live past its old expiry");
    assert_eq!(st.of_user(&alice, t + 60_000).await.unwrap(), vec![touched.clone()]);
    if let Some(cfg) = s.redis() {
        // Redis keeps it that long too.
        let ttl: i64 = redis::cmd("PTTL")
            .arg(format!("{}session:{}", cfg.prefix, r.key))
            .query_async(&mut raw_redis(cfg).await)
            .await
            .unwrap();
        assert!(ttl > 60_000, "the key's TTL follows the new expiry: {ttl} ms");
    }
    // Touching a session that is not there creates nothing.
    let ghost = random_hex(32);
    st.touch(&ghost, t, t + HOUR).await.unwrap();
    assert_eq!(st.get(&ghost, t).await.unwrap(), None);
    assert_eq!(st.count(t).await.unwrap(), 1);
}

async fn sessions_remove(s: Sessions) {
    let st = &s.store;
    let alice = s.owner("alice").await;
    let t = now();
    let (r, other) = (session(&alice, t, t + HOUR), session(&alice, t + 1, t + HOUR));
    st.insert(&r).await.unwrap();
    st.insert(&other).await.unwrap();
    assert!(st.remove(&r.key).await.unwrap());
    assert_eq!(st.get(&r.key, t).await.unwrap(), None);
    assert!(!st.remove(&r.key).await.unwrap(), "gone already");
    assert!(!st.remove(&random_hex(32)).await.unwrap());
    assert_eq!(st.of_user(&alice, t).await.unwrap(), vec![other]);
}

async fn sessions_remove_by_id_only_for_the_owner(s: Sessions) {
    let st = &s.store;
    let (alice, bob) = (s.owner("alice").await, s.owner("bob").await);
    let t = now();
    let (a, b) = (session(&alice, t, t + HOUR), session(&bob, t, t + HOUR));
    st.insert(&a).await.unwrap();
    st.insert(&b).await.unwrap();

    assert_eq!(st.remove_by_id(&bob, &a.id).await.unwrap(), None, "bob cannot revoke alice's session");
    assert_eq!(st.get(&a.key, t).await.unwrap(), Some(a.clone()));
    assert_eq!(st.of_user(&alice, t).await.unwrap(), vec![a.clone()], "nor unlist it");
    assert_eq!(st.remove_by_id(&alice, &a.id).await.unwrap(), Some(a.key.clone()), "its key");
    assert_eq!(st.get(&a.key, t).await.unwrap(), None);
    assert_eq!(st.of_user(&alice, t).await.unwrap(), vec![]);
    assert_eq!(st.remove_by_id(&alice, &a.id).await.unwrap(), None, "gone already");
    assert_eq!(st.remove_by_id(&alice, &random_hex(16)).await.unwrap(), None);
    assert_eq!(st.get(&b.key, t).await.unwrap(), Some(b));
}

async fn sessions_remove_all_of_a_user(s: Sessions) {
    let st = &s.store;
    let (alice, bob) = (s.owner("alice").await, s.owner("bob").await);
    let t = now();
    let alices: Vec<SessionRecord> = (0..3).map(|i| session(&alice, t + i, t + HOUR)).collect();
    let b = session(&bob, t, t + HOUR);
    for r in alices.iter().chain([&b]) {
        st.insert(r).await.unwrap();
    }
    let removed: BTreeSet<String> = st.remove_all_of(&alice).await.unwrap().into_iter().collect();
    assert_eq!(removed, alices.iter().map(|r| r.key.clone()).collect(), "the keys of all of hers");
    for r in &alices {
        assert_eq!(st.get(&r.key, t).await.unwrap(), None);
    }
    assert_eq!(st.of_user(&alice, t).await.unwrap(), vec![]);
    assert_eq!(st.remove_all_of(&alice).await.unwrap(), Vec::<String>::new(), "none left");
    assert_eq!(st.of_user(&bob, t).await.unwrap(), vec![b], "bob's stays");
    assert_eq!(st.count(t).await.unwrap(), 1);
}

async fn sessions_of_user_oldest_first_once_each_live_only(s: Sessions) {
    let st = &s.store;
    let (alice, bob) = (s.owner("alice").await, s.owner("bob").await);
    let t = now();
    let mut alices: Vec<SessionRecord> =
        [30, 10, 20, 20, 40].iter().map(|d| session(&alice, t + d, t + HOUR)).collect();
    for r in &alices {
        st.insert(r).await.unwrap();
    }
    st.insert(&session(&bob, t, t + HOUR)).await.unwrap();
    // Used a few times: still one entry each.
    for r in &alices[..2] {
        for i in 1..=3 {
            st.touch(&r.key, t + 100 * i, t + HOUR + 100 * i).await.unwrap();
        }
    }
    let gone = alices.remove(4);
    assert!(st.remove(&gone.key).await.unwrap());
    let revoked = alices.remove(3);
    assert!(st.remove_by_id(&alice, &revoked.id).await.unwrap().is_some());

    let listed = st.of_user(&alice, t).await.unwrap();
    let mut expected = alices.clone();
    expected.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    assert_eq!(ids(&listed), ids(&expected), "oldest first (ties by id), each once, none removed");
    assert!(listed.iter().all(|r| r.user_id == alice), "only hers");
    let touched = listed.iter().find(|r| r.id == alices[0].id).unwrap();
    assert_eq!((touched.last_seen_at, touched.expires_at), (t + 300, t + HOUR + 300), "with the last touch");
    if let Some(cfg) = s.redis() {
        // The per-user index holds exactly the live sessions.
        let index: Vec<String> = redis::cmd("HKEYS")
            .arg(format!("{}user-sessions:{alice}", cfg.prefix))
            .query_async(&mut raw_redis(cfg).await)
            .await
            .unwrap();
        assert_eq!(index.into_iter().collect::<BTreeSet<_>>(), ids(&alices).into_iter().collect());
    }
}

async fn sessions_count_and_prune(s: Sessions) {
    let st = &s.store;
    let (alice, bob) = (s.owner("alice").await, s.owner("bob").await);
    let t = now();
    let short = session(&alice, t, t + 300);
    let long = session(&bob, t, t + HOUR);
    st.insert(&short).await.unwrap();
    st.insert(&long).await.unwrap();
    until_past(short.expires_at).await;
    let t = now();
    assert_eq!(st.count(t).await.unwrap(), 1, "only live sessions count");
    let pruned = st.prune(t).await.unwrap();
    match s.kind {
        // Redis drops expired sessions by itself.
        Kind::Redis(_) => assert_eq!(pruned, 0),
        _ => assert_eq!(pruned, 1),
    }
    assert_eq!(st.get(&short.key, short.created_at).await.unwrap(), None, "gone, not only expired");
    assert_eq!(st.get(&long.key, t).await.unwrap(), Some(long));
    assert_eq!(st.prune(t).await.unwrap(), 0, "nothing more to prune");
    assert_eq!(st.count(t).await.unwrap(), 1);
}

// ---------------------------------------------------------------------------------------------
// The session policy

async fn policy_sixth_session_revokes_the_oldest(s: Sessions) {
    let (alice, bob) = (s.owner("alice").await, s.owner("bob").await);
    let policy = UserSessions::new(s.store.clone(), Duration::from_secs(3600), 5);
    let t = now();
    let (bobs, _) = policy.create(&bob, None, None, t).await.unwrap();
    let mut made = vec![];
    for i in 0..5 {
        let (new, revoked) = policy.create(&alice, Some("127.0.0.1".into()), Some("test".into()), t + i).await.unwrap();
        assert_eq!(revoked, vec![], "within the limit");
        made.push(new);
    }
    let oldest = &made[0];
    assert!(policy.validate(&oldest.token, t + 5).await.unwrap().is_some());
    let (sixth, revoked) = policy.create(&alice, None, None, t + 5).await.unwrap();
    assert_eq!(revoked, vec![oldest.record.clone()], "the oldest goes, and is reported for the audit");
    assert_eq!(policy.validate(&oldest.token, t + 6).await.unwrap(), None, "and signs no one in, even cached");
    let live = policy.of_user(&alice, t + 6).await.unwrap();
    let mut expected: Vec<String> = made[1..].iter().map(|n| n.record.id.clone()).collect();
    expected.push(sixth.record.id.clone());
    assert_eq!(ids(&live), expected);
    assert_eq!(policy.validate(&sixth.token, t + 6).await.unwrap(), Some(sixth.record.clone()));
    assert!(policy.validate(&bobs.token, t + 6).await.unwrap().is_some(), "bob's limit is his own");
}

async fn policy_only_live_sessions_count(s: Sessions) {
    let alice = s.owner("alice").await;
    let policy = UserSessions::new(s.store.clone(), Duration::from_secs(3600), 2);
    let t = now();
    let expiring = session(&alice, t, t + 300);
    s.store.insert(&expiring).await.unwrap();
    until_past(expiring.expires_at).await;
    let t = now();
    for i in 0..2 {
        let (_, revoked) = policy.create(&alice, None, None, t + i).await.unwrap();
        assert_eq!(revoked, vec![], "an expired session takes no place");
    }
    assert_eq!(policy.of_user(&alice, t + 2).await.unwrap().len(), 2);
}

async fn policy_revoked_is_invalid_at_once_on_this_front(s: Sessions) {
    let (alice, bob) = (s.owner("alice").await, s.owner("bob").await);
    let policy = UserSessions::new(s.store.clone(), Duration::from_secs(3600), 10);
    let t = now();

    assert_eq!(policy.validate("not-a-token", t).await.unwrap(), None);
    assert_eq!(policy.validate(&random_hex(32), t).await.unwrap(), None, "a well-formed unknown token");

    // Sign-out.
    let (one, _) = policy.create(&alice, None, None, t).await.unwrap();
    assert_eq!(policy.validate(&one.token, t).await.unwrap(), Some(one.record.clone()));
    assert_eq!(policy.revoke_token(&one.token, t).await.unwrap(), Some(one.record.clone()));
    assert_eq!(policy.validate(&one.token, t).await.unwrap(), None);
    assert_eq!(policy.revoke_token(&one.token, t).await.unwrap(), None, "signed out already");

    // Revoked by id, only by its owner.
    let (two, _) = policy.create(&alice, None, None, t + 1).await.unwrap();
    assert!(policy.validate(&two.token, t + 1).await.unwrap().is_some());
    assert!(!policy.revoke_id(&bob, &two.record.id).await.unwrap(), "not bob's");
    assert!(policy.validate(&two.token, t + 1).await.unwrap().is_some());
    assert!(policy.revoke_id(&alice, &two.record.id).await.unwrap());
    assert_eq!(policy.validate(&two.token, t + 1).await.unwrap(), None);

    // All of a user's (disabled, deleted, new password).
    let (three, _) = policy.create(&alice, None, None, t + 2).await.unwrap();
    let (four, _) = policy.create(&alice, None, None, t + 3).await.unwrap();
    let (bobs, _) = policy.create(&bob, None, None, t + 3).await.unwrap();
    for n in [&three, &four, &bobs] {
        assert!(policy.validate(&n.token, t + 3).await.unwrap().is_some());
    }
    assert_eq!(policy.revoke_all(&alice).await.unwrap(), 2);
    assert_eq!(policy.validate(&three.token, t + 3).await.unwrap(), None);
    assert_eq!(policy.validate(&four.token, t + 3).await.unwrap(), None);
    assert!(policy.validate(&bobs.token, t + 3).await.unwrap().is_some(), "bob's stays");
}

/// A revocation on one front is seen by another within [`CACHE_FOR`] (under the promised
/// second). `front_b` caches the session; once `CACHE_FOR` has passed since it did, it must
/// answer from the store. The check is on what `front_b` answers, not on how fast: a slow
/// machine only makes the polls later.
async fn policy_revoke_reaches_another_front_within_the_cache_time(s: Sessions) {
    const { assert!(CACHE_FOR.as_millis() < 1000, "revocation must hold on every front within a second") };
    let alice = s.owner("alice").await;
    let ttl = Duration::from_secs(3600);
    let front_a = UserSessions::new(s.store.clone(), ttl, 10);
    let front_b = UserSessions::new(s.another_front().await, ttl, 10);

    for how in ["sign-out", "by id", "all of the user's"] {
        let (new, _) = front_a.create(&alice, None, None, now()).await.unwrap();
        assert_eq!(front_b.validate(&new.token, now()).await.unwrap().as_ref(), Some(&new.record));
        // Front B's cache entry is from before this instant.
        let cached_before = Instant::now();
        match how {
            "sign-out" => assert!(front_a.revoke_token(&new.token, now()).await.unwrap().is_some()),
            "by id" => assert!(front_a.revoke_id(&alice, &new.record.id).await.unwrap()),
            _ => assert!(front_a.revoke_all(&alice).await.unwrap() >= 1),
        }
        assert_eq!(front_a.validate(&new.token, now()).await.unwrap(), None, "{how}: at once on front A");
        revocation_reaches(&front_b, &new.token, now(), cached_before, how).await;
    }
}

/// Polls `front` until it refuses the revoked `token`, asserting that it accepts it only while
/// its cache entry (made before `cached_before`) may still be trusted.
async fn revocation_reaches(front: &UserSessions, token: &str, now: i64, cached_before: Instant, how: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let asked = Instant::now();
        match front.validate(token, now).await.unwrap() {
            None => return,
            Some(_) => {
                let age = asked.duration_since(cached_before);
                assert!(
                    age < CACHE_FOR,
                    "{how}: the other front still accepted the revoked session when its cache entry was {age:?} \
                     old (it may trust it for {CACHE_FOR:?})"
                );
            }
        }
        assert!(Instant::now() < deadline, "{how}: the other front never saw the revocation");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sessions in memory whose `touch` is slower than the cache time: as a store round trip on a
/// loaded machine may be.
struct SlowTouch(MemorySessions);

#[async_trait::async_trait]
impl SessionStore for SlowTouch {
    fn describe(&self) -> String {
        self.0.describe()
    }
    async fn insert(&self, record: &SessionRecord) -> Result<(), StoreError> {
        self.0.insert(record).await
    }
    async fn get(&self, key: &str, now: i64) -> Result<Option<SessionRecord>, StoreError> {
        self.0.get(key, now).await
    }
    async fn touch(&self, key: &str, last_seen_at: i64, expires_at: i64) -> Result<(), StoreError> {
        tokio::time::sleep(CACHE_FOR + Duration::from_millis(100)).await;
        self.0.touch(key, last_seen_at, expires_at).await
    }
    async fn remove(&self, key: &str) -> Result<bool, StoreError> {
        self.0.remove(key).await
    }
    async fn remove_by_id(&self, user_id: &str, id: &str) -> Result<Option<String>, StoreError> {
        self.0.remove_by_id(user_id, id).await
    }
    async fn remove_all_of(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        self.0.remove_all_of(user_id).await
    }
    async fn of_user(&self, user_id: &str, now: i64) -> Result<Vec<SessionRecord>, StoreError> {
        self.0.of_user(user_id, now).await
    }
    async fn count(&self, now: i64) -> Result<u64, StoreError> {
        self.0.count(now).await
    }
    async fn prune(&self, now: i64) -> Result<u64, StoreError> {
        self.0.prune(now).await
    }
}

/// A cache hit that records use (a touch) must not make the cache entry new again: the store
/// did not vouch for the session then, and another front may have revoked it meanwhile.
#[tokio::test]
async fn policy_cache_is_not_renewed_by_recording_use() {
    let store: Arc<dyn SessionStore> = Arc::new(SlowTouch(MemorySessions::default()));
    // A ttl of a second: use is recorded every 100 ms.
    let front_a = UserSessions::new(store.clone(), Duration::from_secs(1), 5);
    let front_b = UserSessions::new(store, Duration::from_secs(1), 5);
    let t = now();
    let (new, _) = front_a.create("u1", None, None, t).await.unwrap();
    assert!(front_b.validate(&new.token, t).await.unwrap().is_some());
    let cached_before = Instant::now();
    assert!(front_a.revoke_token(&new.token, t).await.unwrap().is_some());
    // 200 ms later by the session's clock: front B records the use (slowly) from its cache.
    revocation_reaches(&front_b, &new.token, t + 200, cached_before, "with a slow touch").await;
}

// ---------------------------------------------------------------------------------------------
// Redis only

/// Redis drops a session at its expiry by itself (the key's TTL); the user's index then no
/// longer lists it, loses the member when read, and goes itself with the user's last session.
#[tokio::test]
async fn redis_expired_sessions_leave_the_index() {
    let s = redis_sessions().await;
    let cfg = s.redis().unwrap().clone();
    let mut raw = raw_redis(&cfg).await;
    let st = &s.store;
    let (alice, bob) = (s.owner("alice").await, s.owner("bob").await);
    let t = now();
    let long = session(&alice, t, t + HOUR);
    let short = session(&alice, t + 1, t + 300);
    let bobs = session(&bob, t, t + 300);
    // The long one first: a later, shorter session must not cut the index's life short.
    for r in [&long, &short, &bobs] {
        st.insert(r).await.unwrap();
    }
    let session_key = |r: &SessionRecord| format!("{}session:{}", cfg.prefix, r.key);
    let index_key = |user: &str| format!("{}user-sessions:{user}", cfg.prefix);

    // Redis itself expires the keys (EXISTS does not count an expired key).
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left: u32 =
            redis::cmd("EXISTS").arg(session_key(&short)).arg(session_key(&bobs)).query_async(&mut raw).await.unwrap();
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "Redis did not expire the short sessions");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        st.of_user(&alice, now()).await.unwrap(),
        vec![long.clone()],
        "the long one is listed, the short one not"
    );
    let members: Vec<String> = redis::cmd("HKEYS").arg(index_key(&alice)).query_async(&mut raw).await.unwrap();
    assert_eq!(members, vec![long.id.clone()], "the expired member is gone from the index");
    let ttl: i64 = redis::cmd("PTTL").arg(index_key(&alice)).query_async(&mut raw).await.unwrap();
    assert!(ttl > 60_000, "the index lives as long as its longest session: {ttl} ms");

    // Bob's only session expired: so did his index.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let exists: u32 = redis::cmd("EXISTS").arg(index_key(&bob)).query_async(&mut raw).await.unwrap();
        if exists == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "bob's index outlived his last session");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(st.of_user(&bob, now()).await.unwrap(), vec![]);
    assert_eq!(st.remove_all_of(&bob).await.unwrap(), Vec::<String>::new());
    // Revoking all of alice's still finds the long one.
    assert_eq!(st.remove_all_of(&alice).await.unwrap(), vec![long.key.clone()]);
    assert_eq!(st.count(now()).await.unwrap(), 0);
}

/// A prefix is a namespace: two deployments on one Redis do not see each other's sessions.
#[tokio::test]
async fn redis_prefixes_keep_deployments_apart() {
    let (one, two) = (redis_sessions().await, redis_sessions().await);
    let t = now();
    let r = session("u1", t, t + HOUR);
    one.store.insert(&r).await.unwrap();
    assert_eq!(two.store.get(&r.key, t).await.unwrap(), None);
    assert_eq!(two.store.of_user("u1", t).await.unwrap(), vec![]);
    assert_eq!(two.store.count(t).await.unwrap(), 0);
    assert!(!two.store.remove(&r.key).await.unwrap());
    assert_eq!(one.store.count(t).await.unwrap(), 1);
}

// ---------------------------------------------------------------------------------------------
// Servers away

/// A port of 127.0.0.1 where nothing listens (it was free a moment ago).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A port that accepts connections and never says a word.
async fn silent_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    port
}

/// The error opening the user database gives, within [`PATIENCE`] (not a hang).
async fn open_error(config: Database) -> StoreError {
    match tokio::time::timeout(PATIENCE, store::open(&config)).await {
        Err(_) => panic!("opening {config:?} hangs"),
        Ok(Ok(_)) => panic!("opening {config:?} succeeded"),
        Ok(Err(e)) => e,
    }
}

#[tokio::test]
async fn postgres_unreachable_is_a_clear_error_naming_the_address() {
    for port in [closed_port(), silent_port().await] {
        let by_parts = Database::Postgres(PostgresConfig {
            url: None,
            host: "127.0.0.1".into(),
            port,
            database: "users".into(),
            user: "code".into(),
            password: Some(Secret::new("hunter2-secret")),
        });
        let by_url = Database::Postgres(PostgresConfig {
            url: Some(Secret::new(format!("postgres://code:hunter2-secret@127.0.0.1:{port}/users"))),
            host: "localhost".into(),
            port: 5432,
            database: "code-server".into(),
            user: "code-server".into(),
            password: None,
        });
        for config in [by_parts, by_url] {
            let e = open_error(config).await;
            let text = e.to_string();
            assert!(e.is_unavailable(), "{text}");
            assert!(text.contains(&format!("127.0.0.1:{port}")), "names the address: {text}");
            assert!(text.contains("PostgreSQL"), "{text}");
            assert!(!text.contains("hunter2"), "never the password: {text}");
        }
    }
}

#[tokio::test]
async fn redis_unreachable_is_a_clear_error_naming_the_address() {
    for port in [closed_port(), silent_port().await] {
        let by_parts = RedisConfig {
            url: None,
            host: "127.0.0.1".into(),
            port,
            password: Some(Secret::new("hunter2-secret")),
            db: 0,
            prefix: "code-server:".into(),
        };
        let by_url = RedisConfig {
            url: Some(Secret::new(format!("redis://:hunter2-secret@127.0.0.1:{port}/0"))),
            ..by_parts.clone()
        };
        for config in [by_parts, by_url] {
            let e = match tokio::time::timeout(PATIENCE, RedisSessions::connect(&config)).await {
                Err(_) => panic!("connecting to Redis on port {port} hangs"),
                Ok(Ok(_)) => panic!("connecting to Redis on port {port} succeeded"),
                Ok(Err(e)) => e,
            };
            let text = e.to_string();
            assert!(e.is_unavailable(), "{text}");
            assert!(text.contains(&format!("127.0.0.1:{port}")), "names the address: {text}");
            assert!(text.contains("Redis"), "{text}");
            assert!(!text.contains("hunter2"), "never the password: {text}");
        }
    }
}

/// Polls `op` until it succeeds (the store reconnects by itself), within [`PATIENCE`].
async fn healed<T, F: std::future::Future<Output = Result<T, StoreError>>>(what: &str, mut op: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) => assert!(Instant::now() < deadline, "{what} did not heal: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// While PostgreSQL is down every call fails as unavailable (a 503), and within the acquire
/// timeout; when it is back the same store works again, with its data.
#[tokio::test]
async fn postgres_outage_is_unavailable_then_heals() {
    let mut pg = testkit::PrivatePostgres::start().await;
    let url = pg.create_database().await;
    let config = Database::Postgres(PostgresConfig {
        url: Some(Secret::new(url)),
        host: String::new(),
        port: 0,
        database: String::new(),
        user: String::new(),
        password: None,
    });
    let users = store::open(&config).await.unwrap();
    let sessions = users.sessions();
    let alice = user("alice");
    users.create_user(&alice).await.unwrap();
    let r = session(&alice.id, now(), now() + HOUR);
    sessions.insert(&r).await.unwrap();

    pg.stop().await;
    for attempt in 0..2 {
        let e = tokio::time::timeout(PATIENCE, users.user_by_name("alice")).await.expect("an answer, not a hang");
        match e {
            Err(e) => assert!(e.is_unavailable(), "attempt {attempt}: {e}"),
            Ok(u) => panic!("attempt {attempt}: an answer from a stopped server: {u:?}"),
        }
        let e = tokio::time::timeout(PATIENCE, sessions.get(&r.key, now())).await.expect("an answer, not a hang");
        assert!(e.as_ref().is_err_and(StoreError::is_unavailable), "attempt {attempt}: {e:?}");
    }

    pg.start_again().await;
    let back = healed("the user store", || users.user_by_name("alice")).await;
    assert_eq!(back, Some(alice));
    assert_eq!(healed("the session store", || sessions.get(&r.key, now())).await, Some(r));
}

/// The same for Redis: unavailable while it is down, and the same connection heals.
#[tokio::test]
async fn redis_outage_is_unavailable_then_heals() {
    let mut server = testkit::PrivateRedis::start().await;
    let sessions = redis_connect(&redis_config(&server.url(), "outage:")).await;
    let r = session("u1", now(), now() + HOUR);
    sessions.insert(&r).await.unwrap();

    server.stop().await;
    for attempt in 0..2 {
        let e = tokio::time::timeout(PATIENCE, sessions.get(&r.key, now())).await.expect("an answer, not a hang");
        assert!(e.as_ref().is_err_and(StoreError::is_unavailable), "attempt {attempt}: {e:?}");
    }

    server.start_again().await;
    assert_eq!(
        healed("Redis sessions", || sessions.get(&r.key, now())).await,
        Some(r.clone()),
        "kept across the restart"
    );
    let policy = UserSessions::new(Arc::new(sessions), Duration::from_secs(3600), 5);
    let (new, _) = policy.create("u1", None, None, now()).await.unwrap();
    assert!(policy.validate(&new.token, now()).await.unwrap().is_some());
}
