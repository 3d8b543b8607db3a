//! One attempt at signing a batch: the batch `common::batch` builds, the nonces and
//! partial signatures only the coordinator holds (the batch key's on every node, its
//! own key's on every deposit), the checks of what a member sends, and the
//! aggregate-first combinations that complete the tree or the funding transaction or
//! name the culprits. The phases that use it are in `batch.rs`.

use bitcoin::secp256k1::schnorr;
use bitcoin::{Transaction, TxOut};
use rayon::prelude::*;

use cohort_common::batch::{self, BatchMember, NodeNonces, NoncePurpose, NonceSeed, UnsignedBatch};
use cohort_common::codec::{CodecError, Encoded};
use cohort_common::keys::Keypair;
use cohort_common::messages::{
    DepositPartial, NodeNonce, NodePartial, NodeSignature, Proposal, ProposalBody,
};
use cohort_common::musig::{
    self, Contribution, KeyAggContext, MusigError, PartialSignature, Point, PubNonce, SecNonce,
    SigningSession,
};
use cohort_common::params::{FeeSchedule, TreeParams};
use cohort_common::scripts::{key_spend_witness, DepositScript, ScriptError};

/// What one registration brings to an attempt.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its registration id.
    pub registration: u64,
    /// Deposits, leaves, fee limit and cosigner keys: what the batch builder needs.
    pub batch: BatchMember,
    /// The deposits' scripts.
    pub scripts: Vec<DepositScript>,
    /// `max_depth` public nonces of each leaf for this attempt.
    pub leaf_nonces: Vec<Vec<PubNonce>>,
    /// One public nonce per deposit for this attempt.
    pub deposit_nonces: Vec<PubNonce>,
}

/// Why an attempt could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The batch itself (pricing, tree, nonces) could not be built.
    #[error("building the batch")]
    Batch(#[from] batch::BuildError),
    /// A deposit's MuSig2(U, C) context could not be formed.
    #[error("deposit input {input}")]
    DepositContext {
        /// The funding input.
        input: usize,
        /// Why.
        #[source]
        error: ScriptError,
    },
    /// The members gave another number of deposit nonces than the funding tx has inputs.
    #[error("{nonces} deposit nonces for {inputs} funding inputs")]
    DepositNonces {
        /// Nonces given.
        nonces: usize,
        /// Funding inputs.
        inputs: usize,
    },
    /// The shared proposal body could not be encoded.
    #[error("encoding the proposal")]
    Encode(#[from] CodecError),
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

/// The secrets an attempt is built with, drawn from the engine's random source.
#[derive(Debug)]
pub struct AttemptSecrets {
    /// The per-attempt batch key `C_b`.
    pub batch_key: Keypair,
    /// The seed of the batch key's node nonces and the coordinator's deposit nonces.
    pub seed: NonceSeed,
}

/// What a member sent that does not fit the attempt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContributionError {
    /// Not exactly the partial signatures it owes, once each.
    #[error("wrong set of partial signatures: {0}")]
    WrongSet(&'static str),
}

/// A built attempt. Immutable once built, except for the coordinator's deposit secret
/// nonces, which [`Attempt::complete_funding`] consumes.
#[derive(Debug)]
pub struct Attempt {
    /// Which attempt.
    pub id: AttemptId,
    /// Registration ids, in batch order.
    pub members: Vec<u64>,
    /// The priced batch: funding transaction, tree, layout.
    pub batch: UnsignedBatch,
    /// The proposal body, encoded once for every member.
    pub body: Encoded<ProposalBody>,
    leaf_nonces: Vec<Vec<PubNonce>>,
    nodes: NodeNonces,
    batch_key: Point,
    deposit_ctx: Vec<KeyAggContext>,
    deposit_sighash: Vec<[u8; 32]>,
    deposit_user: Vec<(Point, PubNonce)>,
    coordinator: Keypair,
    coordinator_secnonces: Vec<Option<SecNonce>>,
    coordinator_pubnonces: Vec<PubNonce>,
}

impl Attempt {
    /// Builds the batch of `members` (common's builder), aggregates every node's nonce,
    /// signs the batch key's share of every node, and prepares the coordinator's
    /// deposit nonces.
    pub fn build(
        id: AttemptId,
        members: &[&Member],
        coordinator: &Keypair,
        payout_script: &bitcoin::ScriptBuf,
        params: TreeParams,
        fees: &FeeSchedule,
        secrets: &AttemptSecrets,
    ) -> Result<Attempt, BuildError> {
        let parts: Vec<&BatchMember> = members.iter().map(|m| &m.batch).collect();
        let built = batch::build(&parts, secrets.batch_key.point, payout_script, params, fees)?;
        let leaf_nonces: Vec<Vec<PubNonce>> =
            members.iter().flat_map(|m| m.leaf_nonces.iter().cloned()).collect();
        let refs: Vec<&[PubNonce]> = leaf_nonces.iter().map(Vec::as_slice).collect();
        let nodes = built.aggregate_node_nonces(&refs, &secrets.batch_key, &secrets.seed)?;
        let deposits = Deposits::prepare(members, &built, coordinator, &secrets.seed)?;
        let body = Encoded::new(&ProposalBody {
            round: id.round,
            batch: id.batch,
            attempt: id.number,
            funding_tx: built.funding.clone(),
            funding_prevouts: built.prevouts.clone(),
            leaves: built.tree.leaves().to_vec(),
            batch_key: secrets.batch_key.point,
            tree: params,
        })?;
        Ok(Attempt {
            id,
            members: members.iter().map(|m| m.registration).collect(),
            batch: built,
            body,
            leaf_nonces,
            nodes,
            batch_key: secrets.batch_key.point,
            deposit_ctx: deposits.ctx,
            deposit_sighash: deposits.sighash,
            deposit_user: deposits.user,
            coordinator: coordinator.clone(),
            coordinator_secnonces: deposits.secnonces.into_iter().map(Some).collect(),
            coordinator_pubnonces: deposits.pubnonces,
        })
    }

    /// The attempt number.
    pub fn number(&self) -> u32 {
        self.id.number
    }

    /// The unsigned funding transaction.
    pub fn funding(&self) -> &Transaction {
        &self.batch.funding
    }

    /// Its prevouts.
    pub fn prevouts(&self) -> &[TxOut] {
        &self.batch.prevouts
    }

    /// The member index of a registration.
    pub fn member_index(&self, registration: u64) -> Option<usize> {
        self.members.iter().position(|&r| r == registration)
    }

    /// The proposal for one member: the shared body plus its own indices and nonces.
    pub fn proposal(&self, member: usize) -> Proposal {
        let inputs = self.batch.input_ranges.get(member).cloned().unwrap_or_default();
        let leaves = self.batch.leaf_ranges.get(member).cloned().unwrap_or_default();
        Proposal {
            body: self.body.clone(),
            your_leaves: leaves.map(|l| l as u32).collect(),
            node_nonces: self
                .batch
                .member_nodes(member)
                .into_iter()
                .map(|n| NodeNonce {
                    node: n as u32,
                    nonce: self.nodes.sessions[n].agg_nonce().clone(),
                })
                .collect(),
            deposit_inputs: inputs.clone().map(|i| i as u32).collect(),
            coordinator_deposit_nonces: self.coordinator_pubnonces[inputs].to_vec(),
        }
    }

    /// Checks a member's tree partial signatures: exactly one per own leaf per node on
    /// that leaf's path, each once.
    pub fn check_tree_sigs(
        &self,
        member: usize,
        sigs: &[NodePartial],
    ) -> Result<(), ContributionError> {
        let shape = self.batch.tree.shape();
        let range = self.batch.leaf_ranges.get(member).cloned().unwrap_or_default();
        let expected: usize = range.clone().map(|l| shape.path(l).map_or(0, |p| p.len())).sum();
        if sigs.len() != expected {
            return Err(ContributionError::WrongSet("count"));
        }
        let mut seen = Vec::with_capacity(sigs.len());
        for s in sigs {
            let (node, leaf) = (s.node as usize, s.leaf as usize);
            if !range.contains(&leaf) {
                return Err(ContributionError::WrongSet("not its leaf"));
            }
            let info = shape.nodes().get(node).ok_or(ContributionError::WrongSet("no node"))?;
            if !info.leaves.contains(&leaf) {
                return Err(ContributionError::WrongSet("leaf not under node"));
            }
            if seen.contains(&(node, leaf)) {
                return Err(ContributionError::WrongSet("repeated"));
            }
            seen.push((node, leaf));
        }
        Ok(())
    }

    /// Checks a member's deposit partial signatures: exactly one per own input.
    pub fn check_deposit_sigs(
        &self,
        member: usize,
        sigs: &[DepositPartial],
    ) -> Result<(), ContributionError> {
        let range = self.batch.input_ranges.get(member).cloned().unwrap_or_default();
        if sigs.len() != range.len() {
            return Err(ContributionError::WrongSet("count"));
        }
        let mut seen = Vec::with_capacity(sigs.len());
        for s in sigs {
            let input = s.input as usize;
            if !range.contains(&input) || seen.contains(&input) {
                return Err(ContributionError::WrongSet("not its input or repeated"));
            }
            seen.push(input);
        }
        Ok(())
    }

    /// Combines every node's signature from the members' tree partial signatures
    /// (`partials[node][slot]`, slot = leaf - first leaf of the node), aggregate-first,
    /// on rayon. On failure returns the registrations whose signatures were invalid.
    pub fn combine_tree(
        &self,
        partials: &[Vec<Option<PartialSignature>>],
    ) -> Result<Vec<schnorr::Signature>, Vec<u64>> {
        let results: Vec<Result<schnorr::Signature, Vec<usize>>> =
            (0..self.batch.tree.node_count())
                .into_par_iter()
                .map(|i| self.combine_node(i, partials.get(i).map_or(&[][..], Vec::as_slice)))
                .collect();
        let mut sigs = Vec::with_capacity(results.len());
        let mut culprits = Vec::new();
        for r in results {
            match r {
                Ok(sig) => sigs.push(sig),
                Err(leaves) => culprits.extend(
                    leaves
                        .into_iter()
                        .filter_map(|l| self.batch.leaf_member.get(l))
                        .map(|&m| self.members[m]),
                ),
            }
        }
        culprits.sort_unstable();
        culprits.dedup();
        if culprits.is_empty() {
            Ok(sigs)
        } else {
            Err(culprits)
        }
    }

    fn combine_node(
        &self,
        i: usize,
        partials: &[Option<PartialSignature>],
    ) -> Result<schnorr::Signature, Vec<usize>> {
        let tree = &self.batch.tree;
        let info = &tree.shape().nodes()[i];
        let Ok(node) = tree.node(i) else { return Err(Vec::new()) };
        let d = usize::from(info.depth) - 1;
        let mut contributions = Vec::with_capacity(info.leaves.len() + 1);
        let mut missing = Vec::new();
        for (slot, leaf) in info.leaves.clone().enumerate() {
            match partials.get(slot).copied().flatten() {
                Some(psig) => contributions.push(Contribution {
                    signer: tree.leaves()[leaf].cosigner,
                    pubnonce: self.leaf_nonces[leaf][d].clone(),
                    psig,
                }),
                None => missing.push(leaf),
            }
        }
        if !missing.is_empty() {
            return Err(missing);
        }
        let (nonce, psig) = &self.nodes.batch_partials[i];
        contributions.push(Contribution {
            signer: self.batch_key,
            pubnonce: nonce.clone(),
            psig: *psig,
        });
        match self.nodes.sessions[i].combine(&node.key, &contributions) {
            Ok(sig) => Ok(sig),
            Err(MusigError::InvalidPartials { signers }) => {
                Err(signers.into_iter().filter_map(|k| info.leaves.clone().nth(k)).collect())
            }
            Err(_) => Err(info.leaves.clone().collect()),
        }
    }

    /// The final signatures of every node on a member's paths.
    pub fn signed_tree_for(
        &self,
        member: usize,
        node_sigs: &[schnorr::Signature],
    ) -> Vec<NodeSignature> {
        self.batch
            .member_nodes(member)
            .into_iter()
            .filter_map(|n| node_sigs.get(n).map(|sig| NodeSignature { node: n as u32, sig: *sig }))
            .collect()
    }

    /// Every node transaction with its final signature.
    pub fn signed_nodes(&self, node_sigs: &[schnorr::Signature]) -> Vec<Transaction> {
        self.batch
            .tree
            .built_nodes()
            .map(|(i, node)| {
                let mut tx = node.tx.clone();
                if let Some(sig) = node_sigs.get(i) {
                    tx.input[0].witness = key_spend_witness(sig);
                }
                tx
            })
            .collect()
    }

    /// Signs C's share of every deposit input with the members' partial signatures
    /// (`partials[input]`), combines aggregate-first, and returns the complete funding
    /// transaction, or the registrations whose signatures were invalid. Consumes the
    /// coordinator's deposit secret nonces: a second call signs nothing.
    pub fn complete_funding(
        &mut self,
        partials: &[Option<PartialSignature>],
    ) -> Result<Transaction, Vec<u64>> {
        let secnonces: Vec<Option<SecNonce>> =
            self.coordinator_secnonces.iter_mut().map(Option::take).collect();
        let this = &*self;
        let results: Vec<Option<schnorr::Signature>> = secnonces
            .into_par_iter()
            .enumerate()
            .map(|(i, secnonce)| {
                this.sign_deposit(i, secnonce?, partials.get(i).copied().flatten()?)
            })
            .collect();
        let mut culprits = Vec::new();
        let mut tx = self.batch.funding.clone();
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Some(sig) => tx.input[i].witness = key_spend_witness(&sig),
                None => {
                    if let Some(m) = self.batch.input_ranges.iter().position(|r| r.contains(&i)) {
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

    fn sign_deposit(
        &self,
        i: usize,
        secnonce: SecNonce,
        psig_user: PartialSignature,
    ) -> Option<schnorr::Signature> {
        let (user, user_nonce) = &self.deposit_user[i];
        let coord_nonce = &self.coordinator_pubnonces[i];
        let agg = musig::nonce_agg(&[user_nonce.clone(), coord_nonce.clone()]).ok()?;
        let (ctx, msg) = (&self.deposit_ctx[i], &self.deposit_sighash[i]);
        // One session for signing and combining: its final nonce is computed once.
        let session = SigningSession::new(ctx, &agg, msg);
        let own = session.sign(ctx, &self.coordinator, secnonce).ok()?;
        let contributions = [
            Contribution { signer: *user, pubnonce: user_nonce.clone(), psig: psig_user },
            Contribution {
                signer: self.coordinator.point,
                pubnonce: coord_nonce.clone(),
                psig: own,
            },
        ];
        session.combine(ctx, &contributions).ok()
    }
}

/// The deposits' side of an attempt: MuSig2(U, C) contexts, sighashes and C's nonces.
struct Deposits {
    ctx: Vec<KeyAggContext>,
    sighash: Vec<[u8; 32]>,
    user: Vec<(Point, PubNonce)>,
    secnonces: Vec<SecNonce>,
    pubnonces: Vec<PubNonce>,
}

impl Deposits {
    fn prepare(
        members: &[&Member],
        built: &UnsignedBatch,
        coordinator: &Keypair,
        seed: &NonceSeed,
    ) -> Result<Deposits, BuildError> {
        let sighash = built.deposit_sighashes()?;
        let scripts: Vec<(&DepositScript, &PubNonce)> =
            members.iter().flat_map(|m| m.scripts.iter().zip(&m.deposit_nonces)).collect();
        let inputs = built.funding.input.len();
        if scripts.len() != inputs {
            return Err(BuildError::DepositNonces { nonces: scripts.len(), inputs });
        }
        let ctx = scripts
            .par_iter()
            .enumerate()
            .map(|(input, (s, _))| {
                s.signing_context().map_err(|error| BuildError::DepositContext { input, error })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let user = scripts.iter().map(|(s, n)| (s.musig_keys()[0], (*n).clone())).collect();
        let secnonces: Vec<SecNonce> = sighash
            .par_iter()
            .enumerate()
            .map(|(i, m)| {
                let (point, scalar) = (coordinator.point, coordinator.scalar());
                seed.secnonce(NoncePurpose::Deposit, i, &point, &scalar, m)
            })
            .collect();
        let pubnonces = secnonces.iter().map(|n| n.public_nonce()).collect();
        Ok(Deposits { ctx, sighash, user, secnonces, pubnonces })
    }
}
