//! Cohort coordinator.
//!
//! # Layout
//!
//! - [`admin`]: the admin channel's requests and answers (a local Unix socket), how they
//!   print, and the client `cohort-coordinator admin` uses.
//! - [`config_file`]: the configuration file: keys, defaults, environment overrides,
//!   the range check of every key, and the service configuration it builds.
//! - [`engine`]: the sans-IO round engine (registration, batches, signing, aborts).
//! - [`store`]: persistent state (rounds, registrations, batches, signed trees, bans).
//! - [`service`]: the engine driven over QUIC on its own thread, with persistence and
//!   restart recovery.
//! - [`timeline`]: a round's timeline built from the engine's events (phases, retries,
//!   exclusions and outcome per batch), drawn as an SVG; keeps the last few rounds.

pub mod admin;
pub mod config_file;
pub mod engine;
pub mod service;
pub mod store;
pub mod timeline;
