//! Registrations: the chain data a driver looks up for one ([`Inbound::resolve`]),
//! the checks every request passes against that data and the round before it is
//! accepted (refused with a typed reason otherwise), and its acceptance.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use bitcoin::secp256k1::{Message, PublicKey, SECP256K1};
use bitcoin::{Amount, OutPoint, TxOut};
use cohort_common::batch::BatchMember;
use cohort_common::chain::{Chain, ChainError, Utxo};
use cohort_common::fees::{service_fee, KEY_PATH_INPUT_WEIGHT};
use cohort_common::messages::{
    Reason, RefusalReason, Register, Registered, RoundParams, ToCoordinator, ToParticipant,
};
use cohort_common::musig::Point;
use cohort_common::scripts::{DepositScript, ScriptError};
use cohort_common::standard::money_sum;

use super::{Coordinator, Event, Member, PeerId, Registration, Round, RoundPhase};

/// Deposit scripts derived at registration, kept across rounds by user key, coordinator
/// key and timeout. A static deposit address comes back (the next deposit paid to it, a
/// registration again after a failed round) and its script costs two point
/// multiplications to derive (the 2-of-2 key aggregation and the Taproot tweak); a
/// returning one is a lookup (60 µs against 0.2 µs here). Bounded at
/// [`DepositScripts::CAPACITY`] entries, about 1.4 KiB each (11 MiB when full): when full
/// it is emptied and fills again.
#[derive(Debug, Default)]
pub struct DepositScripts {
    scripts: HashMap<([u8; 33], [u8; 33], u16), DepositScript>,
}

impl DepositScripts {
    /// The most scripts kept.
    pub const CAPACITY: usize = 8_192;

    /// The deposit script of `user`'s address with `coordinator` and `csv`, derived once.
    pub fn get(
        &mut self,
        user: PublicKey,
        coordinator: PublicKey,
        csv: u16,
    ) -> Result<DepositScript, ScriptError> {
        let key = (user.serialize(), coordinator.serialize(), csv);
        if let Some(script) = self.scripts.get(&key) {
            return Ok(script.clone());
        }
        let script = DepositScript::new(user, coordinator, csv)?;
        if self.scripts.len() >= Self::CAPACITY {
            self.scripts.clear();
        }
        self.scripts.insert(key, script.clone());
        Ok(script)
    }

    /// How many scripts are kept.
    pub fn len(&self) -> usize {
        self.scripts.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.scripts.is_empty()
    }
}

/// What the chain says about one deposit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DepositLookup {
    /// Unspent (confirmed or in the mempool).
    Unspent(Utxo),
    /// Its transaction is known but the output is spent.
    Spent,
    /// Neither the output nor its transaction is known.
    Unknown,
}

/// The chain data one registration is checked against, looked up by the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainFacts {
    /// The chain's tip height.
    pub tip: u32,
    /// Each deposit's state, in the registration's order.
    pub deposits: Vec<DepositLookup>,
}

impl ChainFacts {
    /// Looks up the tip and each of `reg`'s deposits on `chain`. Nothing is looked up
    /// for a registration with more than `max_deposits` deposits (it is refused anyway).
    pub fn lookup(
        chain: &dyn Chain,
        reg: &Register,
        max_deposits: usize,
    ) -> Result<Self, ChainError> {
        let tip = chain.tip_height()?;
        if reg.body.deposits.len() > max_deposits {
            return Ok(ChainFacts { tip, deposits: Vec::new() });
        }
        let deposits = reg
            .body
            .deposits
            .iter()
            .map(|d| match chain.utxo(&d.outpoint)? {
                Some(utxo) => Ok(DepositLookup::Unspent(utxo)),
                None if chain.confirmations(&d.outpoint.txid)?.is_some() => {
                    Ok(DepositLookup::Spent)
                }
                None => Ok(DepositLookup::Unknown),
            })
            .collect::<Result<_, ChainError>>()?;
        Ok(ChainFacts { tip, deposits })
    }
}

/// Why a registration's chain data is missing: an outage of the coordinator's chain
/// backend, never the participant's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainOutage {
    /// The chain backend failed.
    #[error("chain backend unavailable")]
    Backend(#[from] ChainError),
    /// The driver handed a `Register` in without looking its deposits up.
    #[error("the driver gave no chain data with the registration")]
    NotLookedUp,
}

/// One message from a participant, with the chain data it needs.
#[derive(Debug, Clone)]
pub enum Inbound {
    /// A registration and what the chain says about its deposits.
    Register(Box<Register>, Result<ChainFacts, ChainOutage>),
    /// Any other message (they need no chain data).
    Message(ToCoordinator),
}

impl Inbound {
    /// Looks up what `msg` needs from `chain` (only a `Register` needs anything): the
    /// driver's half of "chain data pushed in". `max_deposits` is
    /// [`Coordinator::max_deposits_per_registration`].
    pub fn resolve(msg: ToCoordinator, chain: &dyn Chain, max_deposits: usize) -> Inbound {
        match msg {
            ToCoordinator::Register(reg) => {
                let facts =
                    ChainFacts::lookup(chain, &reg, max_deposits).map_err(ChainOutage::from);
                Inbound::Register(Box::new(reg), facts)
            }
            other => Inbound::Message(other),
        }
    }
}

/// A registration that passed every check.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The deposits' scripts, in request order.
    pub scripts: Vec<DepositScript>,
    /// The outputs the deposits hold.
    pub txouts: Vec<TxOut>,
}

/// What the round already holds, for duplicate checks.
#[derive(Debug, Default)]
pub struct Taken {
    /// Deposits already registered this round.
    pub outpoints: HashSet<OutPoint>,
    /// Cosigner keys already used this round (compressed encoding).
    pub cosigners: HashSet<[u8; 33]>,
}

/// A leaf script the coordinator will put in a tree: the rule both sides share.
pub use cohort_common::standard::is_standard_leaf;

/// What can be checked of a registration without the chain and without verifying a
/// signature: the round, the counts, the nonces, the cosigner keys, the leaf scripts and
/// amounts, and each deposit's duplicates, ban and timeout. A flood of bad registrations
/// is refused here, before it costs a chain lookup per deposit. Returns what the leaves
/// ask for in total.
pub fn check_cheap(
    reg: &Register,
    params: &RoundParams,
    taken: &Taken,
    banned: &dyn Fn(&OutPoint) -> Option<RefusalReason>,
) -> Result<Amount, RefusalReason> {
    let body = &reg.body;
    if body.round != params.round {
        return Err(RefusalReason::WrongRound { expected: params.round, got: body.round });
    }
    let deposits = body.deposits.len();
    params.check_registration_shape(deposits, body.leaves.len())?;
    let leaves = body.leaves.len() + 1;
    if reg.ownership_sigs.len() != deposits {
        return Err(RefusalReason::SignatureCount {
            deposits: count(deposits),
            sigs: count(reg.ownership_sigs.len()),
        });
    }
    let depth = usize::from(params.tree.max_depth);
    let nonce_counts =
        body.leaves.iter().map(|l| l.nonces.len()).chain([body.remainder.nonces.len()]);
    for got in nonce_counts {
        if got != depth {
            return Err(RefusalReason::BadNonceCount { expected: count(depth), got: count(got) });
        }
    }
    let mut cosigners = HashSet::with_capacity(leaves);
    let keys = body.leaves.iter().map(|l| &l.cosigner).chain([&body.remainder.cosigner]);
    for key in keys {
        let bytes = key.serialize();
        if !cosigners.insert(bytes)
            || taken.cosigners.contains(&bytes)
            || is_coordinator(key, params)
        {
            return Err(RefusalReason::DuplicateCosigner);
        }
    }
    for (i, leaf) in body.leaves.iter().enumerate() {
        if !is_standard_leaf(&leaf.output.script_pubkey) {
            return Err(RefusalReason::NonStandardScript { leaf: count(i) });
        }
        if leaf.output.amount < leaf.output.script_pubkey.minimal_non_dust() {
            return Err(RefusalReason::Dust { leaf: count(i) });
        }
    }
    if !is_standard_leaf(&body.remainder.script_pubkey) {
        return Err(RefusalReason::NonStandardScript { leaf: count(body.leaves.len()) });
    }
    let requested = money_sum(body.leaves.iter().map(|l| l.output.amount))
        .map_err(|_| RefusalReason::OutsideMoneyRange { deposits: false })?;
    let mut seen = HashSet::with_capacity(body.deposits.len());
    for dep in &body.deposits {
        let op = dep.outpoint;
        if !seen.insert(op) || taken.outpoints.contains(&op) {
            return Err(RefusalReason::DuplicateDeposit(op));
        }
        if let Some(reason) = banned(&op) {
            return Err(reason);
        }
        if dep.deposit_csv > params.max_deposit_csv {
            return Err(RefusalReason::DepositCsvTooLarge {
                csv: dep.deposit_csv,
                max: params.max_deposit_csv,
            });
        }
    }
    Ok(requested)
}

/// Checks a registration against the round, the chain data and the bans: the cheap checks
/// first ([`check_cheap`]), then each deposit on the chain and its ownership signature.
pub fn check(
    reg: &Register,
    params: &RoundParams,
    challenge: &[u8; 32],
    facts: &ChainFacts,
    taken: &Taken,
    banned: &dyn Fn(&OutPoint) -> Option<RefusalReason>,
    known: &mut DepositScripts,
) -> Result<Checked, RefusalReason> {
    let requested = check_cheap(reg, params, taken, banned)?;
    let body = &reg.body;
    let deposits = body.deposits.len();
    let tip = facts.tip;
    let message = Message::from_digest(
        body.ownership_message(challenge).map_err(|_| RefusalReason::Other(reason("encoding")))?,
    );
    let mut scripts = Vec::with_capacity(deposits);
    let mut txouts = Vec::with_capacity(deposits);
    for (i, (dep, sig)) in body.deposits.iter().zip(&reg.ownership_sigs).enumerate() {
        let op = dep.outpoint;
        let script = known
            .get(dep.user_key, params.coordinator_key, dep.deposit_csv)
            .map_err(|_| RefusalReason::NotDepositAddress(op))?;
        let utxo = match facts.deposits.get(i) {
            Some(DepositLookup::Unspent(utxo)) => utxo.clone(),
            Some(DepositLookup::Spent) => return Err(RefusalReason::Spent(op)),
            Some(DepositLookup::Unknown) | None => return Err(RefusalReason::UnknownDeposit(op)),
        };
        if utxo.txout.script_pubkey != script.script_pubkey() {
            return Err(RefusalReason::NotDepositAddress(op));
        }
        let height = match utxo.height {
            Some(h) if tip.saturating_sub(h) + 1 >= params.min_confs => h,
            _ => return Err(RefusalReason::Unconfirmed(op)),
        };
        if height + u32::from(dep.deposit_csv) <= tip + params.safety_margin {
            return Err(RefusalReason::Expiring(op));
        }
        let xonly = dep.user_key.x_only_public_key().0;
        if SECP256K1.verify_schnorr(sig, &message, &xonly).is_err() {
            return Err(RefusalReason::BadOwnershipSignature { deposit: count(i) });
        }
        scripts.push(script);
        txouts.push(utxo.txout);
    }

    // No amount the chain or the peer names is trusted to stay in the money range: a
    // funding transaction holding more than 21 M BTC is invalid, and it would be found
    // only at broadcast, after every member signed.
    let deposited = money_sum(txouts.iter().map(|o| o.value))
        .map_err(|_| RefusalReason::OutsideMoneyRange { deposits: true })?;
    // A lower bound of the fee: its own inputs and the service fee.
    let inputs_weight = bitcoin::Weight::from_wu(deposits as u64 * KEY_PATH_INPUT_WEIGHT);
    let required = params
        .fees
        .fee_rate
        .fee_wu(inputs_weight)
        .zip(service_fee(&params.fees, deposited).ok())
        .and_then(|(a, b)| a.checked_add(b))
        .ok_or(RefusalReason::Other(reason("fee overflow")))?;
    if body.max_fee < required {
        return Err(RefusalReason::FeeTooLow { max_fee: body.max_fee, required });
    }
    let needed = requested
        .checked_add(required)
        .and_then(|a| a.checked_add(body.remainder.script_pubkey.minimal_non_dust()))
        .ok_or(RefusalReason::Other(reason("amount overflow")))?;
    if deposited < needed {
        return Err(RefusalReason::InsufficientFunds { available: deposited, needed });
    }
    Ok(Checked { scripts, txouts })
}

fn is_coordinator(key: &Point, params: &RoundParams) -> bool {
    key.serialize() == params.coordinator_key.serialize()
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn reason(text: &str) -> cohort_common::messages::Reason {
    cohort_common::messages::Reason::new(text)
}

impl Coordinator {
    /// The checks of a registration that need neither the chain nor a signature check
    /// (the round is open, the peer has not registered yet, the sizes, parameters and
    /// bans of the deposits). A driver calls it before looking the deposits up; on
    /// `false` the registration was refused (drain [`Coordinator::poll_transmit`]) and
    /// nothing needs looking up. The engine runs the same checks again with the chain
    /// data.
    pub fn precheck_registration(&mut self, now: Instant, peer: PeerId, reg: &Register) -> bool {
        let result = self.open_round_for(peer).and_then(|round| {
            check_cheap(reg, &round.params, &round.taken, &|op| self.kept_out(op, now))
        });
        match result {
            Ok(_) => true,
            Err(reason) => {
                self.refuse(peer, reason);
                false
            }
        }
    }

    /// Why a deposit may not be registered whatever the round: a ban in force at `now`,
    /// or a co-signed withdrawal.
    fn kept_out(&self, outpoint: &OutPoint, now: Instant) -> Option<RefusalReason> {
        kept_out(&self.bans, &self.withdrawing, outpoint, now)
    }

    /// The round a registration from `peer` may enter: one is open for registration and
    /// the peer has not registered in it yet.
    fn open_round_for(&self, peer: PeerId) -> Result<&Round, RefusalReason> {
        match &self.round {
            Some(round) if matches!(round.phase, RoundPhase::Registration { .. }) => {
                if self.peers.get(&peer).copied().flatten().is_some() {
                    return Err(RefusalReason::Other(Reason::new("already registered")));
                }
                Ok(round)
            }
            _ => Err(RefusalReason::RegistrationClosed),
        }
    }

    pub(super) fn on_register(
        &mut self,
        now: Instant,
        peer: PeerId,
        reg: Register,
        facts: Result<ChainFacts, ChainOutage>,
    ) {
        if let Err(reason) = self.open_round_for(peer) {
            return self.refuse(peer, reason);
        }
        let (bans, withdrawing, known) = (&self.bans, &self.withdrawing, &mut self.scripts);
        let banned = |op: &OutPoint| kept_out(bans, withdrawing, op, now);
        let Some(round) = &mut self.round else { return };
        let facts = match facts {
            Ok(facts) => facts,
            // Not the participant's fault: no refusal; its session times out and retries.
            Err(error) => return self.events.push_back(Event::ChainUnavailable { peer, error }),
        };
        let checked = match check(
            &reg,
            &round.params,
            &round.challenge,
            &facts,
            &round.taken,
            &banned,
            known,
        ) {
            Ok(c) => c,
            Err(reason) => return self.refuse(peer, reason),
        };
        let body = &reg.body;
        for d in &body.deposits {
            round.taken.outpoints.insert(d.outpoint);
        }
        for key in body.leaves.iter().map(|l| &l.cosigner).chain([&body.remainder.cosigner]) {
            round.taken.cosigners.insert(key.serialize());
        }
        let id = self.next_registration;
        self.next_registration += 1;
        let member = member_of(id, &reg, checked);
        let outpoints = member.batch.deposits.iter().map(|(op, _)| *op).collect();
        round.registrations.insert(id, Registration { peer, member, batch: None, active: true });
        self.peers.insert(peer, Some(id));
        let round_id = round.params.round;
        let accepted = round.registrations.len();
        self.outbox.push_back((
            peer,
            ToParticipant::Registered(Registered { round: round_id, registration: id }),
        ));
        self.events.push_back(Event::Registered {
            round: round_id,
            registration: id,
            deposits: outpoints,
            request: Box::new(reg),
        });
        if accepted >= self.config.max_registrations {
            self.close_registration(now);
        }
    }
}

/// See [`Coordinator::kept_out`] (a function of the two maps, so that the round can be
/// borrowed mutably beside them).
fn kept_out(
    bans: &std::collections::HashMap<OutPoint, super::BanState>,
    withdrawing: &super::withdraw::Withdrawing,
    outpoint: &OutPoint,
    now: Instant,
) -> Option<RefusalReason> {
    if withdrawing.contains_key(outpoint) {
        return Some(RefusalReason::Withdrawing(*outpoint));
    }
    bans.get(outpoint).filter(|b| b.until > now).map(|_| RefusalReason::Banned(*outpoint))
}

/// What an accepted registration brings to its batch's attempts.
fn member_of(id: u64, reg: &Register, checked: Checked) -> Member {
    let body = &reg.body;
    let leaves = || body.leaves.iter().map(|l| (&l.cosigner, &l.nonces));
    let remainder = (&body.remainder.cosigner, &body.remainder.nonces);
    Member {
        registration: id,
        batch: BatchMember {
            deposits: body.deposits.iter().map(|d| d.outpoint).zip(checked.txouts).collect(),
            fixed: body.leaves.iter().map(|l| l.output.clone()).collect(),
            remainder_script: body.remainder.script_pubkey.clone(),
            max_fee: body.max_fee,
            leaf_keys: leaves().chain([remainder]).map(|(k, _)| *k).collect(),
        },
        scripts: checked.scripts,
        leaf_nonces: leaves().chain([remainder]).map(|(_, n)| n.clone()).collect(),
        deposit_nonces: body.deposits.iter().map(|d| d.nonce.clone()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_common::keys::Keypair;

    #[test]
    fn deposit_scripts_are_derived_once_per_address() {
        let (user, coordinator) = (Keypair::random(), Keypair::random());
        let mut known = DepositScripts::default();
        assert!(known.is_empty());
        let first = known.get(user.public, coordinator.public, 144).unwrap();
        assert_eq!(first, DepositScript::new(user.public, coordinator.public, 144).unwrap());
        assert_eq!(known.get(user.public, coordinator.public, 144).unwrap(), first);
        assert_eq!(known.len(), 1);
        // Another timeout or another coordinator key is another address.
        let other = known.get(user.public, coordinator.public, 145).unwrap();
        assert_ne!(other.script_pubkey(), first.script_pubkey());
        known.get(user.public, Keypair::random().public, 144).unwrap();
        assert_eq!(known.len(), 3);
        // What cannot be derived is refused and not kept.
        assert!(known.get(user.public, coordinator.public, u16::MAX).is_err());
        assert_eq!(known.len(), 3);
    }
}
