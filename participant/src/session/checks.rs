//! Every check a participant runs on a proposal before it signs (PROTOCOL 6, DESIGN 7),
//! each failure a typed [`ProposalError`].
//!
//! The tree is rebuilt from the body alone, scoped to the participant's own paths; the
//! funding txid is computed locally and the funding tx is checked as a whole (its txid
//! cannot change once signed, no time lock, standard, paying the announced rate); every
//! node on an own path must relay with its CPFP child; batch size, path depth and exit
//! cost stay within the participant's [`ProposalLimits`]. Cheap checks (round,
//! parameters, sizes, amounts, the funding tx, leaf scripts) run before any key
//! aggregation. Nothing here signs: a [`CheckedProposal`] is only the evidence that
//! signing is safe.

use std::collections::BTreeSet;
use std::sync::Arc;

use bitcoin::{Amount, FeeRate, OutPoint, Transaction};
use cohort_common::codec::CodecError;
use cohort_common::messages::{Proposal, TreeLeaf};
use cohort_common::musig::{AggNonce, KeyAggCache, Point, PubNonce};
use cohort_common::params::TreeParams;
use cohort_common::standard::{
    check_exit_node, check_funding_tx, exit_cost, is_standard_leaf, money_sum, FundingRuleError,
    MoneyRangeError, NodeCost, RelayError,
};
use cohort_common::tree::{Child, Scope, Tree, TreeError, TreePlan, TreeShape};

use super::caches::{DecodedBody, SharedCaches};
use super::register::Secrets;
use super::SessionConfig;

/// Limits a participant sets on the batches it signs: bounded work (leaves, depth)
/// and bounded exit cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProposalLimits {
    /// Most leaves in a batch; bounds the key aggregation a proposal can ask for.
    pub max_batch_leaves: usize,
    /// Most transactions on an own exit path.
    pub max_depth: u8,
    /// The fee rate exits are priced at (each node with its CPFP child).
    pub exit_fee_rate: FeeRate,
    /// Largest exit cost of an own leaf, in percent of the leaf's value.
    pub max_exit_cost_percent: u8,
}

impl Default for ProposalLimits {
    /// 65,536 leaves, depth 16, exits priced at 2 sat/vB and costing at most half the leaf.
    fn default() -> Self {
        ProposalLimits {
            max_batch_leaves: 1 << 16,
            max_depth: cohort_common::params::MAX_DEPTH_LIMIT,
            exit_fee_rate: FeeRate::from_sat_per_kwu(500),
            max_exit_cost_percent: 50,
        }
    }
}

/// Why a proposal is refused: one variant per check of PROTOCOL 6.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposalError {
    /// The body does not decode within the frame limit.
    #[error("proposal body does not decode: {0}")]
    BodyDecode(CodecError),
    /// The body names another round.
    #[error("proposal is for round {got}, expected {expected}")]
    WrongRound {
        /// The session's round.
        expected: u64,
        /// The round named.
        got: u64,
    },
    /// The body names another batch or attempt than the one awaited.
    #[error("proposal is for batch {batch} attempt {attempt}, expected {expected_batch:?} attempt {expected_attempt}")]
    WrongBatchOrAttempt {
        /// The batch awaited (`None`: any, before the first proposal).
        expected_batch: Option<u32>,
        /// The attempt awaited.
        expected_attempt: u32,
        /// The batch named.
        batch: u32,
        /// The attempt named.
        attempt: u32,
    },
    /// The tree parameters differ from the announced ones.
    #[error("proposal tree parameters {got:?} differ from the announced {expected:?}")]
    TreeParams {
        /// Announced.
        expected: TreeParams,
        /// In the body.
        got: TreeParams,
    },
    /// `your_leaves` does not list one index per own leaf.
    #[error("proposal lists {got} own leaves, expected {expected}")]
    LeafCount {
        /// Own leaves (fixed plus the remainder).
        expected: usize,
        /// Indices listed.
        got: usize,
    },
    /// An index in `your_leaves` is not a leaf of the batch, or is listed twice.
    #[error("own leaf {leaf} is at index {index}, not a distinct leaf of the batch")]
    LeafIndex {
        /// Own leaf number (request order, the remainder last).
        leaf: usize,
        /// The index given.
        index: u32,
    },
    /// A fixed leaf's output is not exactly the one requested.
    #[error("own leaf {leaf} does not pay the requested output")]
    LeafMismatch {
        /// Own leaf number (request order).
        leaf: usize,
    },
    /// The remainder leaf does not pay the remainder script.
    #[error("the remainder leaf does not pay the remainder script")]
    RemainderScript,
    /// A leaf's cosigner key is not the one registered for it.
    #[error("own leaf {leaf} carries another cosigner key")]
    CosignerMismatch {
        /// Own leaf number (the remainder last).
        leaf: usize,
    },
    /// `deposit_inputs` does not list one input per own deposit.
    #[error("proposal lists {got} deposit inputs for {expected} deposits")]
    DepositInputCount {
        /// Own deposits.
        expected: usize,
        /// Inputs listed.
        got: usize,
    },
    /// The funding tx does not spend an own deposit at its announced input.
    #[error("funding tx does not spend deposit {outpoint} at its announced input")]
    FundingMissingDeposit {
        /// The deposit.
        outpoint: OutPoint,
    },
    /// The number of funding prevouts differs from the number of inputs.
    #[error("{prevouts} funding prevouts for {inputs} inputs")]
    PrevoutCount {
        /// Funding inputs.
        inputs: usize,
        /// Prevouts given.
        prevouts: usize,
    },
    /// The prevout of an own deposit's input is not that deposit's output.
    #[error("prevout of funding input {input} is not the deposit's output")]
    PrevoutMismatch {
        /// The funding input.
        input: u32,
    },
    /// Own leaves are worth more than own deposits.
    #[error("own leaves {leaves} exceed own deposits {deposits}")]
    LeavesExceedDeposits {
        /// Sum of own deposits.
        deposits: Amount,
        /// Sum of own leaves.
        leaves: Amount,
    },
    /// The fee taken from own deposits is above `max_fee`.
    #[error("fee {fee} is above the maximum {max}")]
    FeeAboveMax {
        /// Own deposits minus own leaves.
        fee: Amount,
        /// The configured maximum.
        max: Amount,
    },
    /// The tree cannot be built from the body.
    #[error("tree: {0}")]
    TreeBuild(TreeError),
    /// The funding tx has no output 0.
    #[error("funding tx has no output")]
    FundingNoOutput,
    /// Funding output 0's script is not the root key's.
    #[error("funding output 0 does not pay the root key")]
    RootScriptMismatch,
    /// Funding output 0's amount is not the sum of the leaves.
    #[error("funding output 0 holds {got}, the root needs {expected}")]
    RootAmountMismatch {
        /// The sum of the leaves.
        expected: Amount,
        /// What the funding tx holds.
        got: Amount,
    },
    /// A node on an own path does not have the own cosigner key in its key set.
    #[error("node {node}'s key set does not contain own cosigner key of leaf {leaf}")]
    OwnKeyMissing {
        /// The node.
        node: usize,
        /// Own leaf number.
        leaf: usize,
    },
    /// A node on an own path does not pay out exactly what it spends.
    #[error("node {node} pays out {out}, spends {input}")]
    NotConserved {
        /// The node.
        node: usize,
        /// Sum of its outputs.
        out: Amount,
        /// What it spends.
        input: Amount,
    },
    /// An own leaf is not paid by the node that should pay it.
    #[error("own leaf {leaf} is not paid by its node")]
    LeafNotPaid {
        /// Own leaf number.
        leaf: usize,
    },
    /// `node_nonces` does not cover exactly the nodes on the own paths, once each.
    #[error("node nonces cover {got:?}, expected {expected:?}")]
    NonceSetMismatch {
        /// Nodes on the own paths.
        expected: Vec<usize>,
        /// Nodes listed.
        got: Vec<u32>,
    },
    /// The coordinator's deposit nonces do not number one per deposit.
    #[error("{got} coordinator deposit nonces for {expected} deposits")]
    NonceCount {
        /// Own deposits.
        expected: usize,
        /// Nonces given.
        got: usize,
    },
    /// The batch has more leaves than the configured limit.
    #[error("batch of {leaves} leaves is above the limit of {max}")]
    BatchTooLarge {
        /// Leaves in the batch.
        leaves: usize,
        /// The configured limit.
        max: usize,
    },
    /// An own exit path has more transactions than the configured limit.
    #[error("own leaf {leaf}'s exit path has {depth} transactions, above the limit of {max}")]
    PathTooDeep {
        /// Own leaf number.
        leaf: usize,
        /// Transactions on its path.
        depth: usize,
        /// The configured limit.
        max: u8,
    },
    /// Leaf amounts are outside the money range.
    #[error("leaf amounts: {0}")]
    LeafMoneyRange(MoneyRangeError),
    /// The funding tx as a whole is not what an honest coordinator builds: its txid
    /// could change once signed, it is time-locked, non-standard, outside the money
    /// range, or pays less than the announced fee rate.
    #[error("funding tx: {0}")]
    Funding(FundingRuleError),
    /// A node on an own exit path would not relay with its CPFP child.
    #[error("node {node} on an own exit path would not relay: {reason}")]
    ExitNotRelayable {
        /// The node.
        node: usize,
        /// The rule it breaks.
        reason: RelayError,
    },
    /// Exiting an own leaf costs more than the configured share of its value.
    #[error("exiting own leaf {leaf} costs {cost}, above {max} ({percent}% of its {value})")]
    ExitTooExpensive {
        /// Own leaf number.
        leaf: usize,
        /// Its whole path with CPFP children at the reference fee rate.
        cost: Amount,
        /// What the leaf holds.
        value: Amount,
        /// The most accepted.
        max: Amount,
        /// The configured percentage.
        percent: u8,
    },
    /// Partial signing failed (the own nonce was spent or the key is not in the set).
    #[error("signing node {node}: {reason}")]
    Signing {
        /// The node.
        node: usize,
        /// Why.
        reason: String,
    },
}

/// What the session expects of the next proposal.
#[derive(Debug, Clone, Copy)]
pub(super) struct Expect {
    /// The round.
    pub round: u64,
    /// The batch, once known (after an abort).
    pub batch: Option<u32>,
    /// The attempt.
    pub attempt: u32,
    /// The announced tree parameters.
    pub tree: TreeParams,
    /// The announced mining fee rate of the funding tx.
    pub fee_rate: FeeRate,
}

/// A proposal that passed every check, with what signing and exit paths need.
#[derive(Debug)]
pub(super) struct CheckedProposal {
    /// Batch number.
    pub batch: u32,
    /// Attempt number.
    pub attempt: u32,
    /// The decoded body (shared).
    pub decoded: Arc<DecodedBody>,
    /// The tree, built on the own paths.
    pub tree: Tree,
    /// Own leaf indices in the batch (request order, the remainder last).
    pub own_leaves: Vec<usize>,
    /// Every node on the own paths.
    pub path_nodes: BTreeSet<usize>,
    /// Aggregated nonce of each path node.
    pub node_nonces: Vec<(usize, AggNonce)>,
    /// Funding input of each own deposit.
    pub deposit_inputs: Vec<usize>,
    /// The coordinator's nonce for each own deposit.
    pub coordinator_nonces: Vec<PubNonce>,
}

impl CheckedProposal {
    /// The unsigned funding tx.
    pub fn funding_tx(&self) -> &Transaction {
        &self.decoded.body.funding_tx
    }
}

/// Decodes a proposal's body (once per distinct body when caches are shared).
pub(super) fn decode_body(
    proposal: &Proposal,
    caches: Option<&SharedCaches>,
) -> Result<Arc<DecodedBody>, ProposalError> {
    match caches {
        Some(c) => c.decoded(&proposal.body),
        None => DecodedBody::decode(&proposal.body).map(Arc::new),
    }
    .map_err(ProposalError::BodyDecode)
}

/// Runs every check of PROTOCOL 6 on `proposal`, whose body decoded to `decoded`.
pub(super) fn check_proposal(
    proposal: &Proposal,
    decoded: Arc<DecodedBody>,
    expect: Expect,
    config: &SessionConfig,
    secrets: &Secrets,
    caches: Option<&SharedCaches>,
) -> Result<CheckedProposal, ProposalError> {
    let body = &decoded.body;
    if body.round != expect.round {
        return Err(ProposalError::WrongRound { expected: expect.round, got: body.round });
    }
    if expect.batch.is_some_and(|b| b != body.batch) || body.attempt != expect.attempt {
        return Err(ProposalError::WrongBatchOrAttempt {
            expected_batch: expect.batch,
            expected_attempt: expect.attempt,
            batch: body.batch,
            attempt: body.attempt,
        });
    }
    if body.tree != expect.tree {
        return Err(ProposalError::TreeParams { expected: expect.tree, got: body.tree });
    }
    let limits = &config.limits;
    if decoded.leaves.len() > limits.max_batch_leaves {
        let (leaves, max) = (decoded.leaves.len(), limits.max_batch_leaves);
        return Err(ProposalError::BatchTooLarge { leaves, max });
    }
    let own_leaves = check_leaves(proposal, &decoded.leaves, config)?;
    let shape = shape(&decoded)?;
    check_depth(&shape, &own_leaves, limits)?;
    let deposit_inputs = check_deposits(proposal, &decoded, config)?;
    check_fee(&own_leaves, &decoded.leaves, config)?;
    let leaves_total = money_sum(decoded.leaves.iter().map(|l| l.output.amount))
        .map_err(ProposalError::LeafMoneyRange)?;
    let funding = body.funding_tx.output.first().ok_or(ProposalError::FundingNoOutput)?;
    if funding.value != leaves_total {
        let (expected, got) = (leaves_total, funding.value);
        return Err(ProposalError::RootAmountMismatch { expected, got });
    }
    check_funding_tx(&body.funding_tx, &body.funding_prevouts, expect.fee_rate)
        .map_err(ProposalError::Funding)?;
    check_leaf_scripts(&shape, &own_leaves, &decoded.leaves)?;

    // Only now the expensive part: key aggregation for every node the own paths need.
    let own_keys: Vec<Point> = (0..own_leaves.len()).filter_map(|i| secrets.cosigner(i)).collect();
    let cache: Option<&KeyAggCache> = caches.map(SharedCaches::keys);
    let tree = build_tree(&decoded, &own_leaves, cache)?;
    let path_nodes = check_paths(&tree, &own_leaves, &own_keys, &decoded.leaves)?;
    check_exits(&tree, &path_nodes, &own_leaves, &decoded.leaves, limits)?;
    let node_nonces = check_nonces(proposal, &path_nodes)?;
    Ok(CheckedProposal {
        batch: body.batch,
        attempt: body.attempt,
        tree,
        own_leaves,
        path_nodes,
        node_nonces,
        deposit_inputs,
        coordinator_nonces: proposal.coordinator_deposit_nonces.clone(),
        decoded,
    })
}

/// Own leaves at `your_leaves`, exactly as requested (outputs; keys are checked with
/// the tree); the remainder pays the remainder script.
fn check_leaves(
    proposal: &Proposal,
    leaves: &[TreeLeaf],
    config: &SessionConfig,
) -> Result<Vec<usize>, ProposalError> {
    let expected = config.leaves.len() + 1;
    if proposal.your_leaves.len() != expected {
        return Err(ProposalError::LeafCount { expected, got: proposal.your_leaves.len() });
    }
    let mut seen = BTreeSet::new();
    let mut own = Vec::with_capacity(expected);
    for (leaf, &index) in proposal.your_leaves.iter().enumerate() {
        let i = usize::try_from(index).map_err(|_| ProposalError::LeafIndex { leaf, index })?;
        let Some(tree_leaf) = leaves.get(i) else {
            return Err(ProposalError::LeafIndex { leaf, index });
        };
        if !seen.insert(i) {
            return Err(ProposalError::LeafIndex { leaf, index });
        }
        match config.leaves.get(leaf) {
            Some(requested) if tree_leaf.output != *requested => {
                return Err(ProposalError::LeafMismatch { leaf })
            }
            Some(_) => {}
            None if tree_leaf.output.script_pubkey != config.remainder_script => {
                return Err(ProposalError::RemainderScript)
            }
            None => {}
        }
        own.push(i);
    }
    Ok(own)
}

/// The tree's shape (shared when the body was decoded once for many participants).
fn shape(decoded: &DecodedBody) -> Result<Arc<TreeShape>, ProposalError> {
    match &decoded.memo {
        Some(memo) => Ok(Arc::clone(memo.shape())),
        None => TreeShape::new(decoded.leaves.len(), decoded.body.tree)
            .map(Arc::new)
            .map_err(ProposalError::TreeBuild),
    }
}

/// Every own exit path is at most `limits.max_depth` transactions long.
fn check_depth(
    shape: &TreeShape,
    own: &[usize],
    limits: &ProposalLimits,
) -> Result<(), ProposalError> {
    for (leaf, &index) in own.iter().enumerate() {
        let depth = shape.path(index).map_err(ProposalError::TreeBuild)?.len();
        if depth > usize::from(limits.max_depth) {
            return Err(ProposalError::PathTooDeep { leaf, depth, max: limits.max_depth });
        }
    }
    Ok(())
}

/// Every leaf paid by a node on an own path pays a standard leaf script (before any
/// key aggregation; the built nodes are checked in full by [`check_exits`]).
fn check_leaf_scripts(
    shape: &TreeShape,
    own: &[usize],
    leaves: &[TreeLeaf],
) -> Result<(), ProposalError> {
    let mut nodes = BTreeSet::new();
    for &index in own {
        nodes.extend(shape.path(index).map_err(ProposalError::TreeBuild)?);
    }
    for node in nodes {
        let Some(n) = shape.nodes().get(node) else { continue };
        for (output, child) in n.children.iter().enumerate() {
            let Child::Leaf(l) = *child else { continue };
            let standard = leaves.get(l).is_some_and(|l| is_standard_leaf(&l.output.script_pubkey));
            if !standard {
                let reason = RelayError::NonStandardOutput { output };
                return Err(ProposalError::ExitNotRelayable { node, reason });
            }
        }
    }
    Ok(())
}

/// Every node on the own paths relays with its CPFP child, and exiting each own leaf
/// (its whole path, each node with its child, at the reference rate) costs at most
/// the configured share of the leaf.
fn check_exits(
    tree: &Tree,
    path_nodes: &BTreeSet<usize>,
    own: &[usize],
    leaves: &[TreeLeaf],
    limits: &ProposalLimits,
) -> Result<(), ProposalError> {
    let mut costs = std::collections::BTreeMap::new();
    for &node in path_nodes {
        let n = tree.node(node).map_err(ProposalError::TreeBuild)?;
        let cost = check_exit_node(&n.tx, &n.prevout)
            .map_err(|reason| ProposalError::ExitNotRelayable { node, reason })?;
        costs.insert(node, cost);
    }
    let percent = limits.max_exit_cost_percent;
    for (leaf, &index) in own.iter().enumerate() {
        let path = tree.shape().path(index).map_err(ProposalError::TreeBuild)?;
        let path_costs: Vec<NodeCost> = path.iter().filter_map(|n| costs.get(n).copied()).collect();
        let cost = exit_cost(path_costs, limits.exit_fee_rate);
        let value = leaves.get(index).map_or(Amount::ZERO, |l| l.output.amount);
        let max = u64::try_from(u128::from(value.to_sat()) * u128::from(percent) / 100)
            .map_or(Amount::MAX, Amount::from_sat);
        if cost > max {
            return Err(ProposalError::ExitTooExpensive { leaf, cost, value, max, percent });
        }
    }
    Ok(())
}

/// The funding tx spends each own deposit at its announced input, with its output as
/// prevout; the coordinator sent one nonce per deposit.
fn check_deposits(
    proposal: &Proposal,
    decoded: &DecodedBody,
    config: &SessionConfig,
) -> Result<Vec<usize>, ProposalError> {
    let (tx, prevouts) = (&decoded.body.funding_tx, &decoded.body.funding_prevouts);
    let expected = config.deposits.len();
    if proposal.deposit_inputs.len() != expected {
        return Err(ProposalError::DepositInputCount {
            expected,
            got: proposal.deposit_inputs.len(),
        });
    }
    if proposal.coordinator_deposit_nonces.len() != expected {
        return Err(ProposalError::NonceCount {
            expected,
            got: proposal.coordinator_deposit_nonces.len(),
        });
    }
    if prevouts.len() != tx.input.len() {
        return Err(ProposalError::PrevoutCount {
            inputs: tx.input.len(),
            prevouts: prevouts.len(),
        });
    }
    let mut inputs = Vec::with_capacity(expected);
    for (deposit, &input) in config.deposits.iter().zip(&proposal.deposit_inputs) {
        let missing = ProposalError::FundingMissingDeposit { outpoint: deposit.outpoint };
        let i = usize::try_from(input).map_err(|_| missing.clone())?;
        match tx.input.get(i) {
            Some(txin) if txin.previous_output == deposit.outpoint => {}
            _ => return Err(missing),
        }
        if prevouts.get(i) != Some(&deposit.txout) {
            return Err(ProposalError::PrevoutMismatch { input });
        }
        inputs.push(i);
    }
    Ok(inputs)
}

/// Own deposits minus own leaves is at most `max_fee`.
fn check_fee(
    own: &[usize],
    leaves: &[TreeLeaf],
    config: &SessionConfig,
) -> Result<(), ProposalError> {
    let deposits = sum(config.deposits.iter().map(|d| d.txout.value));
    let leaves = sum(own.iter().filter_map(|&i| leaves.get(i)).map(|l| l.output.amount));
    let fee = deposits
        .checked_sub(leaves)
        .ok_or(ProposalError::LeavesExceedDeposits { deposits, leaves })?;
    if fee > config.max_fee {
        return Err(ProposalError::FeeAboveMax { fee, max: config.max_fee });
    }
    Ok(())
}

/// Builds the own paths from the body; the root spends funding output 0, whose script
/// and amount are the root's.
fn build_tree(
    decoded: &DecodedBody,
    own: &[usize],
    cache: Option<&KeyAggCache>,
) -> Result<Tree, ProposalError> {
    let body = &decoded.body;
    let scope = Scope::Paths(own.to_vec());
    let leaves = Arc::clone(&decoded.leaves);
    let plan = match &decoded.memo {
        Some(memo) => TreePlan::from_memo(memo, &scope, cache),
        None => TreePlan::new(leaves, body.batch_key, body.tree, &scope, cache),
    }
    .map_err(ProposalError::TreeBuild)?;
    let root = plan.root_output().map_err(ProposalError::TreeBuild)?;
    let funding = body.funding_tx.output.first().ok_or(ProposalError::FundingNoOutput)?;
    if funding.script_pubkey != root.script_pubkey {
        return Err(ProposalError::RootScriptMismatch);
    }
    if funding.value != root.value {
        return Err(ProposalError::RootAmountMismatch { got: funding.value, expected: root.value });
    }
    plan.finish(OutPoint { txid: decoded.funding_txid, vout: 0 }).map_err(ProposalError::TreeBuild)
}

/// Every node on the own paths: own cosigner key in its key set, amounts conserved,
/// the own leaf paid; the leaf at each own index carries the own cosigner key.
fn check_paths(
    tree: &Tree,
    own: &[usize],
    own_keys: &[Point],
    leaves: &[TreeLeaf],
) -> Result<BTreeSet<usize>, ProposalError> {
    let mut nodes = BTreeSet::new();
    for (leaf, (&index, key)) in own.iter().zip(own_keys).enumerate() {
        let path = tree.shape().path(index).map_err(ProposalError::TreeBuild)?;
        for &node in &path {
            let set = tree.key_set(node).map_err(ProposalError::TreeBuild)?;
            if !set.contains(key) {
                return Err(ProposalError::OwnKeyMissing { node, leaf });
            }
            if nodes.insert(node) {
                let n = tree.node(node).map_err(ProposalError::TreeBuild)?;
                let out = sum(n.tx.output.iter().map(|o| o.value));
                if out != n.prevout.value {
                    return Err(ProposalError::NotConserved { node, out, input: n.prevout.value });
                }
            }
        }
        if leaves.get(index).map(|l| l.cosigner) != Some(*key) {
            return Err(ProposalError::CosignerMismatch { leaf });
        }
        let paid = tree.shape().leaf_output(index).and_then(|(node, vout)| {
            let out = tree.node(node).ok()?.tx.output.get(vout as usize)?;
            let want = &leaves.get(index)?.output;
            Some(out.value == want.amount && out.script_pubkey == want.script_pubkey)
        });
        if paid != Some(true) {
            return Err(ProposalError::LeafNotPaid { leaf });
        }
    }
    Ok(nodes)
}

/// `node_nonces` covers exactly the path nodes, once each.
fn check_nonces(
    proposal: &Proposal,
    path_nodes: &BTreeSet<usize>,
) -> Result<Vec<(usize, AggNonce)>, ProposalError> {
    let mismatch = || ProposalError::NonceSetMismatch {
        expected: path_nodes.iter().copied().collect(),
        got: proposal.node_nonces.iter().map(|n| n.node).collect(),
    };
    if proposal.node_nonces.len() != path_nodes.len() {
        return Err(mismatch());
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(path_nodes.len());
    for n in &proposal.node_nonces {
        let node = usize::try_from(n.node).map_err(|_| mismatch())?;
        if !path_nodes.contains(&node) || !seen.insert(node) {
            return Err(mismatch());
        }
        out.push((node, n.nonce.clone()));
    }
    Ok(out)
}

/// Sum of amounts, saturating at `Amount::MAX` (which no real check accepts).
fn sum(mut amounts: impl Iterator<Item = Amount>) -> Amount {
    amounts.try_fold(Amount::ZERO, |acc, a| acc.checked_add(a)).unwrap_or(Amount::MAX)
}
