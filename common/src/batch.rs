//! The one batch builder: how registrations are grouped into batches, and how one
//! batch is priced, laid out as leaves, built as a tree with its funding transaction,
//! and how every node's nonces are aggregated.
//!
//! The coordinator's engine and the simulator's local run both build batches here, so
//! that what the simulator measures is what the coordinator proposes. Randomness comes
//! in from the caller (a batch key, a [`NonceSeed`]), so a seeded caller gets the same
//! batch, bit for bit, on every run.

use std::ops::Range;
use std::sync::Arc;

use bitcoin::hashes::{sha256, Hash, HashEngine};
use bitcoin::{Amount, OutPoint, ScriptBuf, Transaction, TxOut};
use musig2::SecNonceBuilder;
use rand::{CryptoRng, RngCore};
use rayon::prelude::*;

use crate::fees::{funding_tx, max_inputs, plan_funding, FeeError, FundingPlan, FundingRequest};
use crate::keys::Keypair;
use crate::musig::{
    self, MusigError, PartialSignature, Point, PubNonce, Scalar, SecNonce, SigningSession,
};
use crate::params::{FeeSchedule, LeafOutput, TreeParams};
use crate::scripts::{key_spend_sighashes, ScriptError};
use crate::tree::{Tree, TreeError, TreeLeaf};

/// Length of the batch output's scriptPubKey: a P2TR output.
pub const BATCH_OUTPUT_SCRIPT_LEN: usize = 34;

/// The limits a batch is formed under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Largest funding transaction weight.
    pub max_batch_weight: u64,
    /// Length of the coordinator's payout scriptPubKey (the funding tx's second output).
    pub payout_script_len: usize,
    /// The tree's shape: at most `radix^max_depth` leaves per batch.
    pub tree: TreeParams,
}

impl BatchLimits {
    /// The most deposit inputs one funding transaction may spend.
    pub fn max_inputs(&self) -> usize {
        max_inputs(self.max_batch_weight, &[BATCH_OUTPUT_SCRIPT_LEN, self.payout_script_len])
    }

    /// The most leaves one tree may pay.
    pub fn max_leaves(&self) -> usize {
        usize::from(self.tree.radix).saturating_pow(u32::from(self.tree.max_depth))
    }
}

/// How much of a batch one registration takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberSize {
    /// Its deposits (funding inputs).
    pub inputs: usize,
    /// Its leaves, the remainder included.
    pub leaves: usize,
}

/// Splits registrations, kept in order, into consecutive batches: as many per batch as
/// the funding weight and the tree allow. A registration too large on its own still
/// gets a batch of its own (pricing or the tree refuses it there).
pub fn group_batches(
    sizes: impl IntoIterator<Item = MemberSize>,
    limits: &BatchLimits,
) -> Vec<Range<usize>> {
    let (max_inputs, max_leaves) = (limits.max_inputs(), limits.max_leaves());
    let mut groups: Vec<Range<usize>> = Vec::new();
    let (mut inputs, mut leaves) = (0usize, 0usize);
    for (i, size) in sizes.into_iter().enumerate() {
        let full = inputs.saturating_add(size.inputs) > max_inputs
            || leaves.saturating_add(size.leaves) > max_leaves;
        match groups.last_mut() {
            Some(group) if !full => group.end = i + 1,
            _ => {
                groups.push(i..i + 1);
                (inputs, leaves) = (0, 0);
            }
        }
        inputs = inputs.saturating_add(size.inputs);
        leaves = leaves.saturating_add(size.leaves);
    }
    groups
}

/// What one registration brings to a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchMember {
    /// Its deposits and the outputs they hold.
    pub deposits: Vec<(OutPoint, TxOut)>,
    /// Its fixed leaves.
    pub fixed: Vec<LeafOutput>,
    /// Its remainder leaf's script (the amount is what pricing leaves over).
    pub remainder_script: ScriptBuf,
    /// The largest fee it accepts.
    pub max_fee: Amount,
    /// The cosigner key of each leaf: the fixed ones, then the remainder.
    pub leaf_keys: Vec<Point>,
}

impl BatchMember {
    /// Its size, for [`group_batches`].
    pub fn size(&self) -> MemberSize {
        MemberSize { inputs: self.deposits.len(), leaves: self.fixed.len() + 1 }
    }

    fn request(&self) -> Result<FundingRequest, FeeError> {
        let requested = self
            .fixed
            .iter()
            .try_fold(Amount::ZERO, |acc, l| acc.checked_add(l.amount))
            .ok_or(FeeError::Overflow)?;
        Ok(FundingRequest {
            deposits: self.deposits.clone(),
            requested,
            remainder_script: self.remainder_script.clone(),
            max_fee: self.max_fee,
        })
    }
}

/// Why a batch could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// A member's fee is above its `max_fee`, or it cannot pay: leave it out and retry.
    #[error("member {member} cannot be priced")]
    Member {
        /// Index into the members.
        member: usize,
        /// Why.
        #[source]
        error: FeeError,
    },
    /// The batch as a whole cannot be priced.
    #[error("pricing the batch")]
    Fees(#[source] FeeError),
    /// A member has not exactly one cosigner key per leaf.
    #[error("member {member} has {keys} cosigner keys for {leaves} leaves")]
    LeafKeys {
        /// Index into the members.
        member: usize,
        /// Keys it gave.
        keys: usize,
        /// Its leaves (fixed and remainder).
        leaves: usize,
    },
    /// A member has fewer than `max_depth` nonces for one of its leaves.
    #[error("member {member} sent {got} nonces for a leaf, {needed} needed")]
    Nonces {
        /// Index into the members.
        member: usize,
        /// Nonces it sent for that leaf.
        got: usize,
        /// Nonces needed (`max_depth`).
        needed: usize,
    },
    /// Nonces were given for another number of leaves than the tree has.
    #[error("nonces for {got} leaves, the tree has {leaves}")]
    NonceLeaves {
        /// Leaves with nonces.
        got: usize,
        /// Leaves in the tree.
        leaves: usize,
    },
    /// The tree cannot be built.
    #[error("building the tree")]
    Tree(#[from] TreeError),
    /// MuSig2 failed on the builder's side.
    #[error("musig2")]
    Musig(#[from] MusigError),
    /// A sighash of the funding transaction could not be computed.
    #[error("funding transaction sighash")]
    Sighash(#[from] ScriptError),
    /// The tree was built without asking for its funding outpoint.
    #[error("the tree did not ask for its funding outpoint")]
    NoFunding,
}

/// One batch, priced and built: funding transaction, tree and who owns what. What
/// both the coordinator and a local signer need before any nonce is exchanged.
#[derive(Debug, Clone)]
pub struct UnsignedBatch {
    /// The fees of every member.
    pub plan: FundingPlan,
    /// The unsigned funding transaction: every member's deposits, in member order.
    pub funding: Transaction,
    /// The outputs the funding transaction's inputs spend.
    pub prevouts: Vec<TxOut>,
    /// The tree.
    pub tree: Tree,
    /// Each member's leaves (fixed ones, then its remainder), as leaf indices.
    pub leaf_ranges: Vec<Range<usize>>,
    /// Each member's funding inputs, as input indices.
    pub input_ranges: Vec<Range<usize>>,
    /// The member owning each leaf.
    pub leaf_member: Vec<usize>,
}

/// Every node's signing session (its aggregate nonce), and the batch key's own nonce and
/// partial signature on that node.
#[derive(Debug, Clone)]
pub struct NodeNonces {
    /// The signing session of each node: its aggregate nonce, and the session values the
    /// batch key signed with, kept to combine the node's signature without computing
    /// its final nonce again.
    pub sessions: Vec<SigningSession>,
    /// The batch key's public nonce and partial signature on each node.
    pub batch_partials: Vec<(PubNonce, PartialSignature)>,
}

/// Prices `members`, lays out their leaves (each member's fixed leaves, then its
/// remainder), builds the tree under `batch_key` and the funding transaction paying
/// the tree's root.
pub fn build(
    members: &[&BatchMember],
    batch_key: Point,
    payout_script: &ScriptBuf,
    params: TreeParams,
    fees: &FeeSchedule,
) -> Result<UnsignedBatch, BuildError> {
    let requests = members
        .iter()
        .enumerate()
        .map(|(member, m)| m.request().map_err(|error| BuildError::Member { member, error }))
        .collect::<Result<Vec<_>, _>>()?;
    let plan = plan_funding(&requests, fees, payout_script).map_err(|error| match error {
        FeeError::FeeTooHigh { index, .. }
        | FeeError::InsufficientFunds { index, .. }
        | FeeError::NoDeposits(index) => BuildError::Member { member: index, error },
        other => BuildError::Fees(other),
    })?;
    let layout = lay_out(members, &plan)?;
    let mut funding = None;
    let tree = Tree::build(layout.leaves, batch_key, params, None, |root| {
        let tx = funding_tx(&requests, &plan, root, payout_script);
        let outpoint = OutPoint { txid: tx.compute_txid(), vout: 0 };
        funding = Some(tx);
        outpoint
    })?;
    let funding = funding.ok_or(BuildError::NoFunding)?;
    let prevouts =
        requests.iter().flat_map(|r| r.deposits.iter().map(|(_, o)| o.clone())).collect();
    Ok(UnsignedBatch {
        plan,
        funding,
        prevouts,
        tree,
        leaf_ranges: layout.leaf_ranges,
        input_ranges: layout.input_ranges,
        leaf_member: layout.leaf_member,
    })
}

struct Layout {
    leaves: Arc<[TreeLeaf]>,
    leaf_ranges: Vec<Range<usize>>,
    input_ranges: Vec<Range<usize>>,
    leaf_member: Vec<usize>,
}

/// The leaves of every member in order, with its remainder at the priced amount.
fn lay_out(members: &[&BatchMember], plan: &FundingPlan) -> Result<Layout, BuildError> {
    let mut leaves = Vec::new();
    let mut leaf_member = Vec::new();
    let mut leaf_ranges = Vec::with_capacity(members.len());
    let mut input_ranges = Vec::with_capacity(members.len());
    let mut inputs = 0;
    for (i, (m, share)) in members.iter().zip(&plan.shares).enumerate() {
        if m.leaf_keys.len() != m.fixed.len() + 1 {
            let (keys, leaves) = (m.leaf_keys.len(), m.fixed.len() + 1);
            return Err(BuildError::LeafKeys { member: i, keys, leaves });
        }
        let start = leaves.len();
        let remainder =
            LeafOutput { script_pubkey: m.remainder_script.clone(), amount: share.remainder };
        let outputs = m.fixed.iter().cloned().chain(std::iter::once(remainder));
        for (output, key) in outputs.zip(&m.leaf_keys) {
            leaves.push(TreeLeaf { output, cosigner: *key });
            leaf_member.push(i);
        }
        leaf_ranges.push(start..leaves.len());
        input_ranges.push(inputs..inputs + m.deposits.len());
        inputs += m.deposits.len();
    }
    Ok(Layout { leaves: leaves.into(), leaf_ranges, input_ranges, leaf_member })
}

impl UnsignedBatch {
    /// Aggregates every node's nonce from the leaves' nonces (`leaf_nonces[leaf][d]` is
    /// the leaf's nonce for nodes at depth `d + 1`) and the batch key's own, and signs
    /// the batch key's share of every node, node by node on rayon. The batch key's
    /// nonces come from `seed`.
    pub fn aggregate_node_nonces(
        &self,
        leaf_nonces: &[&[PubNonce]],
        batch_key: &Keypair,
        seed: &NonceSeed,
    ) -> Result<NodeNonces, BuildError> {
        let tree = &self.tree;
        let leaves = tree.leaves().len();
        if leaf_nonces.len() != leaves {
            return Err(BuildError::NonceLeaves { got: leaf_nonces.len(), leaves });
        }
        let needed = usize::from(tree.shape().depth());
        if let Some(leaf) = leaf_nonces.iter().position(|n| n.len() < needed) {
            let member = self.leaf_member.get(leaf).copied().unwrap_or_default();
            return Err(BuildError::Nonces { member, got: leaf_nonces[leaf].len(), needed });
        }
        let shape = tree.shape();
        let per_node = (0..tree.node_count())
            .into_par_iter()
            .map(|i| {
                let node = tree.node(i)?;
                let info = &shape.nodes()[i];
                let d = usize::from(info.depth) - 1;
                let secnonce = seed.secnonce(
                    NoncePurpose::Node,
                    i,
                    &batch_key.point,
                    &batch_key.scalar(),
                    &node.sighash,
                );
                let own = secnonce.public_nonce();
                let mut nonces: Vec<PubNonce> =
                    leaf_nonces[info.leaves.clone()].iter().map(|n| n[d].clone()).collect();
                nonces.push(own.clone());
                let agg = musig::nonce_agg(&nonces)?;
                let session = SigningSession::new(&node.key, &agg, &node.sighash);
                let psig = session.sign(&node.key, batch_key, secnonce)?;
                Ok((session, (own, psig)))
            })
            .collect::<Result<Vec<_>, BuildError>>()?;
        let (sessions, batch_partials) = per_node.into_iter().unzip();
        Ok(NodeNonces { sessions, batch_partials })
    }

    /// The Taproot key-spend sighash of every funding input.
    pub fn deposit_sighashes(&self) -> Result<Vec<[u8; 32]>, BuildError> {
        Ok(key_spend_sighashes(&self.funding, &self.prevouts)?)
    }

    /// The nodes on the paths of a member's leaves, ascending.
    pub fn member_nodes(&self, member: usize) -> Vec<usize> {
        let Some(range) = self.leaf_ranges.get(member) else { return Vec::new() };
        let mut nodes: Vec<usize> = range
            .clone()
            .flat_map(|leaf| self.tree.shape().path(leaf).unwrap_or_default())
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }
}

/// What a secret nonce drawn from a [`NonceSeed`] is for; each purpose has its own
/// sequence of nonces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoncePurpose {
    /// The batch key's nonce on a tree node.
    Node,
    /// The coordinator key's nonce on a deposit input.
    Deposit,
}

/// A secret seed for every nonce one party uses in one batch attempt, drawn once from
/// the caller's random source. Each nonce gets its own seed, a tagged hash of this
/// one, its purpose and its index; the signer's secret key and the message are hashed
/// in too (BIP-327 NonceGen inputs), so a weak source is no worse than reusing a seed
/// for one message. Draw a fresh seed for every attempt.
#[derive(Clone)]
pub struct NonceSeed([u8; 32]);

impl std::fmt::Debug for NonceSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceSeed(..)")
    }
}

impl NonceSeed {
    /// A fresh seed from `rng`.
    pub fn from_rng<R: RngCore + CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        NonceSeed(seed)
    }

    /// The secret nonce number `index` of `purpose`, for `signer` on `message`.
    pub fn secnonce(
        &self,
        purpose: NoncePurpose,
        index: usize,
        signer: &Point,
        seckey: &Scalar,
        message: &[u8; 32],
    ) -> SecNonce {
        let mut engine = sha256::Hash::engine();
        engine.input(b"cohort/batch-nonce");
        engine.input(&self.0);
        engine.input(&[purpose as u8]);
        engine.input(&(index as u64).to_le_bytes());
        let seed = sha256::Hash::from_engine(engine).to_byte_array();
        let sk = seckey.serialize();
        SecNonceBuilder::from_pubkey(seed, *signer)
            .with_extra_input(&sk)
            .with_message(message)
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::p2tr_single;
    use bitcoin::Txid;
    use rand::SeedableRng;

    fn sizes(list: &[(usize, usize)]) -> Vec<MemberSize> {
        list.iter().map(|&(inputs, leaves)| MemberSize { inputs, leaves }).collect()
    }

    fn limits(inputs: usize, radix: u8, max_depth: u8) -> BatchLimits {
        let weight = crate::fees::funding_weight(inputs, &[BATCH_OUTPUT_SCRIPT_LEN, 34]);
        BatchLimits {
            max_batch_weight: weight,
            payout_script_len: 34,
            tree: TreeParams { radix, max_depth },
        }
    }

    #[test]
    fn groups_respect_inputs_and_leaves_in_order() {
        let l = limits(3, 2, 2);
        assert_eq!(l.max_inputs(), 3);
        assert_eq!(l.max_leaves(), 4);
        let g = group_batches(sizes(&[(1, 1), (1, 2), (1, 1), (1, 1), (2, 1), (1, 1)]), &l);
        assert_eq!(g, vec![0..3, 3..5, 5..6]);
        // Leaves bind first here: 2 + 2 > 4.
        let g = group_batches(sizes(&[(1, 2), (1, 2), (1, 2)]), &l);
        assert_eq!(g, vec![0..2, 2..3]);
        // Too large alone: a batch of its own.
        let g = group_batches(sizes(&[(1, 1), (5, 1), (1, 1)]), &l);
        assert_eq!(g, vec![0..1, 1..2, 2..3]);
        assert!(group_batches(Vec::new(), &l).is_empty());
    }

    fn member(rng: &mut rand::rngs::StdRng, tag: u8, sat: u64, fixed: usize) -> BatchMember {
        let owner = Keypair::from_rng(rng);
        BatchMember {
            deposits: vec![(
                OutPoint { txid: Txid::from_byte_array([tag; 32]), vout: 0 },
                TxOut { value: Amount::from_sat(sat), script_pubkey: p2tr_single(&owner) },
            )],
            fixed: (0..fixed)
                .map(|_| LeafOutput {
                    script_pubkey: p2tr_single(&Keypair::from_rng(rng)),
                    amount: Amount::from_sat(10_000),
                })
                .collect(),
            remainder_script: p2tr_single(&owner),
            max_fee: Amount::from_sat(50_000),
            leaf_keys: (0..=fixed).map(|_| Keypair::from_rng(rng).point).collect(),
        }
    }

    #[test]
    fn one_batch_lays_out_members_in_order_and_conserves_value() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let members = [member(&mut rng, 1, 100_000, 1), member(&mut rng, 2, 300_000, 0)];
        let refs: Vec<&BatchMember> = members.iter().collect();
        let key = Keypair::from_rng(&mut rng);
        let payout = p2tr_single(&key);
        let params = TreeParams { radix: 2, max_depth: 4 };
        let b = build(&refs, key.point, &payout, params, &FeeSchedule::default()).unwrap();
        assert_eq!(b.leaf_ranges, vec![0..2, 2..3]);
        assert_eq!(b.input_ranges, vec![0..1, 1..2]);
        assert_eq!(b.leaf_member, vec![0, 0, 1]);
        let leaves: Amount = b.tree.leaves().iter().map(|l| l.output.amount).sum();
        assert_eq!(b.funding.output[0].value, leaves);
        let outputs: Amount = b.funding.output.iter().map(|o| o.value).sum();
        assert_eq!(Amount::from_sat(400_000), outputs + b.plan.mining_fee);
        // The same inputs build the same batch.
        let again = build(&refs, key.point, &payout, params, &FeeSchedule::default()).unwrap();
        assert_eq!(again.funding, b.funding);
    }

    #[test]
    fn a_member_that_cannot_pay_is_named() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let members = [member(&mut rng, 1, 100_000, 0), member(&mut rng, 2, 1_000, 0)];
        let refs: Vec<&BatchMember> = members.iter().collect();
        let key = Keypair::from_rng(&mut rng);
        let params = TreeParams { radix: 2, max_depth: 4 };
        let r = build(&refs, key.point, &p2tr_single(&key), params, &FeeSchedule::default());
        assert!(matches!(r, Err(BuildError::Member { member: 1, .. })), "{r:?}");
        let mut bad = members[0].clone();
        bad.leaf_keys.push(key.point);
        let r = build(&[&bad], key.point, &p2tr_single(&key), params, &FeeSchedule::default());
        assert!(matches!(r, Err(BuildError::LeafKeys { member: 0, keys: 2, leaves: 1 })));
    }

    #[test]
    fn seeded_nonces_repeat_and_differ_by_purpose_and_index() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let key = Keypair::from_rng(&mut rng);
        let seed = NonceSeed::from_rng(&mut rand::rngs::StdRng::seed_from_u64(9));
        let again = NonceSeed::from_rng(&mut rand::rngs::StdRng::seed_from_u64(9));
        let msg = [1u8; 32];
        let nonce =
            |s: &NonceSeed, p, i| s.secnonce(p, i, &key.point, &key.scalar(), &msg).public_nonce();
        assert_eq!(nonce(&seed, NoncePurpose::Node, 0), nonce(&again, NoncePurpose::Node, 0));
        assert_ne!(nonce(&seed, NoncePurpose::Node, 0), nonce(&seed, NoncePurpose::Node, 1));
        assert_ne!(nonce(&seed, NoncePurpose::Node, 0), nonce(&seed, NoncePurpose::Deposit, 0));
        assert_eq!(format!("{seed:?}"), "NonceSeed(..)");
    }
}
