#![doc = include_str!("../README.md")]

pub mod ids;
pub mod job;
pub mod prompt;
pub mod spec;

pub use ids::{IdError, JobId, OwnerId, VideoId};
pub use job::{
    Applied, Artifacts, FailureCode, InputReference, Job, JobError, JobEvent, JobState, JobStatus,
    NewJob, ProviderReport, ProviderStatus, PublicStatus, RemixOf, RestoreError, StoredFile,
    UnknownStatus, Variant,
};
pub use prompt::{Prompt, PromptError};
pub use spec::{
    Catalogue, CatalogueError, ModelOffer, Preset, SpecError, SpecRequest, VideoSize, VideoSpec,
};
