//! The one error type of the store.

use sora_core::JobId;

/// A boxed error from a caller's upload stream.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a store operation failed.
///
/// No variant's message contains a database password: connection errors are reported with the
/// URL's password removed, and sqlx's own errors never repeat the URL.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The job, key or file does not exist.
    #[error("not found")]
    NotFound,
    /// The job is no longer at the version it was read at: someone else wrote it first.
    #[error("job {job_id} is no longer at version {expected_version}")]
    Conflict {
        /// The job.
        job_id: JobId,
        /// The version the writer expected.
        expected_version: u64,
    },
    /// The lease is gone: it expired, was released, or another worker holds the job now.
    #[error("the lease on job {job_id} is no longer held")]
    LeaseLost {
        /// The job.
        job_id: JobId,
    },
    /// The idempotency key was used before with a different request.
    #[error("the idempotency key was already used for a different request (job {job_id})")]
    IdempotencyConflict {
        /// The job the key was first used for.
        job_id: JobId,
    },
    /// A list cursor that this store did not hand out.
    #[error("invalid cursor")]
    InvalidCursor,
    /// A stored row that does not make a valid job (or key, or event).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("database error")]
    Database(#[source] sqlx::Error),
    /// Applying the migrations failed.
    #[error("migration failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// A URL or setting that cannot work.
    #[error("configuration error: {0}")]
    Config(String),
    /// The blob store failed.
    #[error("blob storage error")]
    Blob(#[source] object_store::Error),
    /// A byte range that starts at or past the end of the file, or is empty.
    #[error("range not satisfiable (the file has {size} bytes)")]
    RangeNotSatisfiable {
        /// The file's size.
        size: u64,
    },
    /// A blob key that is not a valid path (empty segments, `..`, control characters).
    #[error("invalid blob key {0}")]
    InvalidKey(String),
    /// The caller's upload stream failed.
    #[error("reading the upload stream failed")]
    Upload(#[source] BoxError),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::Migrate(e)
    }
}

impl From<object_store::Error> for StoreError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { .. } => Self::NotFound,
            other => Self::Blob(other),
        }
    }
}

/// A database URL with its password replaced by `***`, for messages.
pub(crate) fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                // Setting a password fails only for URLs that cannot have one.
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        // Not a URL: show nothing of it (it might hold a secret).
        Err(_) => "(an unparseable URL)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn redact_url_hides_the_password() {
        let r = redact_url("postgres://user:s3cret@db.example:5432/sora");
        assert!(!r.contains("s3cret"), "{r}");
        assert!(r.contains("user"), "{r}");
        assert_eq!(redact_url("postgres://db/sora"), "postgres://db/sora");
        assert!(!redact_url("garbage s3cret").contains("s3cret"));
    }
}
