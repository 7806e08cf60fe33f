//! The errors of the use cases.

use sora_core::{JobId, PublicStatus, Variant};
use sora_store::StoreError;

/// Why a use case refused or failed. Each variant maps to one HTTP status in the server.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A request field is wrong; the message says what is allowed.
    #[error("{field}: {message}")]
    Invalid {
        /// The request field (`prompt`, `preset`, `model`, `size`, `seconds`, `remixOf`,
        /// `metadata`, `inputReference`...).
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No such job for this caller (another owner's job is not found either).
    #[error("no job {0} for this caller")]
    NotFound(String),
    /// The `Idempotency-Key` was used before with a different request.
    #[error("the Idempotency-Key was already used for another request (job {0})")]
    IdempotencyConflict(JobId),
    /// The job has no downloadable files yet.
    #[error("job {job_id} is {status}, not completed: nothing to download yet")]
    NotReady {
        /// The job.
        job_id: JobId,
        /// Its public status.
        status: PublicStatus,
    },
    /// The job completed, but the provider offered no file of this variant.
    #[error("job {job_id} has no {variant}")]
    NoSuchVariant {
        /// The job.
        job_id: JobId,
        /// The variant asked for.
        variant: Variant,
    },
    /// The job's files were deleted by retention or by its owner.
    #[error("the files of job {0} were deleted")]
    Gone(JobId),
    /// The store failed.
    #[error("storage error")]
    Store(#[from] StoreError),
}

impl ServiceError {
    pub(crate) fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            message: message.into(),
        }
    }
}
