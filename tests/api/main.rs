//! End-to-end tests of callsign's HTTP API: each test starts a real server (HTTPS and HTTP
//! listeners, real database) and runs once on SQLite and once on PostgreSQL.
//!
//! The PostgreSQL cases use `CALLSIGN_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432`) and fail, naming that variable, when it cannot be
//! reached.

mod helpers;

mod admin;
mod audit;
mod authentication;
mod bad_input;
mod bench;
mod concurrency;
mod identities;
mod invalidation;
mod isolation;
mod limits;
mod openapi;
mod operator_changes;
mod persistence;
mod process;
mod rotation;
mod tenants;
mod under_load;
mod verification;
