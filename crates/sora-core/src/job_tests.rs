use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;

use super::*;
use crate::spec::Catalogue;

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
}

fn new_job() -> Job {
    let request = NewJob {
        owner: "alice".parse().unwrap(),
        prompt: Prompt::parse("a cat on a skateboard").unwrap(),
        spec: Catalogue::default().default_preset().clone().into_spec(),
        remix_of: None,
        input_reference: None,
        metadata: BTreeMap::new(),
    };
    Job::new(JobId::from_parts(1, 2), request, t(0))
}

impl crate::spec::Preset {
    fn into_spec(self) -> VideoSpec {
        VideoSpec {
            model: self.model,
            size: self.size,
            seconds: self.seconds,
        }
    }
}

fn vid(s: &str) -> VideoId {
    s.parse().unwrap()
}

fn submitted() -> JobEvent {
    JobEvent::Submitted {
        video_id: vid("video_1"),
    }
}

fn report(status: ProviderStatus, progress: Option<u8>) -> JobEvent {
    JobEvent::ProviderReported(ProviderReport {
        status,
        progress,
        expires_at: None,
    })
}

fn artifacts() -> Artifacts {
    Artifacts {
        video: StoredFile {
            key: "jobs/x/video.mp4".into(),
            size: 10,
            content_type: "video/mp4".into(),
            etag: Some("\"e\"".into()),
        },
        thumbnail: None,
        spritesheet: None,
    }
}

fn err(code: FailureCode) -> JobError {
    JobError::new(code, "because")
}

/// A job driven through `events`, each of which must change it.
fn job_after(events: &[JobEvent]) -> Job {
    let mut job = new_job();
    for (i, e) in events.iter().enumerate() {
        assert!(
            job.apply(e, t(i as i64 + 1)).is_changed(),
            "setup event {e:?} did not apply"
        );
    }
    job
}

fn in_status(status: JobStatus) -> Job {
    match status {
        JobStatus::Pending => new_job(),
        JobStatus::Queued => job_after(&[submitted()]),
        JobStatus::InProgress => {
            job_after(&[submitted(), report(ProviderStatus::InProgress, Some(10))])
        }
        JobStatus::Archiving => job_after(&[submitted(), report(ProviderStatus::Completed, None)]),
        JobStatus::Completed => job_after(&[
            submitted(),
            report(ProviderStatus::Completed, None),
            JobEvent::Archived(artifacts()),
        ]),
        JobStatus::Failed => {
            job_after(&[JobEvent::SubmitRejected(err(FailureCode::InvalidRequest))])
        }
        JobStatus::Cancelled => job_after(&[JobEvent::Cancelled]),
    }
}

#[test]
fn new_job_is_pending_at_version_one() {
    let job = new_job();
    assert_eq!(job.status(), JobStatus::Pending);
    assert_eq!(job.status().public(), PublicStatus::Pending);
    assert_eq!(job.version(), 1);
    assert_eq!(job.progress(), 0);
    assert_eq!(job.message(), "Waiting to be sent to the provider");
}

#[test]
fn submission_moves_pending_to_queued_and_records_the_provider_id() {
    let mut job = new_job();
    let applied = job.apply(&submitted(), t(5));
    assert_eq!(
        applied,
        Applied::Changed {
            from: JobStatus::Pending,
            to: JobStatus::Queued
        }
    );
    assert_eq!(job.video_id(), Some(&vid("video_1")));
    assert_eq!(job.state().submitted_at, Some(t(5)));
    assert_eq!(job.state().updated_at, t(5));
    assert_eq!(job.version(), 2);
}

#[test]
fn a_second_submission_is_ignored() {
    let mut job = in_status(JobStatus::Queued);
    let before = job.clone();
    let other = JobEvent::Submitted {
        video_id: vid("video_2"),
    };
    assert_eq!(job.apply(&other, t(9)), Applied::Unchanged);
    assert_eq!(job.apply(&submitted(), t(9)), Applied::Unchanged);
    assert_eq!(job, before);
}

#[test]
fn a_report_before_submission_is_ignored() {
    let mut job = new_job();
    let e = report(ProviderStatus::Completed, Some(100));
    assert_eq!(job.apply(&e, t(1)), Applied::Unchanged);
    assert_eq!(job.status(), JobStatus::Pending);
}

#[test]
fn in_progress_report_moves_queued_forward_with_progress() {
    let mut job = in_status(JobStatus::Queued);
    let applied = job.apply(&report(ProviderStatus::InProgress, Some(42)), t(9));
    assert_eq!(
        applied,
        Applied::Changed {
            from: JobStatus::Queued,
            to: JobStatus::InProgress
        }
    );
    assert_eq!(job.progress(), 42);
    assert_eq!(job.message(), "Generating (42%)");
}

#[test]
fn progress_alone_is_a_change_within_the_same_status() {
    let mut job = in_status(JobStatus::InProgress);
    let v = job.version();
    let applied = job.apply(&report(ProviderStatus::InProgress, Some(50)), t(9));
    assert_eq!(
        applied,
        Applied::Changed {
            from: JobStatus::InProgress,
            to: JobStatus::InProgress
        }
    );
    assert_eq!(job.version(), v + 1);
}

#[test]
fn progress_never_decreases() {
    let mut job = in_status(JobStatus::InProgress);
    let _ = job.apply(&report(ProviderStatus::InProgress, Some(60)), t(9));
    assert_eq!(
        job.apply(&report(ProviderStatus::InProgress, Some(30)), t(10)),
        Applied::Unchanged
    );
    assert_eq!(job.progress(), 60);
}

#[test]
fn progress_above_100_is_read_as_100() {
    let mut job = in_status(JobStatus::Queued);
    let _ = job.apply(&report(ProviderStatus::InProgress, Some(250)), t(9));
    assert_eq!(job.progress(), 100);
}

#[test]
fn a_queued_report_never_moves_a_job_back() {
    let mut job = in_status(JobStatus::InProgress);
    assert_eq!(
        job.apply(&report(ProviderStatus::Queued, Some(0)), t(9)),
        Applied::Unchanged
    );
    assert_eq!(job.status(), JobStatus::InProgress);
}

#[test]
fn an_unknown_provider_status_changes_nothing_but_progress() {
    let mut job = in_status(JobStatus::InProgress);
    let unknown = ProviderStatus::Unknown("processing".into());
    assert_eq!(
        job.apply(&report(unknown.clone(), None), t(9)),
        Applied::Unchanged
    );
    assert!(job.apply(&report(unknown, Some(80)), t(9)).is_changed());
    assert_eq!(job.status(), JobStatus::InProgress);
    assert_eq!(job.progress(), 80);
}

#[test]
fn provider_completion_is_archiving_which_the_public_sees_as_in_progress() {
    for start in [JobStatus::Queued, JobStatus::InProgress] {
        let mut job = in_status(start);
        let applied = job.apply(&report(ProviderStatus::Completed, None), t(9));
        assert_eq!(
            applied,
            Applied::Changed {
                from: start,
                to: JobStatus::Archiving
            }
        );
        assert_eq!(job.progress(), 100);
        assert_eq!(job.status().public(), PublicStatus::InProgress);
        assert!(job.artifacts().is_none());
    }
}

#[test]
fn provider_expiry_is_recorded() {
    let mut job = in_status(JobStatus::InProgress);
    let e = JobEvent::ProviderReported(ProviderReport {
        status: ProviderStatus::Completed,
        progress: Some(100),
        expires_at: Some(t(3600)),
    });
    let _ = job.apply(&e, t(9));
    assert_eq!(job.state().provider_expires_at, Some(t(3600)));
}

#[test]
fn archiving_completes_the_job_with_its_files() {
    let mut job = in_status(JobStatus::Archiving);
    let applied = job.apply(&JobEvent::Archived(artifacts()), t(20));
    assert_eq!(
        applied,
        Applied::Changed {
            from: JobStatus::Archiving,
            to: JobStatus::Completed
        }
    );
    assert_eq!(job.artifacts(), Some(&artifacts()));
    assert_eq!(job.state().finished_at, Some(t(20)));
    assert_eq!(job.message(), "Ready for download");
}

#[test]
fn files_cannot_complete_a_job_the_provider_has_not_finished() {
    for s in [JobStatus::Pending, JobStatus::Queued, JobStatus::InProgress] {
        let mut job = in_status(s);
        assert_eq!(
            job.apply(&JobEvent::Archived(artifacts()), t(9)),
            Applied::Unchanged
        );
        assert_eq!(job.status(), s);
    }
}

#[test]
fn provider_failure_fails_an_active_job_with_its_reason() {
    for s in [JobStatus::Queued, JobStatus::InProgress] {
        let mut job = in_status(s);
        let e = report(
            ProviderStatus::Failed(err(FailureCode::ContentPolicy)),
            None,
        );
        assert!(job.apply(&e, t(9)).is_changed());
        assert_eq!(job.status(), JobStatus::Failed);
        assert_eq!(job.error(), Some(&err(FailureCode::ContentPolicy)));
        assert_eq!(job.message(), "because");
    }
}

#[test]
fn a_late_failure_never_overrides_a_provider_completion() {
    for s in [JobStatus::Archiving, JobStatus::Completed] {
        let mut job = in_status(s);
        let e = report(
            ProviderStatus::Failed(err(FailureCode::ProviderError)),
            None,
        );
        assert_eq!(job.apply(&e, t(30)), Applied::Unchanged);
        assert_eq!(job.status(), s);
    }
}

#[test]
fn submit_rejection_fails_only_a_pending_job() {
    let mut job = new_job();
    let e = JobEvent::SubmitRejected(err(FailureCode::QuotaExhausted));
    assert!(job.apply(&e, t(1)).is_changed());
    assert_eq!(job.error().unwrap().code, FailureCode::QuotaExhausted);

    let mut job = in_status(JobStatus::Queued);
    assert_eq!(job.apply(&e, t(1)), Applied::Unchanged);
}

#[test]
fn archive_failure_fails_only_an_archiving_job() {
    let e = JobEvent::ArchiveFailed(err(FailureCode::ContentExpired));
    let mut job = in_status(JobStatus::Archiving);
    assert!(job.apply(&e, t(1)).is_changed());
    assert_eq!(job.error().unwrap().code, FailureCode::ContentExpired);
    for s in [JobStatus::Pending, JobStatus::Queued, JobStatus::InProgress] {
        let mut job = in_status(s);
        assert_eq!(job.apply(&e, t(1)), Applied::Unchanged);
    }
}

#[test]
fn timeout_fails_every_non_terminal_state() {
    let e = JobEvent::TimedOut {
        after: Duration::from_secs(3600),
    };
    for s in [
        JobStatus::Pending,
        JobStatus::Queued,
        JobStatus::InProgress,
        JobStatus::Archiving,
    ] {
        let mut job = in_status(s);
        assert!(job.apply(&e, t(99)).is_changed(), "{s}");
        assert_eq!(job.status(), JobStatus::Failed);
        let error = job.error().unwrap();
        assert_eq!(error.code, FailureCode::Timeout);
        assert!(error.message.contains("60 minutes"), "{}", error.message);
    }
}

#[test]
fn cancel_reaches_cancelled_from_every_non_terminal_state() {
    for s in [
        JobStatus::Pending,
        JobStatus::Queued,
        JobStatus::InProgress,
        JobStatus::Archiving,
    ] {
        let mut job = in_status(s);
        assert_eq!(
            job.apply(&JobEvent::Cancelled, t(99)),
            Applied::Changed {
                from: s,
                to: JobStatus::Cancelled
            }
        );
        assert_eq!(job.state().finished_at, Some(t(99)));
    }
}

#[test]
fn terminal_states_absorb_every_event() {
    let events = [
        submitted(),
        report(ProviderStatus::InProgress, Some(99)),
        report(ProviderStatus::Completed, Some(100)),
        report(
            ProviderStatus::Failed(err(FailureCode::ProviderError)),
            None,
        ),
        JobEvent::Archived(artifacts()),
        JobEvent::SubmitRejected(err(FailureCode::InvalidRequest)),
        JobEvent::ArchiveFailed(err(FailureCode::ContentExpired)),
        JobEvent::TimedOut {
            after: Duration::from_secs(1),
        },
        JobEvent::Cancelled,
    ];
    for s in [
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ] {
        let mut job = in_status(s);
        let before = job.clone();
        for e in &events {
            assert_eq!(job.apply(e, t(999)), Applied::Unchanged, "{s} + {e:?}");
        }
        assert_eq!(job, before);
    }
}

#[test]
fn statuses_round_trip_through_their_spelling() {
    for s in JobStatus::ALL {
        assert_eq!(s.as_str().parse::<JobStatus>().unwrap(), s);
    }
    for s in PublicStatus::ALL {
        assert_eq!(s.as_str().parse::<PublicStatus>().unwrap(), s);
        assert!(s.stored().iter().all(|st| st.public() == s));
    }
    for c in FailureCode::ALL {
        assert_eq!(c.as_str().parse::<FailureCode>().unwrap(), c);
    }
    for v in Variant::ALL {
        assert_eq!(v.as_str().parse::<Variant>().unwrap(), v);
    }
    assert!("archived".parse::<JobStatus>().is_err());
    assert!("archiving".parse::<PublicStatus>().is_err());
}

#[test]
fn provider_error_codes_map_to_our_closed_set() {
    use FailureCode::*;
    assert_eq!(FailureCode::from_provider_code(None), ProviderError);
    assert_eq!(
        FailureCode::from_provider_code(Some("moderation_blocked")),
        ContentPolicy
    );
    assert_eq!(
        FailureCode::from_provider_code(Some("content_policy_violation")),
        ContentPolicy
    );
    assert_eq!(
        FailureCode::from_provider_code(Some("insufficient_quota")),
        QuotaExhausted
    );
    assert_eq!(
        FailureCode::from_provider_code(Some("invalid_size")),
        InvalidRequest
    );
    assert_eq!(
        FailureCode::from_provider_code(Some("internal_error")),
        ProviderError
    );
}

#[test]
fn restore_accepts_consistent_state_and_refuses_the_rest() {
    for s in JobStatus::ALL {
        let job = in_status(s);
        let back = Job::restore(
            job.id(),
            job.request().clone(),
            job.created_at(),
            job.state().clone(),
        )
        .unwrap();
        assert_eq!(back, job);
    }
    let broken = |f: &dyn Fn(&mut JobState), s: JobStatus| {
        let job = in_status(s);
        let mut state = job.state().clone();
        f(&mut state);
        Job::restore(job.id(), job.request().clone(), job.created_at(), state)
    };
    assert!(broken(&|s| s.artifacts = None, JobStatus::Completed).is_err());
    assert!(broken(&|s| s.error = None, JobStatus::Failed).is_err());
    assert!(broken(&|s| s.video_id = None, JobStatus::InProgress).is_err());
    assert!(broken(&|s| s.progress = 101, JobStatus::InProgress).is_err());
    assert!(broken(&|s| s.version = 0, JobStatus::Pending).is_err());
}

fn arb_event() -> impl Strategy<Value = JobEvent> {
    let code = prop::sample::select(FailureCode::ALL.to_vec());
    let error = code.prop_map(|c| JobError::new(c, "reason"));
    let status = prop_oneof![
        Just(ProviderStatus::Queued),
        Just(ProviderStatus::InProgress),
        Just(ProviderStatus::Completed),
        error.clone().prop_map(ProviderStatus::Failed),
        Just(ProviderStatus::Unknown("weird".into())),
    ];
    prop_oneof![
        prop::sample::select(vec!["video_a", "video_b"])
            .prop_map(|v| JobEvent::Submitted { video_id: vid(v) }),
        (
            status,
            prop::option::of(0u8..=120),
            prop::option::of(0i64..10)
        )
            .prop_map(|(status, progress, exp)| {
                JobEvent::ProviderReported(ProviderReport {
                    status,
                    progress,
                    expires_at: exp.map(|e| t(3600 + e)),
                })
            }),
        Just(JobEvent::Archived(artifacts())),
        error.clone().prop_map(JobEvent::SubmitRejected),
        error.prop_map(JobEvent::ArchiveFailed),
        (1u64..10_000).prop_map(|s| JobEvent::TimedOut {
            after: Duration::from_secs(s)
        }),
        Just(JobEvent::Cancelled),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn invariants_hold_over_any_event_sequence(events in prop::collection::vec(arb_event(), 0..40)) {
        let mut job = new_job();
        for (i, e) in events.iter().enumerate() {
            let before = job.clone();
            let applied = job.apply(e, t(i as i64));
            // Terminal states absorb.
            if before.status().is_terminal() {
                prop_assert_eq!(applied, Applied::Unchanged);
            }
            match applied {
                Applied::Unchanged => prop_assert_eq!(&job, &before),
                Applied::Changed { from, to } => {
                    prop_assert_eq!(from, before.status());
                    prop_assert_eq!(to, job.status());
                    prop_assert_eq!(job.version(), before.version() + 1);
                }
            }
            // Status only moves forward; progress never decreases.
            prop_assert!(job.status().rank() >= before.status().rank());
            prop_assert!(job.progress() >= before.progress());
            prop_assert!(job.progress() <= 100);
            // Completed implies archived; failed implies an error; active implies a provider id.
            prop_assert_eq!(job.status() == JobStatus::Completed, job.artifacts().is_some());
            if job.status() == JobStatus::Failed {
                prop_assert!(job.error().is_some());
            }
            if job.status() != JobStatus::Pending && job.status() != JobStatus::Cancelled
                && job.status() != JobStatus::Failed {
                prop_assert!(job.video_id().is_some());
            }
            // A provider id, once set, never changes.
            if let Some(v) = before.video_id() {
                prop_assert_eq!(job.video_id(), Some(v));
            }
            // Whatever the store keeps can be restored.
            prop_assert!(Job::restore(job.id(), job.request().clone(), job.created_at(), job.state().clone()).is_ok());
        }
    }

    #[test]
    fn applying_an_event_twice_equals_applying_it_once(
        prefix in prop::collection::vec(arb_event(), 0..20),
        event in arb_event(),
    ) {
        let mut job = new_job();
        for (i, e) in prefix.iter().enumerate() {
            let _ = job.apply(e, t(i as i64));
        }
        let _ = job.apply(&event, t(100));
        let once = job.clone();
        prop_assert_eq!(job.apply(&event, t(101)), Applied::Unchanged);
        prop_assert_eq!(job, once);
    }
}
