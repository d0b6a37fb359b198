//! callsign: a self-hosted, multi-tenant communication identity and access-token server,
//! wire-compatible with the Identity API of Azure Communication Services.
//!
//! Layers, outermost first: `http` (routes, authentication, error shape) → `service` (rules:
//! tenants, tokens, identities) → `store` (SQL, one implementation per dialect). `domain`
//! holds the validated types they pass each other.

pub mod bench;
pub mod bootstrap;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod domain;
mod fsutil;
pub mod http;
pub mod metrics;
pub mod service;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tls;
