//! Cancelling a round before deposit signatures: the [`SignGate`] a driver passes before
//! its first deposit signature leaves, and that whoever may cancel the round closes.
//!
//! The gate has three states. It starts open; [`SignGate::cancel`] moves it to
//! cancelled, and the driver stops at its next step with nothing more sent; the driver's
//! [`SignGate::commit`], right before its first deposit signatures, moves it to committed,
//! after which a cancel is refused ([`CancelError::DepositsSigned`]): the signatures
//! may already be out, and leaving then would only cost the round a retry. One state
//! change decides the race between the two.

use std::sync::Arc;

use tokio::sync::watch;

/// Where the gate stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GateState {
    /// Neither cancelled nor committed.
    Open,
    /// Cancelled: the driver stops before any deposit signature.
    Cancelled,
    /// Deposit signatures may have left: too late to cancel.
    Committed,
}

/// Why a cancel was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CancelError {
    /// Deposit signatures were already sent in this round: it runs to its end (the exit
    /// paths they depend on are stored).
    #[error(
        "too late to cancel: deposit signatures were already sent (the exit paths are stored)"
    )]
    DepositsSigned,
    /// No join is running.
    #[error("no join is running")]
    NotRunning,
}

/// The gate between a round and its deposit signatures (cheap to clone; clones share it).
#[derive(Debug, Clone)]
pub struct SignGate {
    state: Arc<watch::Sender<GateState>>,
}

impl Default for SignGate {
    fn default() -> Self {
        SignGate::new()
    }
}

impl SignGate {
    /// An open gate.
    pub fn new() -> Self {
        SignGate { state: Arc::new(watch::Sender::new(GateState::Open)) }
    }

    /// Cancels the round unless deposit signatures were sent. Cancelling twice is fine.
    pub fn cancel(&self) -> Result<(), CancelError> {
        let mut result = Ok(());
        self.state.send_if_modified(|state| match *state {
            GateState::Open => {
                *state = GateState::Cancelled;
                true
            }
            GateState::Cancelled => false,
            GateState::Committed => {
                result = Err(CancelError::DepositsSigned);
                false
            }
        });
        result
    }

    /// Whether the round was cancelled.
    pub fn is_cancelled(&self) -> bool {
        *self.state.borrow() == GateState::Cancelled
    }

    /// Passes the gate before deposit signatures: `false` if the round was cancelled
    /// (sign nothing), `true` otherwise, after which [`SignGate::cancel`] is refused.
    pub fn commit(&self) -> bool {
        let mut passed = true;
        self.state.send_if_modified(|state| match *state {
            GateState::Open => {
                *state = GateState::Committed;
                true
            }
            GateState::Committed => false,
            GateState::Cancelled => {
                passed = false;
                false
            }
        });
        passed
    }

    /// Resolves once the round is cancelled (never, if it commits first).
    pub async fn cancelled(&self) {
        let mut rx = self.state.subscribe();
        // The sender lives in `self`, so the wait ends only by the condition.
        let _ = rx.wait_for(|s| *s == GateState::Cancelled).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_state_change_decides_between_cancel_and_commit() {
        let gate = SignGate::new();
        assert_eq!(gate.cancel(), Ok(()));
        assert_eq!(gate.cancel(), Ok(()));
        assert!(gate.is_cancelled());
        assert!(!gate.commit(), "a cancelled round signs no deposit");

        let gate = SignGate::new();
        assert!(gate.commit());
        assert!(gate.commit(), "a later attempt of the same round passes again");
        assert_eq!(gate.cancel(), Err(CancelError::DepositsSigned));
        assert!(!gate.is_cancelled());
    }

    #[tokio::test]
    async fn a_waiter_wakes_on_cancel() {
        let gate = SignGate::new();
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.cancelled().await }
        });
        tokio::task::yield_now().await;
        assert_eq!(gate.cancel(), Ok(()));
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("joined");
    }
}
