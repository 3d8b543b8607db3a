//! Faults over QUIC: a participant's session sink that misbehaves at its fault's phase as
//! the in-memory network's faults do ([`crate::memnet::FaultKind`]), on a real connection.

use std::time::Duration;

use tokio::sync::watch;

use cohort_common::messages::ToCoordinator;
use cohort_participant::driver::{DriverError, LinkError, SessionSink};
use cohort_transport::{Client, FramedSend};

use crate::memnet::{corrupt, hits, Fault, FaultKind};

/// How long a leaving participant waits for the coordinator to have its last message
/// before it closes the connection.
const LEAVE_GRACE: Duration = Duration::from_secs(5);

/// A participant's session stream, through its injected fault if it has one:
///
/// - `Drop`: closes the connection instead of sending the phase's signatures;
/// - `Timeout`: goes silent there (the send never completes; the run ends the task when
///   the honest participants are done);
/// - `InvalidSig`: sends them with a corrupted partial signature;
/// - `LeaveAfter`: sends them, waits until the coordinator has them, then closes.
#[derive(Debug)]
pub(crate) struct FaultySink<'a> {
    /// The session stream.
    pub stream: &'a mut FramedSend<ToCoordinator>,
    /// The connection it runs on (closed by `Drop` and `LeaveAfter`).
    pub client: &'a Client,
    /// The fault, if any.
    pub fault: Option<Fault>,
}

impl SessionSink for FaultySink<'_> {
    async fn send_msg(&mut self, mut msg: ToCoordinator) -> Result<(), DriverError> {
        let Some(fault) = self.fault.filter(|f| hits(f, &msg)) else {
            return self.stream.send_msg(msg).await;
        };
        match fault.kind {
            FaultKind::Drop => {
                self.client.close("injected fault: drop");
                Err(left())
            }
            FaultKind::Timeout => std::future::pending().await,
            FaultKind::InvalidSig => {
                corrupt(&mut msg);
                self.stream.send_msg(msg).await
            }
            FaultKind::LeaveAfter => {
                self.stream.send_msg(msg).await?;
                // Closing at once would discard what QUIC has not sent yet: finish the
                // stream and wait until the coordinator acknowledged all of it.
                let stream = self.stream.stream();
                if stream.finish().is_ok() {
                    let _ = tokio::time::timeout(LEAVE_GRACE, stream.stopped()).await;
                }
                self.client.close("injected fault: leave after");
                Err(left())
            }
        }
    }
}

/// What a faulty participant's driver ends with when its fault takes it off the link.
fn left() -> DriverError {
    DriverError::Link(LinkError::ChannelClosed)
}

/// Resolves once `over` says the round is over (or its sender is gone).
pub(crate) async fn round_over(mut over: watch::Receiver<bool>) {
    let _ = over.wait_for(|over| *over).await;
}

/// Tells the faulty participants the round is over when the last honest participant's
/// task ends (this guard's last clone is dropped), whatever way it ends.
#[derive(Debug)]
pub(crate) struct HonestLeft(pub watch::Sender<bool>);

impl Drop for HonestLeft {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}
