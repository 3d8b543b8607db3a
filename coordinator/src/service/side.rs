//! Side requests: the coordinator's public info, and the dev chain endpoint served from
//! the in-process ledger of a `--dev` coordinator.

use std::sync::Arc;

use cohort_common::chain::Chain;
use cohort_common::ledger::Ledger;
pub use cohort_common::messages::MAX_MINE_PER_REQUEST;
use cohort_common::messages::{Reason, ServerInfo, SideRequest, SideResponse, UtxoInfo};

/// Answers side requests.
#[derive(Debug, Clone)]
pub struct SideRequests {
    info: ServerInfo,
    ledger: Option<Arc<Ledger>>,
}

impl SideRequests {
    /// Serves `info`, and the dev chain endpoint when a ledger is given.
    pub fn new(info: ServerInfo, ledger: Option<Arc<Ledger>>) -> Self {
        SideRequests { info, ledger }
    }

    /// The answer to one request.
    pub fn answer(&self, request: SideRequest) -> SideResponse {
        if let SideRequest::Info = request {
            return SideResponse::Info(self.info.clone());
        }
        let Some(ledger) = &self.ledger else {
            return SideResponse::Error(Reason::new("dev chain disabled"));
        };
        let result = match request {
            SideRequest::Info => return SideResponse::Info(self.info.clone()),
            SideRequest::TipHeight => ledger.tip_height().map(SideResponse::Height),
            SideRequest::Utxo(outpoint) => ledger.utxo(&outpoint).map(|u| {
                SideResponse::Utxo(u.map(|u| UtxoInfo {
                    outpoint,
                    txout: u.txout,
                    height: u.height,
                }))
            }),
            SideRequest::ScriptUtxos(script) => ledger.script_utxos(&script).map(|all| {
                SideResponse::Utxos(
                    all.into_iter()
                        .map(|(outpoint, u)| UtxoInfo {
                            outpoint,
                            txout: u.txout,
                            height: u.height,
                        })
                        .collect(),
                )
            }),
            SideRequest::Broadcast(tx) => ledger.broadcast(&tx).map(SideResponse::Txid),
            SideRequest::BroadcastPackage(parent, child) => {
                ledger.broadcast_package(&parent, &child).map(|(p, c)| SideResponse::Txids(p, c))
            }
            SideRequest::Confirmations(txid) => {
                ledger.confirmations(&txid).map(SideResponse::Confirmations)
            }
            SideRequest::FeeRate => {
                ledger.fee_rate().map(|r| SideResponse::FeeRate(r.to_sat_per_kwu()))
            }
            SideRequest::Faucet(script, amount) => {
                ledger.faucet(&script, amount).map(SideResponse::Funded)
            }
            SideRequest::Mine(blocks) => {
                if blocks > MAX_MINE_PER_REQUEST {
                    return SideResponse::Error(Reason::new(format!(
                        "at most {MAX_MINE_PER_REQUEST} blocks per request, asked for {blocks}"
                    )));
                }
                Ok(SideResponse::Height(ledger.mine(blocks)))
            }
        };
        result.unwrap_or_else(|e| SideResponse::Error(Reason::new(e.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::{Amount, ScriptBuf};
    use cohort_common::keys::Keypair;

    fn info(dev: bool) -> ServerInfo {
        ServerInfo {
            version: 1,
            coordinator_key: Keypair::random().public,
            network: bitcoin::Network::Regtest,
            deposit_csv: 144,
            exit_csv: 144,
            dev,
            dev_chain: dev.then_some([7; 16]),
            dev_rpc_port: dev.then_some(18_443),
        }
    }

    #[test]
    fn dev_chain_only_with_a_ledger() {
        let off = SideRequests::new(info(false), None);
        assert!(matches!(off.answer(SideRequest::Info), SideResponse::Info(_)));
        assert_eq!(
            off.answer(SideRequest::TipHeight),
            SideResponse::Error(Reason::new("dev chain disabled"))
        );
        let on = SideRequests::new(info(true), Some(Arc::new(Ledger::new())));
        let script = ScriptBuf::new_op_return([1u8; 4]);
        let SideResponse::Funded(op) =
            on.answer(SideRequest::Faucet(script.clone(), Amount::from_sat(50_000)))
        else {
            panic!("faucet failed")
        };
        let SideResponse::Utxo(Some(u)) = on.answer(SideRequest::Utxo(op)) else { panic!() };
        assert_eq!(u.txout.value, Amount::from_sat(50_000));
        assert_eq!(on.answer(SideRequest::Mine(2)), SideResponse::Height(3));
        assert!(matches!(on.answer(SideRequest::Mine(5000)), SideResponse::Error(_)));
    }
}
