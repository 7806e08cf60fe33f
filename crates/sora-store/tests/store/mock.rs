//! `MockJobStore` (feature `mock`) can stand in for a store in other crates' tests.

use std::sync::Arc;

use sora_store::{JobStore, MockJobStore, SaveJob, StoreError};

use super::common::*;

#[tokio::test]
async fn the_mock_store_answers_as_told() {
    let j = job("alice", t0());
    let expected = j.clone();
    let mut mock = MockJobStore::new();
    mock.expect_get_job()
        .withf({
            let id = j.id();
            move |asked, owner| *asked == id && owner.is_none()
        })
        .returning(move |_, _| Ok(Some(expected.clone())));
    mock.expect_save_job()
        .withf(|_, version, save| *version == 1 && save.lease.is_none())
        .returning(|job, _, _| {
            Err(StoreError::Conflict {
                job_id: job.id(),
                expected_version: 1,
            })
        });
    let store: Arc<dyn JobStore> = Arc::new(mock);
    assert_eq!(store.get_job(j.id(), None).await.unwrap(), Some(j.clone()));
    let err = store.save_job(&j, 1, SaveJob::default()).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }));
}
