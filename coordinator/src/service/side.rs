//! Side requests: the coordinator's public info, answered outside the engine. (A dev
//! chain is served on its own JSON-RPC endpoint, [`super::devrpc`].)

use cohort_common::messages::{ServerInfo, SideRequest, SideResponse};

/// Answers side requests.
#[derive(Debug, Clone)]
pub struct SideRequests {
    info: ServerInfo,
}

impl SideRequests {
    /// Serves `info`.
    pub fn new(info: ServerInfo) -> Self {
        SideRequests { info }
    }

    /// The answer to one request.
    pub fn answer(&self, request: SideRequest) -> SideResponse {
        match request {
            SideRequest::Info => SideResponse::Info(self.info.clone()),
        }
    }
}
