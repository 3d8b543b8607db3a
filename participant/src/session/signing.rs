//! Signing: partial signatures of the own paths' nodes, the check of the coordinator's
//! final node signatures and the fully signed exit paths, and the deposit signatures.
//!
//! Each function takes the secret nonces it uses out of their `Option`, so a nonce
//! signs at most once whatever the caller does next.

use std::collections::BTreeMap;

use bitcoin::secp256k1::schnorr;
use cohort_common::messages::{DepositPartial, DepositSigs, NodePartial, SignedTree, TreeSigs};
use cohort_common::musig::{self, MusigError};
use cohort_common::scripts::{key_spend_sighash, ScriptError};
use cohort_common::tree::TreeError;

use super::caches::SharedCaches;
use super::checks::{CheckedProposal, ProposalError};
use super::register::{DepositSecret, LeafSecret};
use super::{ExitPath, SessionConfig};

/// Why the coordinator's final signatures (or the deposit signing) are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignedTreeError {
    /// A signature names a node that is not on the own paths.
    #[error("signature for node {0}, which is not on the own paths")]
    UnexpectedNode(u32),
    /// A node's signature is given twice.
    #[error("node {0} is signed twice")]
    DuplicateNode(u32),
    /// A node on the own paths has no signature.
    #[error("node {0} on the own paths has no signature")]
    MissingNode(usize),
    /// A final signature does not verify against the node's output key.
    #[error("final signature of node {0} does not verify")]
    InvalidSignature(usize),
    /// The signed paths could not be assembled.
    #[error("exit path of leaf {leaf}: {reason}")]
    Path {
        /// The leaf index in the batch.
        leaf: usize,
        /// Why.
        #[source]
        reason: PathError,
    },
    /// A deposit input could not be signed.
    #[error("deposit input {input}: {reason}")]
    DepositSigning {
        /// The funding input.
        input: usize,
        /// Why.
        #[source]
        reason: DepositSigningError,
    },
}

/// Why a signed exit path could not be assembled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The tree has no node paying the leaf.
    #[error("no node pays the leaf")]
    NoNode,
    /// The tree could not give the signed path.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// The leaf's node has no output at the leaf's index.
    #[error("its node has no output {0}")]
    NoOutput(u32),
}

/// Why a deposit input could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DepositSigningError {
    /// The deposit script's signing context or the input's sighash failed.
    #[error(transparent)]
    Script(#[from] ScriptError),
    /// Nonce aggregation or partial signing failed.
    #[error(transparent)]
    Musig(#[from] MusigError),
    /// The deposit's secret nonce was already used.
    #[error("its secret nonce was already used")]
    NonceUsed,
}

/// One partial signature per own leaf per node on its path, each with the leaf's nonce
/// number `depth - 1` (taken, so it can never sign again).
pub(super) fn sign_tree(
    checked: &CheckedProposal,
    leaves: &mut [LeafSecret],
) -> Result<TreeSigs, ProposalError> {
    let nonces: BTreeMap<usize, &musig::AggNonce> =
        checked.node_nonces.iter().map(|(n, a)| (*n, a)).collect();
    let mut sigs = Vec::new();
    for (&index, secret) in checked.own_leaves.iter().zip(leaves.iter_mut()) {
        let path = checked.tree.shape().path(index).map_err(ProposalError::TreeBuild)?;
        let key = &secret.key;
        for node in path {
            let fail = |reason: String| ProposalError::Signing { node, reason };
            let n = checked.tree.node(node).map_err(ProposalError::TreeBuild)?;
            let depth = checked.tree.shape().nodes().get(node).map(|s| s.depth).unwrap_or(0);
            let slot = usize::from(depth)
                .checked_sub(1)
                .and_then(|i| secret.nonces.get_mut(i))
                .ok_or_else(|| fail(format!("no nonce for depth {depth}")))?;
            let secnonce = slot.take().ok_or_else(|| fail("nonce already used".into()))?;
            let agg = nonces.get(&node).ok_or_else(|| fail("no aggregated nonce".into()))?;
            let psig = musig::sign_partial(&n.key, key, secnonce, agg, &n.sighash)
                .map_err(|e| fail(e.to_string()))?;
            let (node, leaf) = (node as u32, index as u32);
            sigs.push(NodePartial { node, leaf, psig });
        }
    }
    Ok(TreeSigs { batch: checked.batch, attempt: checked.attempt, sigs })
}

/// Checks that `signed` holds exactly one valid final signature per node on the own
/// paths, and builds the fully signed exit paths.
pub(super) fn check_signed_tree(
    checked: &CheckedProposal,
    signed: &SignedTree,
    caches: Option<&SharedCaches>,
) -> Result<Vec<ExitPath>, SignedTreeError> {
    let mut sigs: BTreeMap<usize, schnorr::Signature> = BTreeMap::new();
    for s in &signed.sigs {
        let node = usize::try_from(s.node).map_err(|_| SignedTreeError::UnexpectedNode(s.node))?;
        if !checked.path_nodes.contains(&node) {
            return Err(SignedTreeError::UnexpectedNode(s.node));
        }
        if sigs.insert(node, s.sig).is_some() {
            return Err(SignedTreeError::DuplicateNode(s.node));
        }
    }
    for &node in &checked.path_nodes {
        let sig = sigs.get(&node).ok_or(SignedTreeError::MissingNode(node))?;
        let n = checked.tree.node(node).map_err(|_| SignedTreeError::MissingNode(node))?;
        let key = musig::output_key(&n.key);
        let valid = match caches {
            Some(c) => c.verify_schnorr(sig, &n.sighash, &key),
            None => musig::verify_schnorr(sig, &n.sighash, &key),
        };
        if !valid {
            return Err(SignedTreeError::InvalidSignature(node));
        }
    }
    let lookup = |i: usize| sigs.get(&i).copied();
    checked
        .own_leaves
        .iter()
        .map(|&leaf| {
            let fail = |reason: PathError| SignedTreeError::Path { leaf, reason };
            let (node, vout) =
                checked.tree.shape().leaf_output(leaf).ok_or_else(|| fail(PathError::NoNode))?;
            let path = checked.tree.signed_path(leaf, &lookup).map_err(|e| fail(e.into()))?;
            let leaf_output = path
                .last()
                .and_then(|tx| tx.output.get(vout as usize))
                .cloned()
                .ok_or_else(|| fail(PathError::NoOutput(vout)))?;
            Ok(ExitPath { leaf: leaf as u32, leaf_output, node: node as u32, vout, path })
        })
        .collect()
}

/// MuSig2(U, C) partial signatures of every own deposit input (nonces taken).
pub(super) fn sign_deposits(
    checked: &CheckedProposal,
    config: &SessionConfig,
    secrets: &mut [DepositSecret],
) -> Result<DepositSigs, SignedTreeError> {
    let tx = checked.funding_tx();
    let prevouts = &checked.decoded.body.funding_prevouts;
    let mut sigs = Vec::with_capacity(config.deposits.len());
    let iter = config
        .deposits
        .iter()
        .zip(secrets.iter_mut())
        .zip(checked.deposit_inputs.iter().zip(&checked.coordinator_nonces));
    for ((deposit, secret), (&input, coordinator_nonce)) in iter {
        let fail = |reason: DepositSigningError| SignedTreeError::DepositSigning { input, reason };
        let ctx = deposit.script.signing_context().map_err(|e| fail(e.into()))?;
        let agg = musig::nonce_agg(&[secret.pubnonce.clone(), coordinator_nonce.clone()])
            .map_err(|e| fail(e.into()))?;
        let msg = key_spend_sighash(tx, input, prevouts).map_err(|e| fail(e.into()))?;
        let secnonce = secret.nonce.take().ok_or_else(|| fail(DepositSigningError::NonceUsed))?;
        let psig = musig::sign_partial(&ctx, &deposit.key, secnonce, &agg, &msg)
            .map_err(|e| fail(e.into()))?;
        sigs.push(DepositPartial { input: input as u32, psig });
    }
    Ok(DepositSigs { batch: checked.batch, attempt: checked.attempt, sigs })
}
