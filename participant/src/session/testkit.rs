//! Honest-coordinator test kit.
