//! SQLite only: the file, its directory and WAL mode, the in-memory store, migrations, and
//! claims from two stores on one file.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sora_store::{JobStore, SQLITE_MIGRATOR, SqliteStore, StoreError, Work};

use super::common::*;

#[tokio::test]
async fn connect_creates_the_file_and_its_directory_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/sora.db");
    let url = format!("sqlite://{}", path.display());
    let store = sora_store::connect(&url).await.unwrap();
    store.ping().await.unwrap();
    assert!(path.exists());
    let direct = SqliteStore::connect(&url).await.unwrap();
    let mode: (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(direct.pool())
        .await
        .unwrap();
    assert_eq!(mode.0, "wal");
    // The `sqlite:` spelling works too, and the data is still there.
    let j = job("alice", t0());
    store.insert_job(&j, None).await.unwrap();
    drop(store);
    let again = sora_store::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    assert_eq!(again.get_job(j.id(), None).await.unwrap(), Some(j));
}

#[tokio::test]
async fn the_in_memory_store_works_and_migrations_are_idempotent() {
    let store = SqliteStore::in_memory().await.unwrap();
    let j = job("alice", t0());
    store.insert_job(&j, None).await.unwrap();
    assert_eq!(store.get_job(j.id(), None).await.unwrap(), Some(j));
    SQLITE_MIGRATOR.run(store.pool()).await.unwrap();
    let applied: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(applied.0, SQLITE_MIGRATOR.iter().count() as i64);
}

#[tokio::test]
async fn stores_on_one_file_share_their_notices() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/sora.db", dir.path().display());
    let a = SqliteStore::connect(&url).await.unwrap();
    let b = SqliteStore::connect(&format!("sqlite:{}/./sora.db", dir.path().display()))
        .await
        .unwrap();
    let other = SqliteStore::in_memory().await.unwrap();
    let mut rx = b.subscribe();
    let mut rx_other = other.subscribe();
    let j = job("alice", t0());
    a.insert_job(&j, None).await.unwrap();
    assert_eq!(
        rx.try_recv().unwrap(),
        sora_store::ChangeNotice::Changed {
            job_id: j.id(),
            version: 1,
            state: None,
        }
    );
    assert!(rx_other.try_recv().is_err());
}

#[tokio::test]
async fn an_unknown_url_scheme_is_a_configuration_error() {
    let err = sora_store::connect("redis://localhost")
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
}

#[tokio::test]
async fn a_corrupt_row_is_an_error_not_a_panic() {
    let store = SqliteStore::in_memory().await.unwrap();
    let j = job("alice", t0());
    store.insert_job(&j, None).await.unwrap();
    sqlx::query("UPDATE jobs SET status = 'exploded' WHERE id = ?1")
        .bind(j.id().to_string())
        .execute(store.pool())
        .await
        .unwrap_err(); // the CHECK constraint refuses it
    sqlx::query("UPDATE jobs SET metadata = 'not json' WHERE id = ?1")
        .bind(j.id().to_string())
        .execute(store.pool())
        .await
        .unwrap();
    let err = store.get_job(j.id(), None).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_on_one_file_claim_each_job_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/sora.db", dir.path().display());
    let a: Arc<dyn JobStore> = Arc::new(SqliteStore::connect(&url).await.unwrap());
    let b: Arc<dyn JobStore> = Arc::new(SqliteStore::connect(&url).await.unwrap());
    for i in 0..100 {
        a.insert_job(&job("alice", at(i)), None).await.unwrap();
    }
    let mut tasks = Vec::new();
    for w in 0..6 {
        let store = if w % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let got = store
                    .claim(
                        Work::Submit,
                        &format!("w{w}"),
                        5,
                        Duration::from_secs(60),
                        at(200),
                    )
                    .await
                    .unwrap();
                if got.is_empty() {
                    return ids;
                }
                ids.extend(got.into_iter().map(|c| c.job.id()));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!((all.len(), unique.len()), (100, 100));
}
