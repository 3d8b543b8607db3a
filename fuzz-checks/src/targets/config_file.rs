//! Fuzzes the coordinator's configuration: the TOML file and the `COHORT_COORDINATOR_*`
//! environment overrides that `FileConfig::load` reads, then `FileConfig::check` and every
//! setting the coordinator derives from a checked file.
//!
//! Input layout: UTF-8; the text before the first NUL is the file, each line after it one
//! variable `NAME=VALUE` (the name gets the [`ENV_PREFIX`] unless it already has it).
//!
//! Asserts: nothing panics; a file that checks gives its admin socket, shutdown grace,
//! metrics address and chain kind, and a service and a bitcoind configuration or a
//! [`ConfigError`]; a
//! loaded file written back as TOML loads again, and writes the same TOML.

use cohort_coordinator::config_file::{ConfigError, FileConfig, ENV_PREFIX};

use crate::samples::key;

/// Runs one input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (file, vars) = text.split_once('\0').unwrap_or((text, ""));
    let env = vars.lines().filter_map(|line| {
        let (name, value) = line.split_once('=')?;
        let name = if name.starts_with(ENV_PREFIX) {
            name.to_owned()
        } else {
            format!("{ENV_PREFIX}{name}")
        };
        Some((name, value.to_owned()))
    });
    let Ok(config) = FileConfig::load(file, env) else { return };

    let written = toml::to_string(&config).expect("a loaded configuration writes as TOML");
    let again = FileConfig::load(&written, std::iter::empty())
        .unwrap_or_else(|e| panic!("its own TOML does not load: {e}\n{written}"));
    let rewritten = toml::to_string(&again).expect("a loaded configuration writes as TOML");
    assert_eq!(rewritten, written, "TOML round trip changed the configuration");

    if config.check().is_err() {
        return;
    }
    let _ = (config.admin_socket(), config.shutdown_grace());
    config.metrics_listen().expect("a checked file has a valid metrics address");
    config.chain_kind().expect("a checked file has a chain kind");
    let _: Result<_, ConfigError> = config.service_config(&key(1));
    let _: Result<_, ConfigError> = config.bitcoind_config(Some("/home/fuzz".into()));
}
