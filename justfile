# The developer entry points. `just --list` shows them.

# Run the server with the embedded defaults (SQLite, local files, the built-in emulator).
dev:
    cargo run -p sora-server

# Apply the PostgreSQL migrations of DATABASE_URL with sqlx-cli (or: cargo run -p sora-server -- migrate).
migrate:
    sqlx migrate run --source migrations

# Only the end-to-end tests (the real server, the emulator, PostgreSQL).
e2e:
    cargo test -p sora-e2e

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

# The benchmarks: every scenario against sora-server and its baseline in one run (docs/performance.md).
# `just bench --smoke` is the few-seconds-per-scenario run CI does; `just bench --only create,webhook`.
bench *ARGS:
    bash bench/run.sh {{ARGS}}
