//! The store's tests: one binary. The conformance suite runs every case against SQLite and
//! against a fresh PostgreSQL database per test; the PostgreSQL-only, SQLite-only and blob
//! storage tests follow.

mod store {
    pub mod blob;
    pub mod common;
    pub mod conformance;
    pub mod mock;
    pub mod postgres;
    pub mod sqlite;
}
