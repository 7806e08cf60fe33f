//! Test helpers shared with other crates' tests (feature `testing`).
