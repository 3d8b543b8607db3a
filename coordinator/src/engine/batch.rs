//! One attempt at signing a batch: its funding transaction, tree and nonces, the
//! partial signatures collected so far, and the aggregate-first combination that
//! either completes a phase or names the culprits.

use std::ops::Range;
use std::sync::Arc;

use bitcoin::secp256k1::schnorr;
use bitcoin::{Amount, OutPoint, ScriptBuf, Transaction, TxOut};
use rayon::prelude::*;

use cohort_common::codec::Encoded;
use cohort_common::fees::{funding_tx, plan_funding, FeeError, FundingRequest};
use cohort_common::keys::Keypair;
use cohort_common::messages::{
    DepositPartial, NodeNonce, NodePartial, NodeSignature, Proposal, ProposalBody,
};
use cohort_common::musig::{
    self, AggNonce, Contribution, KeyAggContext, MusigError, PartialSignature, Point, PubNonce,
    SecNonce,
};
use cohort_common::params::{LeafOutput, TreeParams};
use cohort_common::scripts::{key_spend_sighashes, key_spend_witness, DepositScript};
use cohort_common::tree::{Tree, TreeError, TreeLeaf};

/// What one registration brings to an attempt.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its registration id.
    pub registration: u64,
    /// Its deposits and what they hold.
    pub deposits: Vec<(OutPoint, TxOut)>,
    /// The deposits' scripts.
    pub scripts: Vec<DepositScript>,
    /// Its fixed leaves.
    pub fixed: Vec<LeafOutput>,
    /// Its remainder leaf's script.
    pub remainder_script: ScriptBuf,
    /// The largest fee it accepts.
    pub max_fee: Amount,
    /// Cosigner key of each leaf (fixed ones, then the remainder) for this attempt.
    pub leaf_keys: Vec<Point>,
    /// `max_depth` public nonces of each leaf for this attempt.
    pub leaf_nonces: Vec<Vec<PubNonce>>,
    /// One public nonce per deposit for this attempt.
    pub deposit_nonces: Vec<PubNonce>,
}

/// Why an attempt could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// A member's fee is above its `max_fee`, or it cannot pay: leave it out and retry.
    #[error("member {member}: {error}")]
    Member {
        /// Index into the members.
        member: usize,
        /// The fee error.
        error: FeeError,
    },
    /// The batch as a whole cannot be priced.
    #[error("pricing: {0}")]
    Fees(FeeError),
    /// The tree cannot be built.
    #[error("tree: {0}")]
    Tree(#[from] TreeError),
    /// MuSig2 failed on the coordinator's side.
    #[error("musig: {0}")]
    Musig(#[from] MusigError),
    /// A member's nonces do not fit the tree.
    #[error("member {0} sent too few nonces")]
    Nonces(usize),
    /// A sighash could not be computed.
    #[error("sighash: {0}")]
    Sighash(String),
}

/// Which attempt of which batch of which round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptId {
    /// The round.
    pub round: u64,
    /// The batch within the round.
    pub batch: u32,
    /// The attempt number (1-based).
    pub number: u32,
}

/// A built attempt, waiting for partial signatures.
#[derive(Debug)]
pub struct Attempt {
    /// The attempt number (1-based).
    pub number: u32,
    /// Registration ids, in batch order.
    pub members: Vec<u64>,
    /// The unsigned funding transaction.
    pub funding: Transaction,
    /// Its prevouts.
    pub prevouts: Vec<TxOut>,
    /// The tree.
    pub tree: Tree,
    /// The proposal body, encoded once for every member.
    pub body: Encoded<ProposalBody>,
    leaf_range: Vec<Range<usize>>,
    input_range: Vec<Range<usize>>,
    leaf_member: Vec<usize>,
    leaf_nonces: Vec<Vec<PubNonce>>,
    node_agg: Vec<AggNonce>,
    batch_key: Point,
    batch_partials: Vec<(PubNonce, PartialSignature)>,
    deposit_ctx: Vec<KeyAggContext>,
    deposit_sighash: Vec<[u8; 32]>,
    deposit_user: Vec<(Point, PubNonce)>,
    coordinator: Keypair,
    coordinator_secnonces: Vec<Option<SecNonce>>,
    coordinator_pubnonces: Vec<PubNonce>,
    tree_partials: Vec<Vec<Option<PartialSignature>>>,
    tree_done: Vec<bool>,
    node_sigs: Vec<Option<schnorr::Signature>>,
    deposit_partials: Vec<Option<PartialSignature>>,
    deposits_done: Vec<bool>,
}

/// What a member sent that does not fit the attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContributionError {
    /// Not exactly the partial signatures it owes, once each.
    #[error("wrong set of partial signatures")]
    WrongSet,
    /// It already delivered this phase.
    #[error("already delivered")]
    Duplicate,
}

impl Attempt {
    /// Prices the batch, builds the funding transaction and tree, aggregates every
    /// node's nonce and signs the batch key's own partial signatures.
    pub fn build(
        id: AttemptId,
        members: &[&Member],
        coordinator: &Keypair,
        payout_script: &ScriptBuf,
        params: TreeParams,
        fees: &cohort_common::params::FeeSchedule,
    ) -> Result<Attempt, BuildError> {
        let AttemptId { round, batch, number } = id;
        let requests: Vec<FundingRequest> = members
            .iter()
            .map(|m| FundingRequest {
                deposits: m.deposits.clone(),
                requested: m.fixed.iter().map(|l| l.amount).sum(),
                remainder_script: m.remainder_script.clone(),
                max_fee: m.max_fee,
            })
            .collect();
        let plan = plan_funding(&requests, fees, payout_script).map_err(|error| match error {
            FeeError::FeeTooHigh { index, .. }
            | FeeError::InsufficientFunds { index, .. }
            | FeeError::NoDeposits(index) => BuildError::Member { member: index, error },
            other => BuildError::Fees(other),
        })?;

        let depth = usize::from(params.max_depth);
        let mut leaves = Vec::new();
        let mut leaf_member = Vec::new();
        let mut leaf_nonces = Vec::new();
        let mut leaf_range = Vec::with_capacity(members.len());
        let mut input_range = Vec::with_capacity(members.len());
        let mut inputs = 0;
        for (i, (m, share)) in members.iter().zip(&plan.shares).enumerate() {
            let start = leaves.len();
            let outputs = m.fixed.iter().cloned().chain(std::iter::once(LeafOutput {
                script_pubkey: m.remainder_script.clone(),
                amount: share.remainder,
            }));
            if m.leaf_keys.len() != m.fixed.len() + 1 || m.leaf_nonces.len() != m.leaf_keys.len() {
                return Err(BuildError::Nonces(i));
            }
            for ((output, key), nonces) in outputs.zip(&m.leaf_keys).zip(&m.leaf_nonces) {
                if nonces.len() < depth {
                    return Err(BuildError::Nonces(i));
                }
                leaves.push(TreeLeaf { output, cosigner: *key });
                leaf_member.push(i);
                leaf_nonces.push(nonces.clone());
            }
            leaf_range.push(start..leaves.len());
            input_range.push(inputs..inputs + m.deposits.len());
            inputs += m.deposits.len();
        }
        let leaves: Arc<[TreeLeaf]> = leaves.into();
        let batch_keypair = Keypair::random();
        let batch_key = batch_keypair.point;
        let mut funding = None;
        let tree = Tree::build(leaves.clone(), batch_key, params, None, |root| {
            let tx = funding_tx(&requests, &plan, root, payout_script);
            let outpoint = OutPoint { txid: tx.compute_txid(), vout: 0 };
            funding = Some(tx);
            outpoint
        })?;
        let funding = funding.ok_or(BuildError::Sighash("no funding transaction".into()))?;
        let prevouts: Vec<TxOut> =
            requests.iter().flat_map(|r| r.deposits.iter().map(|(_, o)| o.clone())).collect();

        // Aggregate every node's nonce and sign the batch key's share, node by node on rayon.
        let shape = tree.shape();
        let per_node = (0..tree.node_count())
            .into_par_iter()
            .map(|i| {
                let node = tree.node(i)?;
                let info = &shape.nodes()[i];
                let d = usize::from(info.depth) - 1;
                let secnonce = musig::new_secnonce(
                    &batch_key,
                    Some(&batch_keypair.scalar()),
                    Some(&node.sighash),
                );
                let own = secnonce.public_nonce();
                let mut nonces: Vec<PubNonce> =
                    leaf_nonces[info.leaves.clone()].iter().map(|n| n[d].clone()).collect();
                nonces.push(own.clone());
                let agg = musig::nonce_agg(&nonces)?;
                let psig = musig::sign_partial(
                    &node.key,
                    &batch_keypair.scalar(),
                    secnonce,
                    &agg,
                    &node.sighash,
                )?;
                Ok((agg, (own, psig)))
            })
            .collect::<Result<Vec<_>, BuildError>>()?;
        let (node_agg, batch_partials): (Vec<_>, Vec<_>) = per_node.into_iter().unzip();

        // The deposits: MuSig2(U, C) contexts, sighashes and C's nonces.
        let deposit_sighash = key_spend_sighashes(&funding, &prevouts)
            .map_err(|e| BuildError::Sighash(e.to_string()))?;
        let scripts: Vec<(&DepositScript, &PubNonce)> =
            members.iter().flat_map(|m| m.scripts.iter().zip(&m.deposit_nonces)).collect();
        if scripts.len() != funding.input.len() {
            return Err(BuildError::Sighash("deposit nonce count".into()));
        }
        let deposit_ctx = scripts
            .par_iter()
            .map(|(s, _)| s.signing_context().map_err(|e| BuildError::Sighash(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let deposit_user: Vec<(Point, PubNonce)> =
            scripts.iter().map(|(s, n)| (s.musig_keys()[0], (*n).clone())).collect();
        let coordinator_secnonces: Vec<SecNonce> = deposit_sighash
            .par_iter()
            .map(|m| musig::new_secnonce(&coordinator.point, Some(&coordinator.scalar()), Some(m)))
            .collect();
        let coordinator_pubnonces =
            coordinator_secnonces.iter().map(|n| n.public_nonce()).collect();

        let body = Encoded::new(&ProposalBody {
            round,
            batch,
            attempt: number,
            funding_tx: funding.clone(),
            funding_prevouts: prevouts.clone(),
            leaves: leaves.to_vec(),
            batch_key,
            tree: params,
        })
        .map_err(|e| BuildError::Sighash(e.to_string()))?;

        let tree_partials = shape.nodes().iter().map(|n| vec![None; n.leaves.len()]).collect();
        let node_count = tree.node_count();
        let inputs = funding.input.len();
        Ok(Attempt {
            number,
            members: members.iter().map(|m| m.registration).collect(),
            funding,
            prevouts,
            tree,
            body,
            leaf_range,
            input_range,
            leaf_member,
            leaf_nonces,
            node_agg,
            batch_key,
            batch_partials,
            deposit_ctx,
            deposit_sighash,
            deposit_user,
            coordinator: coordinator.clone(),
            coordinator_secnonces: coordinator_secnonces.into_iter().map(Some).collect(),
            coordinator_pubnonces,
            tree_partials,
            tree_done: vec![false; members.len()],
            node_sigs: vec![None; node_count],
            deposit_partials: vec![None; inputs],
            deposits_done: vec![false; members.len()],
        })
    }

    /// The member index of a registration.
    pub fn member_index(&self, registration: u64) -> Option<usize> {
        self.members.iter().position(|&r| r == registration)
    }

    fn member_nodes(&self, member: usize) -> Vec<usize> {
        let mut nodes: Vec<usize> = self.leaf_range[member]
            .clone()
            .flat_map(|leaf| self.tree.shape().path(leaf).unwrap_or_default())
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// The proposal for one member: the shared body plus its own indices and nonces.
    pub fn proposal(&self, member: usize) -> Proposal {
        let inputs = self.input_range[member].clone();
        Proposal {
            body: self.body.clone(),
            your_leaves: self.leaf_range[member].clone().map(|l| l as u32).collect(),
            node_nonces: self
                .member_nodes(member)
                .into_iter()
                .map(|n| NodeNonce { node: n as u32, nonce: self.node_agg[n].clone() })
                .collect(),
            deposit_inputs: inputs.clone().map(|i| i as u32).collect(),
            coordinator_deposit_nonces: self.coordinator_pubnonces[inputs].to_vec(),
        }
    }

    /// Takes a member's tree partial signatures: exactly one per own leaf per node on
    /// that leaf's path. Returns whether every member has now delivered.
    pub fn add_tree_sigs(
        &mut self,
        member: usize,
        sigs: &[NodePartial],
    ) -> Result<bool, ContributionError> {
        if self.tree_done[member] {
            return Err(ContributionError::Duplicate);
        }
        let range = self.leaf_range[member].clone();
        let expected: usize =
            range.clone().map(|l| self.tree.shape().path(l).map_or(0, |p| p.len())).sum();
        if sigs.len() != expected {
            return Err(ContributionError::WrongSet);
        }
        let mut staged = Vec::with_capacity(sigs.len());
        for s in sigs {
            let (node, leaf) = (s.node as usize, s.leaf as usize);
            if !range.contains(&leaf) {
                return Err(ContributionError::WrongSet);
            }
            let info = self.tree.shape().nodes().get(node).ok_or(ContributionError::WrongSet)?;
            if !info.leaves.contains(&leaf) {
                return Err(ContributionError::WrongSet);
            }
            let slot = leaf - info.leaves.start;
            if self.tree_partials[node][slot].is_some() || staged.contains(&(node, slot)) {
                return Err(ContributionError::WrongSet);
            }
            staged.push((node, slot));
        }
        for (s, (node, slot)) in sigs.iter().zip(staged) {
            self.tree_partials[node][slot] = Some(s.psig);
        }
        self.tree_done[member] = true;
        Ok(self.tree_done.iter().all(|d| *d))
    }

    /// Members that have not delivered their tree signatures.
    pub fn tree_holdouts(&self) -> Vec<u64> {
        holdouts(&self.members, &self.tree_done)
    }

    /// Members that have not delivered their deposit signatures.
    pub fn deposit_holdouts(&self) -> Vec<u64> {
        holdouts(&self.members, &self.deposits_done)
    }

    /// Combines every node's signature, aggregate-first, on rayon. On failure returns
    /// the registrations whose partial signatures were invalid.
    pub fn combine_tree(&mut self) -> Result<(), Vec<u64>> {
        let results: Vec<Result<schnorr::Signature, Vec<usize>>> =
            (0..self.tree.node_count()).into_par_iter().map(|i| self.combine_node(i)).collect();
        let mut culprits = Vec::new();
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(sig) => self.node_sigs[i] = Some(sig),
                Err(leaves) => {
                    culprits.extend(leaves.into_iter().map(|l| self.members[self.leaf_member[l]]))
                }
            }
        }
        culprits.sort_unstable();
        culprits.dedup();
        if culprits.is_empty() {
            Ok(())
        } else {
            Err(culprits)
        }
    }

    fn combine_node(&self, i: usize) -> Result<schnorr::Signature, Vec<usize>> {
        let info = &self.tree.shape().nodes()[i];
        let Ok(node) = self.tree.node(i) else { return Err(Vec::new()) };
        let d = usize::from(info.depth) - 1;
        let mut contributions = Vec::with_capacity(info.leaves.len() + 1);
        let mut missing = Vec::new();
        for (slot, leaf) in info.leaves.clone().enumerate() {
            match self.tree_partials[i][slot] {
                Some(psig) => contributions.push(Contribution {
                    signer: self.tree.leaves()[leaf].cosigner,
                    pubnonce: self.leaf_nonces[leaf][d].clone(),
                    psig,
                }),
                None => missing.push(leaf),
            }
        }
        if !missing.is_empty() {
            return Err(missing);
        }
        let (nonce, psig) = &self.batch_partials[i];
        contributions.push(Contribution {
            signer: self.batch_key,
            pubnonce: nonce.clone(),
            psig: *psig,
        });
        match musig::combine(&node.key, &self.node_agg[i], &node.sighash, &contributions) {
            Ok(sig) => Ok(sig),
            Err(MusigError::InvalidPartials { signers }) => Ok(signers).and_then(|s| {
                Err(s.into_iter().filter_map(|k| info.leaves.clone().nth(k)).collect())
            }),
            Err(_) => Err(info.leaves.clone().collect()),
        }
    }

    /// The final signatures of every node on a member's paths.
    pub fn signed_tree_for(&self, member: usize) -> Vec<NodeSignature> {
        self.member_nodes(member)
            .into_iter()
            .filter_map(|n| self.node_sigs[n].map(|sig| NodeSignature { node: n as u32, sig }))
            .collect()
    }

    /// Every node transaction with its final signature (after `combine_tree`).
    pub fn signed_nodes(&self) -> Vec<Transaction> {
        self.tree
            .built_nodes()
            .map(|(i, node)| {
                let mut tx = node.tx.clone();
                if let Some(sig) = self.node_sigs[i] {
                    tx.input[0].witness = key_spend_witness(&sig);
                }
                tx
            })
            .collect()
    }

    /// Takes a member's deposit partial signatures: exactly one per own input.
    pub fn add_deposit_sigs(
        &mut self,
        member: usize,
        sigs: &[DepositPartial],
    ) -> Result<bool, ContributionError> {
        if self.deposits_done[member] {
            return Err(ContributionError::Duplicate);
        }
        let range = self.input_range[member].clone();
        if sigs.len() != range.len() {
            return Err(ContributionError::WrongSet);
        }
        let mut seen = Vec::with_capacity(sigs.len());
        for s in sigs {
            let input = s.input as usize;
            if !range.contains(&input) || seen.contains(&input) {
                return Err(ContributionError::WrongSet);
            }
            seen.push(input);
        }
        for s in sigs {
            self.deposit_partials[s.input as usize] = Some(s.psig);
        }
        self.deposits_done[member] = true;
        Ok(self.deposits_done.iter().all(|d| *d))
    }

    /// Signs C's share of every deposit input, combines aggregate-first, and returns the
    /// complete funding transaction, or the registrations whose signatures were invalid.
    pub fn complete_funding(&mut self) -> Result<Transaction, Vec<u64>> {
        let secnonces: Vec<Option<SecNonce>> =
            self.coordinator_secnonces.iter_mut().map(Option::take).collect();
        let coordinator = &self.coordinator;
        let results: Vec<Result<schnorr::Signature, ()>> = secnonces
            .into_par_iter()
            .enumerate()
            .map(|(i, secnonce)| {
                let secnonce = secnonce.ok_or(())?;
                let psig_user = self.deposit_partials[i].ok_or(())?;
                let (user, user_nonce) = &self.deposit_user[i];
                let coord_nonce = &self.coordinator_pubnonces[i];
                let agg =
                    musig::nonce_agg(&[user_nonce.clone(), coord_nonce.clone()]).map_err(|_| ())?;
                let ctx = &self.deposit_ctx[i];
                let msg = &self.deposit_sighash[i];
                let own = musig::sign_partial(ctx, &coordinator.scalar(), secnonce, &agg, msg)
                    .map_err(|_| ())?;
                musig::combine(
                    ctx,
                    &agg,
                    msg,
                    &[
                        Contribution {
                            signer: *user,
                            pubnonce: user_nonce.clone(),
                            psig: psig_user,
                        },
                        Contribution {
                            signer: coordinator.point,
                            pubnonce: coord_nonce.clone(),
                            psig: own,
                        },
                    ],
                )
                .map_err(|_| ())
            })
            .collect();
        let mut culprits = Vec::new();
        let mut tx = self.funding.clone();
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(sig) => tx.input[i].witness = key_spend_witness(&sig),
                Err(()) => {
                    if let Some(m) = self.input_range.iter().position(|r| r.contains(&i)) {
                        culprits.push(self.members[m]);
                    }
                }
            }
        }
        culprits.dedup();
        if culprits.is_empty() {
            Ok(tx)
        } else {
            Err(culprits)
        }
    }
}

fn holdouts(members: &[u64], done: &[bool]) -> Vec<u64> {
    members.iter().zip(done).filter(|(_, d)| !**d).map(|(m, _)| *m).collect()
}
