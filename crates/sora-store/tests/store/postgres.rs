//! PostgreSQL only: claims under contention across instances, notifications across
//! connections and their recovery, migrations, and connection errors.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sora_core::JobStatus;
use sora_store::testing::TestPostgres;
use sora_store::{ChangeNotice, JobStore, PG_MIGRATOR, PgStore, SaveJob, StoreError, Work};
use sqlx::{Connection, Executor, PgConnection};

use super::common::*;

async fn migrated_store(db: &TestPostgres) -> PgStore {
    let store = PgStore::connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_claimers_over_200_jobs_claim_each_exactly_once() {
    let db = TestPostgres::new().await;
    // Two "server instances", four claimers each.
    let a: Arc<dyn JobStore> = Arc::new(migrated_store(&db).await);
    let b: Arc<dyn JobStore> = Arc::new(PgStore::connect(&db.url).await.unwrap());
    for i in 0..200 {
        a.insert_job(&job("alice", at(i % 50)), None).await.unwrap();
    }
    let now = at(100);
    let start = Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = if w % 2 == 0 { a.clone() } else { b.clone() };
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let mut mine = Vec::new();
            loop {
                let got = store
                    .claim(
                        Work::Submit,
                        &format!("w{w}"),
                        7,
                        Duration::from_secs(60),
                        now,
                    )
                    .await
                    .unwrap();
                if got.is_empty() {
                    break;
                }
                mine.extend(got.into_iter().map(|c| (c.job.id(), c.lease.worker)));
                // Hold the batch a moment, as a worker would, so the claimers overlap.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            mine
        }));
    }
    let mut claims: HashMap<_, Vec<String>> = HashMap::new();
    let mut busy_workers = 0;
    for t in tasks {
        let mine = t.await.unwrap();
        if !mine.is_empty() {
            busy_workers += 1;
        }
        for (id, worker) in mine {
            claims.entry(id).or_default().push(worker);
        }
    }
    assert_eq!(claims.len(), 200, "every job claimed");
    let doubles: Vec<_> = claims.iter().filter(|(_, w)| w.len() > 1).collect();
    assert!(doubles.is_empty(), "claimed twice: {doubles:?}");
    assert!(busy_workers >= 2, "the claimers shared the work");
    drop((a, b));
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_stops_renewing_loses_the_job_to_another_instance() {
    let db = TestPostgres::new().await;
    let one = migrated_store(&db).await;
    let two = PgStore::connect(&db.url).await.unwrap();
    let j = job("alice", t0());
    one.insert_job(&j, None).await.unwrap();
    let lease = Duration::from_secs(10);
    let held = one
        .claim(Work::Submit, "one", 1, lease, at(1))
        .await
        .unwrap()
        .remove(0);
    assert!(
        two.claim(Work::Submit, "two", 1, lease, at(5))
            .await
            .unwrap()
            .is_empty()
    );
    let taken = two
        .claim(Work::Submit, "two", 1, lease, at(12))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(taken.job.id(), j.id());

    let mut late = held.job.clone();
    apply(&mut late, submitted("video_late"), at(13));
    let err = one
        .save_job(
            &late,
            1,
            SaveJob {
                lease: Some(&held.lease),
                now: Some(at(13)),
                ..SaveJob::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");
    let stored = two.get_job(j.id(), None).await.unwrap().unwrap();
    assert_eq!(stored.status(), JobStatus::Pending);
    assert_eq!(stored.video_id(), None);
    drop((one, two));
    db.cleanup().await;
}

async fn next_notice(
    rx: &mut tokio::sync::broadcast::Receiver<ChangeNotice>,
    want: impl Fn(&ChangeNotice) -> bool,
) -> ChangeNotice {
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let n = rx.recv().await.unwrap();
            if want(&n) {
                return n;
            }
        }
    })
    .await
    .expect("the notice did not arrive")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_cross_connections_and_survive_a_killed_listener() {
    let db = TestPostgres::new().await;
    let writer = migrated_store(&db).await;
    let reader = PgStore::connect(&db.url).await.unwrap();
    let mut rx = reader.subscribe();

    // A change committed through one instance reaches the other.
    let j = job("alice", t0());
    writer.insert_job(&j, None).await.unwrap();
    let n = next_notice(&mut rx, |n| matches!(n, ChangeNotice::Changed { .. })).await;
    assert!(
        matches!(&n, ChangeNotice::Changed { job_id, version: 1, state: Some(s) }
            if *job_id == j.id() && s.status == JobStatus::Pending),
        "{n:?}"
    );

    // A notification from a plain connection arrives too; one without a state (a server
    // reads the job then).
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    let other = job("bob", t0());
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(sora_store::STATE_CHANNEL)
        .bind(format!(r#"{{"id":"{}","version":9}}"#, other.id()))
        .execute(&mut conn)
        .await
        .unwrap();
    let n = next_notice(&mut rx, |n| matches!(n, ChangeNotice::Changed { .. })).await;
    assert_eq!(
        n,
        ChangeNotice::Changed {
            job_id: other.id(),
            version: 9,
            state: None,
        }
    );
    // Servers of the previous release still hear every change on their channel.
    let mut old = sqlx::postgres::PgListener::connect(&db.url).await.unwrap();
    old.listen(sora_store::CHANGE_CHANNEL).await.unwrap();
    let mut cancelled = j.clone();
    apply(&mut cancelled, sora_core::JobEvent::Cancelled, at(1));
    writer
        .save_job(&cancelled, 1, SaveJob::default())
        .await
        .unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(15), old.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(heard.payload(), format!("{}:2", j.id()));
    let n = next_notice(&mut rx, |n| matches!(n, ChangeNotice::Changed { .. })).await;
    assert!(
        matches!(&n, ChangeNotice::Changed { version: 2, state: Some(s), .. }
            if s.status == JobStatus::Cancelled),
        "{n:?}"
    );
    drop(old);

    // Kill every listening connection; the subscribers are told to re-read...
    let killed: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
         AND query ILIKE 'LISTEN%'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(!killed.is_empty(), "no listener connection found");
    assert_eq!(
        next_notice(&mut rx, |n| *n == ChangeNotice::Resync).await,
        ChangeNotice::Resync
    );

    // ... and the listener works again.
    let moved = job("alice", t0());
    writer.insert_job(&moved, None).await.unwrap();
    let n = next_notice(
        &mut rx,
        |n| matches!(n, ChangeNotice::Changed { job_id, .. } if *job_id == moved.id()),
    )
    .await;
    assert!(
        matches!(
            &n,
            ChangeNotice::Changed {
                version: 1,
                state: Some(_),
                ..
            }
        ),
        "{n:?}"
    );
    conn.close().await.unwrap();
    drop((writer, reader));
    db.cleanup().await;
}

#[tokio::test]
async fn migrations_apply_to_an_empty_database_and_are_idempotent() {
    let db = TestPostgres::new().await;
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    PG_MIGRATOR.run(&mut conn).await.unwrap();
    PG_MIGRATOR.run(&mut conn).await.unwrap();
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let tables: Vec<_> = tables.into_iter().map(|(t,)| t).collect();
    for t in [
        "_sqlx_migrations",
        "api_keys",
        "idempotency",
        "jobs",
        "webhook_inbox",
    ] {
        assert!(tables.iter().any(|x| x == t), "{t} missing from {tables:?}");
    }
    let applied: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(applied.0, PG_MIGRATOR.iter().count() as i64);
    // The indexes the workers and the API rely on.
    let indexes: Vec<(String,)> =
        sqlx::query_as("SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public'")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let indexes: Vec<_> = indexes.into_iter().map(|(i,)| i).collect();
    for i in [
        "jobs_owner_id",
        "jobs_status_next_run",
        "jobs_video_id_key",
        "webhook_inbox_pkey",
        "idempotency_pkey",
        "api_keys_key_hash_key",
    ] {
        assert!(
            indexes.iter().any(|x| x == i),
            "{i} missing from {indexes:?}"
        );
    }
    // The SQL itself is idempotent too (`IF NOT EXISTS`, `OR REPLACE`), so a partially applied
    // file can be re-run by hand.
    for m in PG_MIGRATOR.iter() {
        conn.execute(m.sql.clone()).await.unwrap();
    }
    conn.close().await.unwrap();
    // The top-level `connect` migrates a fresh database by itself.
    let fresh = TestPostgres::new().await;
    let store = sora_store::connect(&fresh.url).await.unwrap();
    store.ping().await.unwrap();
    assert_eq!(store.count_active().await.unwrap(), 0);
    drop(store);
    fresh.cleanup().await;
    db.cleanup().await;
}

#[tokio::test]
async fn the_migrations_directory_as_sqlx_cli_reads_it_agrees_with_the_embedded_migrator() {
    // `sqlx migrate run --source migrations` resolves the directory at run time, as
    // `Migrator::new(path)` does; what it applies must be what the server's embedded migrator
    // expects (same versions and checksums), in either order.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    let from_dir = sqlx::migrate::Migrator::new(dir.as_path()).await.unwrap();
    assert_eq!(from_dir.iter().count(), PG_MIGRATOR.iter().count());
    for (a, b) in from_dir.iter().zip(PG_MIGRATOR.iter()) {
        assert_eq!((a.version, &a.checksum), (b.version, &b.checksum));
    }
    let db = TestPostgres::new().await;
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    from_dir.run(&mut conn).await.unwrap();
    PG_MIGRATOR.run(&mut conn).await.unwrap();
    from_dir.run(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    db.cleanup().await;
}

#[tokio::test]
async fn a_connection_error_never_shows_the_password() {
    let err = PgStore::connect("postgres://postgres:sup3rs3cret@127.0.0.1:1/sora")
        .await
        .unwrap_err();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        text.push_str(&s.to_string());
        source = s.source();
    }
    text.push_str(&format!("{err:?}"));
    assert!(!text.contains("sup3rs3cret"), "{text}");
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
    let err = sora_store::connect("mysql://root:sup3rs3cret@localhost/x")
        .await
        .err()
        .unwrap();
    assert!(!err.to_string().contains("sup3rs3cret"), "{err}");
}

#[tokio::test]
async fn the_store_debug_output_never_shows_the_password() {
    let db = TestPostgres::new().await;
    let mut url = url::Url::parse(&db.url).unwrap();
    if url.password().is_none() {
        // The local test server trusts loopback connections, so any password is accepted.
        url.set_password(Some("hunter2")).unwrap();
    }
    let password = url.password().unwrap().to_owned();
    let store = PgStore::connect(url.as_str()).await.unwrap();
    let debug = format!("{store:?}");
    assert!(!debug.contains(&password), "{debug}");
    drop(store);
    db.cleanup().await;
}

#[tokio::test]
async fn a_corrupt_row_is_an_error_not_a_panic() {
    let db = TestPostgres::new().await;
    let store = migrated_store(&db).await;
    let j = job("alice", t0());
    store.insert_job(&j, None).await.unwrap();
    // A completed job without files cannot be restored.
    sqlx::query("UPDATE jobs SET status = 'completed', video_id = 'v' WHERE id = $1")
        .bind(j.id().to_string())
        .execute(store.pool())
        .await
        .unwrap();
    let err = store.get_job(j.id(), None).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    sqlx::query("UPDATE jobs SET status = 'pending', prompt = '' WHERE id = $1")
        .bind(j.id().to_string())
        .execute(store.pool())
        .await
        .unwrap();
    let err = store
        .list_jobs(&owner("alice"), &Default::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    drop(store);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throwaway_cluster_starts_from_the_installed_binaries() {
    let url = sora_store::testing::start_throwaway_cluster()
        .await
        .unwrap();
    assert!(!url.contains(":5432/"), "{url}");
    let mut conn = PgConnection::connect(&url).await.unwrap();
    PG_MIGRATOR.run(&mut conn).await.unwrap();
    let n: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM jobs")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(n.0, 0);
    conn.close().await.unwrap();
}
