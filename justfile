# The developer entry points. `just --list` shows them.

# Run every test of the workspace.
test:
    cargo test --workspace

# Formatting check, clippy with warnings as errors, and the dependency boundaries.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings
    bash .ci/boundaries

# Format the code.
fmt:
    cargo fmt --all

# Everything CI runs.
ci:
    bash .ci/run
