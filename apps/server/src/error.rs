//! The one error type of the HTTP layer: a status, a stable snake_case code and a message,
//! answered as `{"error":{"code","message"}}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use sora_service::ServiceError;
use sora_store::StoreError;

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<&'static str>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// 400 `invalid_request`, naming the field at fault.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field: Some(field),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
        }
    }

    /// 400 with a specific code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 404 `job_not_found`.
    pub fn job_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "job_not_found",
            "No such job for this caller",
        )
    }

    /// 500 `internal_error`: logs the cause, shows the client nothing of it.
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        tracing::error!(error = %ErrorChain(cause), "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Something went wrong on our side; it has been logged",
        )
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The code.
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED && self.code == "unauthorized" {
            res.insert_header((actix_web::http::header::WWW_AUTHENTICATE, "Bearer"));
        }
        res.json(Body {
            error: Inner {
                code: self.code,
                message: &self.message,
                field: self.field,
            },
        })
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid { field, message } => {
                Self::invalid(field, format!("{field}: {message}"))
            }
            ServiceError::NotFound(_) => Self::job_not_found(),
            ServiceError::IdempotencyConflict(_) => Self::new(
                StatusCode::CONFLICT,
                "idempotency_conflict",
                "This Idempotency-Key was already used with a different request",
            ),
            e @ ServiceError::NotReady { .. } => {
                Self::new(StatusCode::CONFLICT, "not_ready", e.to_string())
            }
            e @ ServiceError::NoSuchVariant { .. } => {
                Self::new(StatusCode::NOT_FOUND, "variant_not_found", e.to_string())
            }
            e @ ServiceError::Gone(_) => {
                Self::new(StatusCode::GONE, "files_deleted", e.to_string())
            }
            ServiceError::Store(e) => Self::from(e),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::job_not_found(),
            // Another writer kept winning the race for this job: the client may simply retry.
            StoreError::Conflict { .. } | StoreError::LeaseLost { .. } => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                "The job changed while this request was handled; try again",
            ),
            StoreError::InvalidCursor => {
                Self::invalid("cursor", "cursor: not a cursor this service gave out")
            }
            e @ StoreError::Database(_) => {
                // Logged in full; the client learns only that it may retry.
                tracing::error!(error = %ErrorChain(&e), "database error");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "The database is unavailable; try again shortly",
                )
            }
            other => Self::internal(&other),
        }
    }
}

/// Displays an error with its whole chain of sources.
#[derive(Debug)]
pub struct ErrorChain<'a>(pub &'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}
