//! Bitcoin Core's JSON-RPC error codes (`src/rpc/protocol.h`), the ones this project
//! reads from a node or answers with (the dev chain's endpoint speaks the same codes).

/// JSON-RPC: the request is not valid JSON.
pub const RPC_PARSE_ERROR: i32 = -32700;
/// JSON-RPC: the method does not exist.
pub const RPC_METHOD_NOT_FOUND: i32 = -32601;
/// JSON-RPC: the parameters do not fit the method.
pub const RPC_INVALID_PARAMS: i32 = -32602;
/// An error with no code of its own.
pub const RPC_MISC_ERROR: i32 = -1;
/// Not found: an address, a key, a transaction or a block.
pub const RPC_INVALID_ADDRESS_OR_KEY: i32 = -5;
/// An invalid parameter (also "scan already in progress").
pub const RPC_INVALID_PARAMETER: i32 = -8;
/// A transaction or block that does not decode.
pub const RPC_DESERIALIZATION_ERROR: i32 = -22;
/// Verification failed (missing inputs, a bad package, ...).
pub const RPC_VERIFY_ERROR: i32 = -25;
/// Rejected by policy or consensus.
pub const RPC_VERIFY_REJECTED: i32 = -26;
/// Already in the chain.
pub const RPC_VERIFY_ALREADY_IN_CHAIN: i32 = -27;
/// The node is still starting.
pub const RPC_IN_WARMUP: i32 = -28;
