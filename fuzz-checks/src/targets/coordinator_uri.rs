//! Fuzzes `CoordinatorUri::from_str`, the `cohort://<64 hex pin>@host:port` URI a user
//! types on the command line (`cohort init --coordinator`) and the wallet stores.
//!
//! Asserts: a URI that parses has a non-empty host free of `/`, `@` and spaces; printing
//! it and parsing that gives the same URI back; and the printed form is a fixed point.

use std::str::FromStr;

use cohort_transport::CoordinatorUri;

/// Runs one input.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(uri) = CoordinatorUri::from_str(text) else { return };
    assert!(!uri.host.is_empty(), "empty host accepted");
    assert!(!uri.host.contains(['/', '@', ' ']), "invalid character accepted in {:?}", uri.host);
    let printed = uri.to_string();
    let again = CoordinatorUri::from_str(&printed).unwrap_or_else(|e| {
        panic!("{text:?} parsed but its printed form {printed:?} does not: {e}")
    });
    assert_eq!(again, uri, "{text:?} printed as {printed:?} parses to another URI");
    assert_eq!(again.to_string(), printed, "printing is not a fixed point");
}
