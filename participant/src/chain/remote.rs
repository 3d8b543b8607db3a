//! [`RemoteChain`]: chain access through a `--dev` coordinator's side requests. Its
//! embedded chain lives in the coordinator's memory, so this is the only way to reach
//! it; a coordinator on a real chain answers no chain request, and a participant there
//! uses its own node ([`super::NodeChain`]).

use bitcoin::{Amount, FeeRate, OutPoint, ScriptBuf, Transaction, Txid};
use cohort_common::messages::{SideRequest, SideResponse, UtxoInfo, MAX_MINE_PER_REQUEST};

use super::{ChainSource, ChainSourceError, DevChain};
use crate::driver::{DriverError, SideChannel};

/// Chain access through a dev coordinator's side requests over `side`.
#[derive(Debug)]
pub struct RemoteChain<C> {
    side: C,
}

fn unexpected(request: &'static str, got: SideResponse) -> ChainSourceError {
    match got {
        SideResponse::Error(reason) => DriverError::Remote(reason.as_str().to_owned()).into(),
        other => DriverError::UnexpectedAnswer { request, got: format!("{other:?}") }.into(),
    }
}

impl<C: SideChannel> RemoteChain<C> {
    /// Chain access over `side`.
    pub fn new(side: C) -> Self {
        RemoteChain { side }
    }

    /// The side channel.
    pub fn side(&self) -> &C {
        &self.side
    }

    async fn ask(&self, req: SideRequest) -> Result<SideResponse, ChainSourceError> {
        Ok(self.side.side(req).await?)
    }
}

impl<C: SideChannel> ChainSource for RemoteChain<C> {
    async fn tip_height(&self) -> Result<u32, ChainSourceError> {
        match self.ask(SideRequest::TipHeight).await? {
            SideResponse::Height(h) => Ok(h),
            other => Err(unexpected("tip height", other)),
        }
    }

    async fn utxo(&self, outpoint: OutPoint) -> Result<Option<UtxoInfo>, ChainSourceError> {
        match self.ask(SideRequest::Utxo(outpoint)).await? {
            SideResponse::Utxo(u) => Ok(u),
            other => Err(unexpected("utxo", other)),
        }
    }

    async fn script_utxos(&self, script: &ScriptBuf) -> Result<Vec<UtxoInfo>, ChainSourceError> {
        match self.ask(SideRequest::ScriptUtxos(script.clone())).await? {
            SideResponse::Utxos(u) => Ok(u),
            other => Err(unexpected("script utxos", other)),
        }
    }

    async fn fee_rate(&self) -> Result<FeeRate, ChainSourceError> {
        let answer = self.ask(SideRequest::FeeRate).await?;
        answer.fee_rate().ok_or_else(|| unexpected("fee rate", answer))
    }

    async fn confirmations(&self, txid: Txid) -> Result<Option<u32>, ChainSourceError> {
        match self.ask(SideRequest::Confirmations(txid)).await? {
            SideResponse::Confirmations(c) => Ok(c),
            other => Err(unexpected("confirmations", other)),
        }
    }

    async fn broadcast(&self, tx: &Transaction) -> Result<Txid, ChainSourceError> {
        match self.ask(SideRequest::Broadcast(tx.clone())).await? {
            SideResponse::Txid(t) => Ok(t),
            other => Err(unexpected("broadcast", other)),
        }
    }

    async fn broadcast_package(
        &self,
        parent: &Transaction,
        child: &Transaction,
    ) -> Result<(Txid, Txid), ChainSourceError> {
        let req = SideRequest::BroadcastPackage(parent.clone(), child.clone());
        match self.ask(req).await? {
            SideResponse::Txids(a, b) => Ok((a, b)),
            other => Err(unexpected("broadcast package", other)),
        }
    }
}

impl<C: SideChannel> DevChain for RemoteChain<C> {
    /// Mines `n` blocks, at most [`MAX_MINE_PER_REQUEST`] per request.
    async fn mine(&self, n: u32) -> Result<u32, ChainSourceError> {
        let mut left = n;
        loop {
            let now = left.min(MAX_MINE_PER_REQUEST);
            let height = match self.ask(SideRequest::Mine(now)).await? {
                SideResponse::Height(h) => h,
                other => return Err(unexpected("mine", other)),
            };
            left -= now;
            if left == 0 {
                return Ok(height);
            }
        }
    }

    async fn faucet(
        &self,
        script: &ScriptBuf,
        amount: Amount,
    ) -> Result<OutPoint, ChainSourceError> {
        match self.ask(SideRequest::Faucet(script.clone(), amount)).await? {
            SideResponse::Funded(o) => Ok(o),
            other => Err(unexpected("faucet", other)),
        }
    }
}
