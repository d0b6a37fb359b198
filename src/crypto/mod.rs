//! Key material: the master key that seals secrets at rest, and token signing keys.

pub mod master_key;
pub mod signing;
