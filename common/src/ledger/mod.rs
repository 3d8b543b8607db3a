//! Embedded regtest ledger.
