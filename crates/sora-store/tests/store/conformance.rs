//! The conformance suite: one set of behaviours every `JobStore` must have, run against SQLite
//! and PostgreSQL alike (see the `suite!` invocation at the bottom).

use std::collections::HashSet;
use std::time::Duration;

use sora_core::{FailureCode, JobError, JobEvent, JobId, JobStatus, ProviderStatus, PublicStatus};
use sora_store::{
    ChangeNotice, ChangedState, InboxEvent, InboxOutcome, Inserted, JobQuery, JobStore,
    NewIdempotency, SaveJob, StoreError, Work,
};

use super::common::*;

const LEASE: Duration = Duration::from_secs(30);

fn idem(key: &str, hash: &str) -> NewIdempotency {
    NewIdempotency {
        key: key.into(),
        request_hash: hash.into(),
    }
}

fn event(
    webhook_id: &str,
    video_id: Option<&str>,
    received: chrono::DateTime<chrono::Utc>,
) -> InboxEvent {
    InboxEvent {
        webhook_id: webhook_id.into(),
        event_type: "video.completed".into(),
        video_id: video_id.map(video),
        received_at: received,
        payload: format!("{{\"id\":\"{webhook_id}\"}}"),
    }
}

/// Saves `job` after applying `event`, from the version it was at.
async fn transition(
    store: &dyn JobStore,
    job: &mut sora_core::Job,
    event: JobEvent,
    now: chrono::DateTime<chrono::Utc>,
) {
    let before = job.version();
    apply(job, event, now);
    store
        .save_job(
            job,
            before,
            SaveJob {
                now: Some(now),
                ..SaveJob::default()
            },
        )
        .await
        .unwrap();
}

pub async fn a_job_round_trips_with_every_field(b: &Backend) {
    let s = &*b.store;
    let full = full_job("alice", t0());
    assert_eq!(s.insert_job(&full, None).await.unwrap(), Inserted::Created);
    assert_eq!(
        s.get_job(full.id(), None).await.unwrap(),
        Some(full.clone())
    );
    assert_eq!(
        s.get_job(full.id(), Some(&owner("alice"))).await.unwrap(),
        Some(full.clone())
    );
    // Someone else's job is not found.
    assert_eq!(
        s.get_job(full.id(), Some(&owner("bob"))).await.unwrap(),
        None
    );
    assert_eq!(
        s.get_job(sora_core::JobId::new(), None).await.unwrap(),
        None
    );

    // A job with a provider id, an error and files round-trips too.
    let mut done = job_at_status(s, "alice", JobStatus::Completed, "video_rt").await;
    let stored = s.get_job(done.id(), None).await.unwrap().unwrap();
    assert_eq!(stored, done);
    assert_eq!(
        s.get_job_by_video(&video("video_rt")).await.unwrap(),
        Some(done.clone())
    );
    assert_eq!(
        s.get_job_by_video(&video("video_none")).await.unwrap(),
        None
    );
    // A failed job keeps its code and message.
    let mut failed = job("alice", at(1));
    s.insert_job(&failed, None).await.unwrap();
    transition(
        s,
        &mut failed,
        JobEvent::SubmitRejected(JobError::new(FailureCode::ContentPolicy, "nope")),
        at(2),
    )
    .await;
    assert_eq!(s.get_job(failed.id(), None).await.unwrap(), Some(failed));
    // Saving a job that is not there is NotFound.
    let ghost = job("alice", at(3));
    let err = s.save_job(&ghost, 1, SaveJob::default()).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
    done = s.get_job(done.id(), None).await.unwrap().unwrap();
    assert_eq!(done.status(), JobStatus::Completed);
}

/// A job of `owner` brought to `status` through real events and saves.
async fn job_at_status(
    s: &dyn JobStore,
    owner_name: &str,
    status: JobStatus,
    video_id: &str,
) -> sora_core::Job {
    let mut j = job(owner_name, t0());
    s.insert_job(&j, None).await.unwrap();
    if status == JobStatus::Pending {
        return j;
    }
    transition(s, &mut j, submitted(video_id), at(1)).await;
    if status == JobStatus::Queued {
        return j;
    }
    transition(
        s,
        &mut j,
        reported(ProviderStatus::InProgress, Some(10)),
        at(2),
    )
    .await;
    if status == JobStatus::InProgress {
        return j;
    }
    transition(s, &mut j, reported(ProviderStatus::Completed, None), at(3)).await;
    if status == JobStatus::Archiving {
        return j;
    }
    let key = j.id().to_string();
    transition(s, &mut j, archived(&key), at(4)).await;
    assert_eq!(j.status(), status);
    j
}

pub async fn idempotency_keys_replay_conflict_and_expire(b: &Backend) {
    let s = &*b.store;
    let first = job("alice", at(0));
    let key = idem("k1", "hash-a");
    assert_eq!(
        s.insert_job(&first, Some(&key)).await.unwrap(),
        Inserted::Created
    );

    // Same key, same request: the first job, and nothing new stored.
    let second = job("alice", at(1));
    assert_eq!(
        s.insert_job(&second, Some(&key)).await.unwrap(),
        Inserted::Replayed(first.clone())
    );
    assert_eq!(s.get_job(second.id(), None).await.unwrap(), None);

    // Same key, different request: a conflict naming the first job.
    let third = job("alice", at(2));
    let err = s
        .insert_job(&third, Some(&idem("k1", "hash-b")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::IdempotencyConflict { job_id } if job_id == first.id()),
        "{err:?}"
    );
    assert_eq!(s.get_job(third.id(), None).await.unwrap(), None);

    // Keys are per owner.
    let bobs = job("bob", at(3));
    assert_eq!(
        s.insert_job(&bobs, Some(&key)).await.unwrap(),
        Inserted::Created
    );

    // Records older than the cut-off go; then the key is free again.
    assert_eq!(s.purge_idempotency(at(0)).await.unwrap(), 0);
    assert_eq!(s.purge_idempotency(at(10)).await.unwrap(), 2);
    let fourth = job("alice", at(20));
    assert_eq!(
        s.insert_job(&fourth, Some(&key)).await.unwrap(),
        Inserted::Created
    );
}

pub async fn concurrent_inserts_with_one_key_store_one_job(b: &Backend) {
    let key = idem("same", "h");
    let mut tasks = Vec::new();
    for i in 0..6 {
        let store = b.store.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let j = job("alice", at(i));
            store.insert_job(&j, Some(&key)).await.unwrap()
        }));
    }
    let mut created = 0;
    for t in tasks {
        if t.await.unwrap() == Inserted::Created {
            created += 1;
        }
    }
    assert_eq!(created, 1);
    let page = b
        .store
        .list_jobs(&owner("alice"), &JobQuery::default())
        .await
        .unwrap();
    assert_eq!(page.jobs.len(), 1);
}

pub async fn lists_are_newest_first_paged_and_filtered(b: &Backend) {
    let s = &*b.store;
    let mut ids = Vec::new();
    for i in 0..5 {
        let j = job("alice", at(i * 10));
        s.insert_job(&j, None).await.unwrap();
        ids.push(j.id());
    }
    s.insert_job(&job("bob", at(5)), None).await.unwrap();
    ids.reverse();

    let mut seen = Vec::new();
    let mut query = JobQuery {
        limit: 2,
        ..JobQuery::default()
    };
    let mut pages = 0;
    loop {
        let page = s.list_jobs(&owner("alice"), &query).await.unwrap();
        pages += 1;
        seen.extend(page.jobs.iter().map(|j| j.id()));
        match page.next_cursor {
            Some(c) => query.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    assert_eq!(pages, 3);

    // Limits are clamped to 1..=100.
    let one = s
        .list_jobs(
            &owner("alice"),
            &JobQuery {
                limit: 0,
                ..JobQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(one.jobs.len(), 1);
    assert!(one.next_cursor.is_some());
    let all = s
        .list_jobs(
            &owner("alice"),
            &JobQuery {
                limit: 1000,
                ..JobQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(all.jobs.len(), 5);
    assert_eq!(all.next_cursor, None);

    // The status filter uses public statuses: `in_progress` includes `archiving`.
    let mut a = s.get_job(ids[0], None).await.unwrap().unwrap();
    transition(s, &mut a, submitted("video_l1"), at(60)).await;
    transition(s, &mut a, reported(ProviderStatus::Completed, None), at(61)).await;
    assert_eq!(a.status(), JobStatus::Archiving);
    let mut q = s.get_job(ids[1], None).await.unwrap().unwrap();
    transition(s, &mut q, submitted("video_l2"), at(62)).await;
    let filtered = |status| JobQuery {
        status: Some(status),
        ..JobQuery::default()
    };
    let in_progress = s
        .list_jobs(&owner("alice"), &filtered(PublicStatus::InProgress))
        .await
        .unwrap();
    assert_eq!(
        in_progress.jobs.iter().map(|j| j.id()).collect::<Vec<_>>(),
        vec![ids[0]]
    );
    let pending = s
        .list_jobs(&owner("alice"), &filtered(PublicStatus::Pending))
        .await
        .unwrap();
    assert_eq!(
        pending.jobs.iter().map(|j| j.id()).collect::<Vec<_>>(),
        ids[2..].to_vec()
    );
    let none = s
        .list_jobs(&owner("carol"), &JobQuery::default())
        .await
        .unwrap();
    assert!(none.jobs.is_empty());

    // A cursor the store did not hand out is refused.
    for bad in ["not-a-cursor", "aGVsbG8", ""] {
        let err = s
            .list_jobs(
                &owner("alice"),
                &JobQuery {
                    cursor: Some(bad.into()),
                    ..JobQuery::default()
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidCursor), "{bad}: {err:?}");
    }
}

pub async fn a_stale_version_is_a_conflict(b: &Backend) {
    let s = &*b.store;
    let mut j = job("alice", t0());
    s.insert_job(&j, None).await.unwrap();
    let stale = j.clone();
    transition(s, &mut j, submitted("video_c"), at(1)).await;
    assert_eq!(s.get_job(j.id(), None).await.unwrap().unwrap().version(), 2);

    let mut late = stale.clone();
    apply(&mut late, JobEvent::Cancelled, at(2));
    let err = s.save_job(&late, 1, SaveJob::default()).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { job_id, expected_version: 1 } if job_id == j.id()),
        "{err:?}"
    );
    // Nothing was overwritten.
    assert_eq!(s.get_job(j.id(), None).await.unwrap(), Some(j));
}

pub async fn two_concurrent_transitions_from_one_version_one_wins(b: &Backend) {
    for round in 0..5 {
        let j = job("alice", at(round));
        b.store.insert_job(&j, None).await.unwrap();
        let mut cancel = j.clone();
        apply(&mut cancel, JobEvent::Cancelled, at(100));
        let mut submit = j.clone();
        apply(
            &mut submit,
            submitted(&format!("video_race{round}")),
            at(100),
        );
        let (s1, s2) = (b.store.clone(), b.store.clone());
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
        let (b1, b2) = (barrier.clone(), barrier);
        let t1 = tokio::spawn(async move {
            b1.wait().await;
            s1.save_job(&cancel, 1, SaveJob::default()).await
        });
        let t2 = tokio::spawn(async move {
            b2.wait().await;
            s2.save_job(&submit, 1, SaveJob::default()).await
        });
        let results = [t1.await.unwrap(), t2.await.unwrap()];
        let wins = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "{results:?}");
        assert!(
            results
                .iter()
                .any(|r| matches!(r, Err(StoreError::Conflict { .. }))),
            "{results:?}"
        );
        let stored = b.store.get_job(j.id(), None).await.unwrap().unwrap();
        assert_eq!(stored.version(), 2);
    }
}

pub async fn claims_take_due_jobs_of_their_kind_oldest_first(b: &Backend) {
    let s = &*b.store;
    let pending: Vec<_> = (0..3).map(|i| job("alice", at(i))).collect();
    // Inserted newest first: the claim order must come from the due time, not insertion.
    for j in pending.iter().rev() {
        s.insert_job(j, None).await.unwrap();
    }
    let active = job_at_status(s, "alice", JobStatus::InProgress, "video_poll").await;
    let archiving = job_at_status(s, "alice", JobStatus::Archiving, "video_arch").await;
    let _done = job_at_status(s, "alice", JobStatus::Completed, "video_done").await;

    // Nothing is due before its time.
    let early = s
        .claim(
            Work::Submit,
            "w1",
            10,
            LEASE,
            t0() - chrono::Duration::seconds(1),
        )
        .await
        .unwrap();
    assert!(early.is_empty());

    let now = at(100);
    let first = s.claim(Work::Submit, "w1", 2, LEASE, now).await.unwrap();
    assert_eq!(
        first.iter().map(|c| c.job.id()).collect::<Vec<_>>(),
        vec![pending[0].id(), pending[1].id()]
    );
    for c in &first {
        assert_eq!(c.lease.worker, "w1");
        assert_eq!(c.lease.job_id, c.job.id());
        assert_eq!(c.lease.expires_at, now + chrono::Duration::seconds(30));
        assert_eq!(c.attempts, 0);
        assert_eq!(c.job.status(), JobStatus::Pending);
    }
    // Held jobs are not handed out again; the rest is.
    let second = s.claim(Work::Submit, "w2", 10, LEASE, now).await.unwrap();
    assert_eq!(
        second.iter().map(|c| c.job.id()).collect::<Vec<_>>(),
        vec![pending[2].id()]
    );
    assert!(
        s.claim(Work::Submit, "w3", 10, LEASE, now)
            .await
            .unwrap()
            .is_empty()
    );

    let polls = s.claim(Work::Poll, "w1", 10, LEASE, now).await.unwrap();
    assert_eq!(
        polls.iter().map(|c| c.job.id()).collect::<Vec<_>>(),
        vec![active.id()]
    );
    assert_eq!(polls[0].polls, 0);
    assert_eq!(polls[0].job, active);
    let archives = s.claim(Work::Archive, "w1", 10, LEASE, now).await.unwrap();
    assert_eq!(
        archives.iter().map(|c| c.job.id()).collect::<Vec<_>>(),
        vec![archiving.id()]
    );
    assert!(
        s.claim(Work::Submit, "w1", 0, LEASE, now)
            .await
            .unwrap()
            .is_empty()
    );

    // An expired lease frees the job for another worker.
    let later = now + chrono::Duration::seconds(31);
    let retaken = s.claim(Work::Submit, "w4", 10, LEASE, later).await.unwrap();
    assert_eq!(retaken.len(), 3);
    assert!(retaken.iter().all(|c| c.lease.worker == "w4"));
    let tokens: HashSet<_> = first
        .iter()
        .chain(&retaken)
        .map(|c| (c.job.id(), c.lease.token.clone()))
        .collect();
    assert_eq!(tokens.len(), 5, "a new claim must carry a new token");
}

pub async fn leases_fence_writes_of_a_holder_that_lost_them(b: &Backend) {
    let s = &*b.store;
    let j = job("alice", t0());
    s.insert_job(&j, None).await.unwrap();
    let a = s
        .claim(Work::Submit, "a", 1, LEASE, at(1))
        .await
        .unwrap()
        .remove(0);

    // A renews in time and keeps the job.
    let a_lease = s.renew(&a.lease, LEASE, at(20)).await.unwrap();
    assert_eq!(a_lease.expires_at, at(50));
    assert!(
        s.claim(Work::Submit, "b", 1, LEASE, at(40))
            .await
            .unwrap()
            .is_empty()
    );

    // A stops renewing; after expiry B takes the job.
    let bc = s
        .claim(Work::Submit, "b", 1, LEASE, at(60))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(bc.job.id(), j.id());
    assert_ne!(bc.lease.token, a_lease.token);

    // Every write A still tries is refused.
    let mut a_job = a.job.clone();
    apply(&mut a_job, submitted("video_a"), at(61));
    let err = s
        .save_job(
            &a_job,
            1,
            SaveJob {
                lease: Some(&a_lease),
                now: Some(at(61)),
                ..SaveJob::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::LeaseLost { job_id } if job_id == j.id()),
        "{err:?}"
    );
    let err = s.renew(&a_lease, LEASE, at(61)).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");
    let err = s.release(&a_lease, at(61), true).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");

    // B's write goes through.
    let mut b_job = bc.job.clone();
    apply(&mut b_job, submitted("video_b"), at(62));
    s.save_job(
        &b_job,
        1,
        SaveJob {
            lease: Some(&bc.lease),
            now: Some(at(62)),
            next_run_at: Some(at(70)),
            release_lease: true,
            ..SaveJob::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(s.get_job(j.id(), None).await.unwrap(), Some(b_job.clone()));
    // The released lease no longer allows anything.
    let err = s.renew(&bc.lease, LEASE, at(63)).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");

    // A lease that expired, even untaken, no longer fences a write in.
    let polled = s
        .claim(Work::Poll, "c", 1, LEASE, at(70))
        .await
        .unwrap()
        .remove(0);
    let mut c_job = polled.job.clone();
    apply(
        &mut c_job,
        reported(ProviderStatus::InProgress, Some(5)),
        at(200),
    );
    let err = s
        .save_job(
            &c_job,
            c_job.version() - 1,
            SaveJob {
                lease: Some(&polled.lease),
                now: Some(at(200)),
                ..SaveJob::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");
    let err = s.renew(&polled.lease, LEASE, at(200)).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");
}

pub async fn releases_count_attempts_and_polls(b: &Backend) {
    let s = &*b.store;
    let j = job("alice", t0());
    s.insert_job(&j, None).await.unwrap();
    let c = s
        .claim(Work::Submit, "w", 1, LEASE, at(1))
        .await
        .unwrap()
        .remove(0);
    s.release(&c.lease, at(10), true).await.unwrap();
    // Not due before next_run_at.
    assert!(
        s.claim(Work::Submit, "w", 1, LEASE, at(9))
            .await
            .unwrap()
            .is_empty()
    );
    let c = s
        .claim(Work::Submit, "w", 1, LEASE, at(10))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(c.attempts, 1);
    s.release(&c.lease, at(10), false).await.unwrap();
    let c = s
        .claim(Work::Submit, "w", 1, LEASE, at(10))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(c.attempts, 1);

    // A successful save resets the count.
    let mut submitted_job = c.job.clone();
    apply(&mut submitted_job, submitted("video_r"), at(11));
    s.save_job(
        &submitted_job,
        1,
        SaveJob {
            lease: Some(&c.lease),
            now: Some(at(11)),
            next_run_at: Some(at(20)),
            release_lease: true,
            reset_attempts: true,
        },
    )
    .await
    .unwrap();
    assert!(
        s.claim(Work::Poll, "w", 1, LEASE, at(19))
            .await
            .unwrap()
            .is_empty()
    );
    let p = s
        .claim(Work::Poll, "w", 1, LEASE, at(20))
        .await
        .unwrap()
        .remove(0);
    assert_eq!((p.attempts, p.polls), (0, 0));
    s.release(&p.lease, at(25), false).await.unwrap();
    let p = s
        .claim(Work::Poll, "w", 1, LEASE, at(25))
        .await
        .unwrap()
        .remove(0);
    assert_eq!((p.attempts, p.polls), (0, 1));
    s.release(&p.lease, at(30), true).await.unwrap();
    let p = s
        .claim(Work::Poll, "w", 1, LEASE, at(30))
        .await
        .unwrap()
        .remove(0);
    assert_eq!((p.attempts, p.polls), (1, 2));
}

pub async fn release_all_frees_a_workers_jobs(b: &Backend) {
    let s = &*b.store;
    for i in 0..4 {
        s.insert_job(&job("alice", at(i)), None).await.unwrap();
    }
    let held = s
        .claim(Work::Submit, "leaving", 3, LEASE, at(10))
        .await
        .unwrap();
    assert_eq!(held.len(), 3);
    let other = s
        .claim(Work::Submit, "staying", 3, LEASE, at(10))
        .await
        .unwrap();
    assert_eq!(other.len(), 1);
    assert_eq!(s.release_all("leaving").await.unwrap(), 3);
    assert_eq!(s.release_all("leaving").await.unwrap(), 0);
    let again = s
        .claim(Work::Submit, "next", 10, LEASE, at(11))
        .await
        .unwrap();
    assert_eq!(again.len(), 3);
    // The staying worker's lease is untouched.
    s.renew(&other[0].lease, LEASE, at(11)).await.unwrap();
}

pub async fn wake_makes_a_job_due_without_a_new_version(b: &Backend) {
    let s = &*b.store;
    let j = job_at_status(&*b.store, "alice", JobStatus::Queued, "video_w").await;
    let c = s
        .claim(Work::Poll, "w", 1, LEASE, at(5))
        .await
        .unwrap()
        .remove(0);
    s.release(&c.lease, at(500), false).await.unwrap();
    assert!(
        s.claim(Work::Poll, "w", 1, LEASE, at(10))
            .await
            .unwrap()
            .is_empty()
    );
    let mut notices = s.subscribe();
    assert!(s.wake(j.id(), at(10)).await.unwrap());
    let c = s.claim(Work::Poll, "w", 1, LEASE, at(10)).await.unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].job.version(), j.version());
    // Notices of the earlier transitions may still be on their way; none may be newer.
    tokio::time::sleep(Duration::from_millis(200)).await;
    while let Ok(n) = notices.try_recv() {
        if let ChangeNotice::Changed {
            job_id, version, ..
        } = n
        {
            assert!(
                job_id != j.id() || version <= j.version(),
                "a wake is not a change: {n:?}"
            );
        }
    }
    assert!(!s.wake(sora_core::JobId::new(), at(10)).await.unwrap());
}

pub async fn a_wake_during_a_lease_survives_the_holders_release(b: &Backend) {
    let s = &*b.store;
    let j = job_at_status(s, "alice", JobStatus::InProgress, "video_wl").await;
    // A hint before the claim is answered by the claim: it does not linger.
    assert!(s.wake(j.id(), at(4)).await.unwrap());
    let c = s
        .claim(Work::Poll, "w", 1, LEASE, at(5))
        .await
        .unwrap()
        .remove(0);
    s.release(&c.lease, at(100), false).await.unwrap();
    assert!(
        s.claim(Work::Poll, "w", 1, LEASE, at(50))
            .await
            .unwrap()
            .is_empty()
    );

    // A hint while the poller holds the job (its answer may predate the hint) makes the job due
    // again at the hint's time, whatever later time the poller asks for.
    let c = s
        .claim(Work::Poll, "w", 1, LEASE, at(100))
        .await
        .unwrap()
        .remove(0);
    assert!(s.wake(j.id(), at(105)).await.unwrap());
    s.release(&c.lease, at(200), false).await.unwrap();
    let c = s
        .claim(Work::Poll, "w", 1, LEASE, at(105))
        .await
        .unwrap()
        .remove(0);

    // The same through a webhook and a fenced save that releases the lease.
    let e = event("wh_wl", Some("video_wl"), at(110));
    assert_eq!(
        s.record_webhook(&e).await.unwrap(),
        InboxOutcome::New {
            job_id: Some(j.id())
        }
    );
    let mut progressed = c.job.clone();
    apply(
        &mut progressed,
        reported(ProviderStatus::InProgress, Some(60)),
        at(111),
    );
    s.save_job(
        &progressed,
        c.job.version(),
        SaveJob {
            lease: Some(&c.lease),
            now: Some(at(111)),
            next_run_at: Some(at(300)),
            release_lease: true,
            reset_attempts: true,
        },
    )
    .await
    .unwrap();
    let c = s
        .claim(Work::Poll, "w", 1, LEASE, at(111))
        .await
        .unwrap()
        .remove(0);

    // And through a shutdown.
    assert!(s.wake(j.id(), at(112)).await.unwrap());
    assert_eq!(s.release_all("w").await.unwrap(), 1);
    assert_eq!(
        s.claim(Work::Poll, "v", 1, LEASE, at(112))
            .await
            .unwrap()
            .len(),
        1
    );
    drop(c);
}

pub async fn the_webhook_inbox_reports_new_and_duplicate_and_matches_later(b: &Backend) {
    let s = &*b.store;
    // An event for a job we know: new, matched, and the job is woken.
    let known = job_at_status(s, "alice", JobStatus::InProgress, "video_known").await;
    let c = s
        .claim(Work::Poll, "w", 1, LEASE, at(5))
        .await
        .unwrap()
        .remove(0);
    s.release(&c.lease, at(1000), false).await.unwrap();
    let e = event("wh_1", Some("video_known"), at(10));
    assert_eq!(
        s.record_webhook(&e).await.unwrap(),
        InboxOutcome::New {
            job_id: Some(known.id())
        }
    );
    assert_eq!(s.record_webhook(&e).await.unwrap(), InboxOutcome::Duplicate);
    let woken = s.claim(Work::Poll, "w", 1, LEASE, at(10)).await.unwrap();
    assert_eq!(woken.len(), 1);

    // An event that arrives before the job has its provider id waits in the inbox...
    let early = event("wh_2", Some("video_later"), at(20));
    assert_eq!(
        s.record_webhook(&early).await.unwrap(),
        InboxOutcome::New { job_id: None }
    );
    assert_eq!(
        s.record_webhook(&early).await.unwrap(),
        InboxOutcome::Duplicate
    );
    // ... and an event without a video id is kept too.
    assert_eq!(
        s.record_webhook(&event("wh_3", None, at(21)))
            .await
            .unwrap(),
        InboxOutcome::New { job_id: None }
    );

    // When the job gets that id, the event is matched: the job is due at once, even though
    // the submitter asked for a later poll.
    let mut later = job("alice", at(22));
    s.insert_job(&later, None).await.unwrap();
    let sub = s
        .claim(Work::Submit, "w", 1, LEASE, at(23))
        .await
        .unwrap()
        .remove(0);
    apply(&mut later, submitted("video_later"), at(24));
    s.save_job(
        &later,
        1,
        SaveJob {
            lease: Some(&sub.lease),
            now: Some(at(24)),
            next_run_at: Some(at(900)),
            release_lease: true,
            reset_attempts: true,
        },
    )
    .await
    .unwrap();
    let due = s.claim(Work::Poll, "w", 10, LEASE, at(24)).await.unwrap();
    assert_eq!(
        due.iter().map(|c| c.job.id()).collect::<Vec<_>>(),
        vec![later.id()]
    );
    s.release(&due[0].lease, at(900), false).await.unwrap();

    // Matched once only: a later save does not wake the job again.
    let mut progressed = later.clone();
    apply(
        &mut progressed,
        reported(ProviderStatus::InProgress, Some(50)),
        at(30),
    );
    s.save_job(
        &progressed,
        later.version(),
        SaveJob {
            now: Some(at(30)),
            ..SaveJob::default()
        },
    )
    .await
    .unwrap();
    assert!(
        s.claim(Work::Poll, "w", 10, LEASE, at(30))
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn counts_by_status_and_active(b: &Backend) {
    let s = &*b.store;
    let zero = s.count_by_status().await.unwrap();
    assert_eq!(zero.len(), JobStatus::ALL.len());
    assert!(zero.iter().all(|(_, n)| *n == 0));
    job_at_status(s, "alice", JobStatus::Pending, "v0").await;
    job_at_status(s, "alice", JobStatus::Pending, "v1").await;
    job_at_status(s, "alice", JobStatus::Queued, "video_q").await;
    job_at_status(s, "alice", JobStatus::InProgress, "video_i").await;
    job_at_status(s, "alice", JobStatus::Archiving, "video_a").await;
    job_at_status(s, "alice", JobStatus::Completed, "video_c").await;
    assert_eq!(s.count_active().await.unwrap(), 2);
    let counts = s.count_by_status().await.unwrap();
    let of = |st| counts.iter().find(|(s, _)| *s == st).unwrap().1;
    assert_eq!(of(JobStatus::Pending), 2);
    assert_eq!(of(JobStatus::Queued), 1);
    assert_eq!(of(JobStatus::InProgress), 1);
    assert_eq!(of(JobStatus::Archiving), 1);
    assert_eq!(of(JobStatus::Completed), 1);
    assert_eq!(of(JobStatus::Failed), 0);
}

pub async fn overdue_and_retention_queries(b: &Backend) {
    let s = &*b.store;
    let old_pending = job("alice", at(0));
    s.insert_job(&old_pending, None).await.unwrap();
    let young = job("alice", at(5000));
    s.insert_job(&young, None).await.unwrap();
    let done = job_at_status(s, "alice", JobStatus::Completed, "video_ret").await;
    let mut cancelled = job("alice", at(1));
    s.insert_job(&cancelled, None).await.unwrap();
    transition(s, &mut cancelled, JobEvent::Cancelled, at(2)).await;

    let overdue = s.overdue(at(100), 10).await.unwrap();
    assert_eq!(
        overdue.iter().map(|j| j.id()).collect::<Vec<_>>(),
        vec![old_pending.id()]
    );
    assert_eq!(s.overdue(at(10_000), 1).await.unwrap().len(), 1);
    assert_eq!(s.overdue(at(10_000), 10).await.unwrap().len(), 2);

    // `done` finished at t0 + 4 s.
    assert!(s.finished_before(at(4), 10).await.unwrap().is_empty());
    let old = s.finished_before(at(5), 10).await.unwrap();
    assert_eq!(old, vec![done.clone()]);
    assert_eq!(s.purged_at(done.id()).await.unwrap(), None);
    s.mark_purged(done.id(), at(6)).await.unwrap();
    s.mark_purged(done.id(), at(7)).await.unwrap();
    assert_eq!(s.purged_at(done.id()).await.unwrap(), Some(at(6)));
    assert!(s.finished_before(at(5), 10).await.unwrap().is_empty());
    // The job row stays, and an owner's list says its files are gone.
    assert_eq!(
        s.get_job(done.id(), None).await.unwrap(),
        Some(done.clone())
    );
    let page = s
        .list_jobs(done.owner(), &JobQuery::default())
        .await
        .unwrap();
    assert!(page.jobs.iter().any(|j| j.id() == done.id()));
    assert_eq!(page.purged, vec![done.id()]);
    let stored = s.get_jobs(&[done.id()], None).await.unwrap();
    assert!(stored[0].files_purged);

    let ghost = sora_core::JobId::new();
    assert!(matches!(
        s.mark_purged(ghost, at(6)).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.purged_at(ghost).await,
        Err(StoreError::NotFound)
    ));
}

pub async fn api_keys_are_found_by_hash_until_revoked(b: &Backend) {
    let s = &*b.store;
    let hash = "a".repeat(64);
    let rec = s
        .create_api_key(&owner("alice"), &hash, Some("laptop"))
        .await
        .unwrap();
    assert!(rec.id.starts_with("key_"));
    assert_eq!(rec.label.as_deref(), Some("laptop"));
    assert_eq!(s.find_api_key(&hash).await.unwrap(), Some(rec.clone()));
    assert_eq!(s.find_api_key(&"b".repeat(64)).await.unwrap(), None);
    let unlabelled = s
        .create_api_key(&owner("bob"), &"c".repeat(64), None)
        .await
        .unwrap();
    assert_eq!(unlabelled.label, None);
    // The same hash twice is refused.
    assert!(s.create_api_key(&owner("bob"), &hash, None).await.is_err());

    assert!(s.revoke_api_key(&rec.id).await.unwrap());
    assert!(!s.revoke_api_key(&rec.id).await.unwrap());
    assert!(!s.revoke_api_key("key_missing").await.unwrap());
    assert_eq!(s.find_api_key(&hash).await.unwrap(), None);
    assert_eq!(
        s.find_api_key(&"c".repeat(64)).await.unwrap(),
        Some(unlabelled)
    );
}

pub async fn every_committed_change_is_announced(b: &Backend) {
    let s = &*b.store;
    let mut rx = s.subscribe();
    let mut j = job("alice", t0());
    let mut seen = vec![j.clone()];
    s.insert_job(&j, None).await.unwrap();
    transition(s, &mut j, submitted("video_n"), at(1)).await;
    seen.push(j.clone());
    // A refused write announces nothing.
    let mut stale = j.clone();
    apply(&mut stale, JobEvent::Cancelled, at(2));
    assert!(s.save_job(&stale, 1, SaveJob::default()).await.is_err());
    let in_progress = reported(ProviderStatus::InProgress, Some(40));
    transition(s, &mut j, in_progress, at(3)).await;
    seen.push(j.clone());
    let completed = reported(ProviderStatus::Completed, None);
    transition(s, &mut j, completed, at(4)).await;
    seen.push(j.clone());
    let mut files = archived(&j.id().to_string());
    if let JobEvent::Archived(a) = &mut files {
        a.thumbnail = Some(a.video.clone());
    }
    transition(s, &mut j, files, at(5)).await;
    seen.push(j.clone());
    // A failure, with a message that fits a notice and one that may not.
    let mut failed = job("bob", at(6));
    s.insert_job(&failed, None).await.unwrap();
    seen.push(failed.clone());
    let error = JobError::new(FailureCode::ContentPolicy, "refused: \"quoted\" ✓");
    transition(s, &mut failed, JobEvent::SubmitRejected(error), at(7)).await;
    seen.push(failed.clone());
    let mut long = job("bob", at(8));
    s.insert_job(&long, None).await.unwrap();
    seen.push(long.clone());
    let error = JobError::new(FailureCode::ProviderError, "x".repeat(9000));
    transition(s, &mut long, JobEvent::SubmitRejected(error), at(9)).await;
    seen.push(long.clone());

    let mut got = Vec::new();
    while got.len() < seen.len() {
        let n = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a change notice")
            .unwrap();
        if n != ChangeNotice::Resync {
            got.push(n);
        }
    }
    for (n, want) in got.iter().zip(&seen) {
        let ChangeNotice::Changed {
            job_id,
            version,
            state,
        } = n
        else {
            unreachable!()
        };
        assert_eq!((*job_id, *version), (want.id(), want.version()), "{n:?}");
        // What a notice carries is the job at that version, exactly.
        let expect = ChangedState {
            owner: want.owner().clone(),
            status: want.status(),
            progress: want.progress(),
            error: want.error().cloned(),
            video: want.artifacts().is_some(),
            thumbnail: want.artifacts().is_some_and(|a| a.thumbnail.is_some()),
        };
        let too_long = want.error().is_some_and(|e| e.message.len() > 8000);
        match (b.kind, state) {
            (Kind::Postgres, Some(state)) => assert_eq!(**state, expect, "{n:?}"),
            // Too long for a notification: the subscriber reads the job instead.
            (Kind::Postgres, None) => assert!(too_long, "no state in {n:?}"),
            // In one process the job is read back instead.
            (Kind::Sqlite, state) => assert_eq!(*state, None),
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rx.try_recv().is_err(), "no notice for the refused write");
}

pub async fn ping_answers(b: &Backend) {
    b.store.ping().await.unwrap();
}

pub async fn a_second_instance_never_claims_a_held_job(b: &Backend) {
    let other = b.reopen().await;
    for i in 0..10 {
        b.store
            .insert_job(&job("alice", at(i)), None)
            .await
            .unwrap();
    }
    let mine = b
        .store
        .claim(Work::Submit, "one", 6, LEASE, at(20))
        .await
        .unwrap();
    let theirs = other
        .claim(Work::Submit, "two", 10, LEASE, at(20))
        .await
        .unwrap();
    assert_eq!((mine.len(), theirs.len()), (6, 4));
    let ids: HashSet<_> = mine.iter().chain(&theirs).map(|c| c.job.id()).collect();
    assert_eq!(ids.len(), 10);
}

pub async fn several_jobs_are_read_in_one_query(b: &Backend) {
    let s = &*b.store;
    let a = job("alice", at(1));
    let c = job("bob", at(2));
    s.insert_job(&a, None).await.unwrap();
    s.insert_job(&c, None).await.unwrap();
    let missing = JobId::from_parts(3, 3);
    let read = |owner: Option<&'static str>| {
        // Asked twice, answered once.
        let ids = [a.id(), c.id(), missing, a.id()];
        async move {
            let owner = owner.map(|o| o.parse::<sora_core::OwnerId>().unwrap());
            let mut got: Vec<(JobId, bool)> = s
                .get_jobs(&ids, owner.as_ref())
                .await
                .unwrap()
                .into_iter()
                .map(|j| (j.job.id(), j.files_purged))
                .collect();
            got.sort();
            got
        }
    };
    assert_eq!(read(None).await, vec![(a.id(), false), (c.id(), false)]);
    assert_eq!(read(Some("alice")).await, vec![(a.id(), false)]);
    assert!(s.get_jobs(&[], None).await.unwrap().is_empty());
}

pub async fn old_webhook_inbox_entries_are_purged(b: &Backend) {
    let s = &*b.store;
    s.record_webhook(&event("wh_old", None, at(10)))
        .await
        .unwrap();
    s.record_webhook(&event("wh_new", None, at(20)))
        .await
        .unwrap();
    assert_eq!(s.purge_webhooks(at(10)).await.unwrap(), 0);
    assert_eq!(s.purge_webhooks(at(15)).await.unwrap(), 1);
    // The purged id is new again; the kept one is still a duplicate.
    assert_eq!(
        s.record_webhook(&event("wh_old", None, at(30)))
            .await
            .unwrap(),
        InboxOutcome::New { job_id: None }
    );
    assert_eq!(
        s.record_webhook(&event("wh_new", None, at(30)))
            .await
            .unwrap(),
        InboxOutcome::Duplicate
    );
}

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let b = crate::store::common::Backend::sqlite().await;
                    super::$case(&b).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let b = crate::store::common::Backend::postgres().await;
                    super::$case(&b).await;
                }
            )*
        }
    };
}

suite!(
    a_job_round_trips_with_every_field,
    idempotency_keys_replay_conflict_and_expire,
    concurrent_inserts_with_one_key_store_one_job,
    lists_are_newest_first_paged_and_filtered,
    a_stale_version_is_a_conflict,
    two_concurrent_transitions_from_one_version_one_wins,
    claims_take_due_jobs_of_their_kind_oldest_first,
    leases_fence_writes_of_a_holder_that_lost_them,
    releases_count_attempts_and_polls,
    release_all_frees_a_workers_jobs,
    wake_makes_a_job_due_without_a_new_version,
    a_wake_during_a_lease_survives_the_holders_release,
    the_webhook_inbox_reports_new_and_duplicate_and_matches_later,
    old_webhook_inbox_entries_are_purged,
    several_jobs_are_read_in_one_query,
    counts_by_status_and_active,
    overdue_and_retention_queries,
    api_keys_are_found_by_hash_until_revoked,
    every_committed_change_is_announced,
    ping_answers,
    a_second_instance_never_claims_a_held_job,
);
