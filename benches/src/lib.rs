//! Deterministic fixtures shared by the criterion benchmarks in `benches/`: seeded
//! leaves, keys, nonces, signed nodes, registrations and proposals.
//!
//! Every fixture is a pure function of its size (each kind of fixture has its own seed),
//! so two runs, and two benchmarks of the same size, measure the same inputs.
//!
//! # Layout
//!
//! - [`Batch`]: the leaves and batch key of a tree of `n` leaves.
//! - [`keypairs`], [`pubnonces`]: seeded signer keys and their public nonces.
//! - [`SignedNode`]: one node's complete signing session, ready to combine.
//! - [`funding_requests`], [`coordinator_script`]: registrations to price.
//! - [`proposal_body`], [`proposal`]: the batch-wide body and one participant's message.

use std::sync::Arc;

use cohort_common::bitcoin::hashes::Hash as _;
use cohort_common::bitcoin::key::TweakedPublicKey;
use cohort_common::bitcoin::{Amount, OutPoint, ScriptBuf, TxOut, Txid};
use cohort_common::codec::{CodecError, Encoded};
use cohort_common::fees::{self, FeeError, FundingRequest};
use cohort_common::keys::Keypair;
use cohort_common::messages::{NodeNonce, Proposal, ProposalBody, ToParticipant};
use cohort_common::musig::{
    self, AggNonce, Contribution, KeyAggContext, MusigError, Point, PubNonce,
};
use cohort_common::params::{FeeSchedule, LeafOutput, TreeParams};
use cohort_common::tree::{Scope, TreeError, TreeLeaf, TreePlan, TreeShape};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

/// Batch sizes (leaves, or registrations) every per-batch benchmark runs over.
pub const BATCH_SIZES: [usize; 3] = [100, 1000, 1700];

/// Signers per node of the `combine` benchmark.
pub const SIGNER_COUNTS: [usize; 3] = [10, 100, 1000];

/// The tree shape benchmarked: radix 4, at most 8 levels (DESIGN's defaults).
pub const TREE_PARAMS: TreeParams = TreeParams { radix: 4, max_depth: 8 };

/// Amount of leaf `i`: distinct, above dust.
const LEAF_BASE_SAT: u64 = 10_000;
/// Value of each registration's single deposit.
const DEPOSIT_SAT: u64 = 100_000;
/// What each registration asks the tree to pay (besides its remainder).
const REQUESTED_SAT: u64 = 50_000;
/// Largest fee each registration accepts.
const MAX_FEE_SAT: u64 = 10_000;

/// Seeds, one per kind of fixture, mixed with the size.
const SEED_LEAVES: u64 = 0x6c65_6176_6573;
const SEED_SIGNERS: u64 = 0x7369_676e;
const SEED_NONCES: u64 = 0x6e6f_6e63;
const SEED_FUNDING: u64 = 0x6675_6e64;

/// Errors building a fixture (a bug in the fixture or in the code it exercises).
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// Building the tree or its plan failed.
    #[error("tree fixture: {0}")]
    Tree(#[from] TreeError),
    /// Key aggregation, nonce aggregation or signing failed.
    #[error("musig fixture: {0}")]
    Musig(#[from] MusigError),
    /// Pricing the funding transaction failed.
    #[error("funding fixture: {0}")]
    Fees(#[from] FeeError),
    /// Encoding the proposal body failed.
    #[error("codec fixture: {0}")]
    Codec(#[from] CodecError),
    /// A leaf index asked for is not in the batch.
    #[error("leaf {leaf} is not in a batch of {leaves}")]
    NoSuchLeaf {
        /// The index asked for.
        leaf: usize,
        /// Leaves in the batch.
        leaves: usize,
    },
    /// A signer count of zero was asked for.
    #[error("a signing session needs at least one signer")]
    NoSigners,
}

fn rng(seed: u64, n: usize) -> StdRng {
    StdRng::seed_from_u64(seed ^ (n as u64).rotate_left(32))
}

/// A key-path-only P2TR scriptPubKey of a fresh seeded key (34 bytes, as every leaf is).
fn p2tr_script(rng: &mut StdRng) -> ScriptBuf {
    ScriptBuf::new_p2tr_tweaked(TweakedPublicKey::dangerous_assume_tweaked(
        Keypair::from_rng(rng).xonly(),
    ))
}

/// The leaves and batch key of one batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Every leaf: a distinct P2TR output and a distinct cosigner key.
    pub leaves: Arc<[TreeLeaf]>,
    /// The coordinator's per-batch key `C_b`.
    pub batch_key: Point,
    /// The tree shape ([`TREE_PARAMS`]).
    pub params: TreeParams,
}

impl Batch {
    /// The batch of `n` leaves (seeded by `n`).
    pub fn new(n: usize) -> Self {
        let mut rng = rng(SEED_LEAVES, n);
        let leaves: Vec<TreeLeaf> = (0..n)
            .map(|i| TreeLeaf {
                output: LeafOutput {
                    script_pubkey: p2tr_script(&mut rng),
                    amount: Amount::from_sat(LEAF_BASE_SAT + i as u64),
                },
                cosigner: Keypair::from_rng(&mut rng).point,
            })
            .collect();
        Batch {
            leaves: leaves.into(),
            batch_key: Keypair::from_rng(&mut rng).point,
            params: TREE_PARAMS,
        }
    }

    /// Number of leaves.
    pub fn len(&self) -> usize {
        self.leaves.len()
    }

    /// Whether the batch has no leaves.
    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }

    /// The tree's shape.
    pub fn shape(&self) -> Result<TreeShape, FixtureError> {
        Ok(TreeShape::new(self.len(), self.params)?)
    }

    /// The key set of every node (cosigners under it plus the batch key), depth first.
    pub fn node_key_sets(&self) -> Result<Vec<Vec<Point>>, FixtureError> {
        Ok(self
            .shape()?
            .nodes()
            .iter()
            .map(|node| cohort_common::tree::node_key_set(node, &self.leaves, &self.batch_key))
            .collect())
    }

    /// The leaf whose paths a participant scope asks for: the middle one.
    pub fn scoped_leaf(&self) -> usize {
        self.len() / 2
    }
}

/// The outpoint the benchmarks pretend holds the root output.
pub fn funding_outpoint() -> OutPoint {
    OutPoint { txid: Txid::from_byte_array([0xf0; 32]), vout: 0 }
}

/// `n` seeded key pairs (the same `n` always gives the same keys).
pub fn keypairs(n: usize) -> Vec<Keypair> {
    let mut rng = rng(SEED_SIGNERS, n);
    (0..n).map(|_| Keypair::from_rng(&mut rng)).collect()
}

/// One seeded public nonce per signer.
pub fn pubnonces(signers: &[Point]) -> Vec<PubNonce> {
    let mut rng = rng(SEED_NONCES, signers.len());
    signers.iter().map(|p| musig::secnonce_from_seed(rng.gen(), p).public_nonce()).collect()
}

/// One node's complete signing session: everything `combine` needs.
#[derive(Debug, Clone)]
pub struct SignedNode {
    /// The node's Taproot key context (sorted keys, key-path tweak).
    pub ctx: KeyAggContext,
    /// The sum of every signer's public nonce.
    pub agg_nonce: AggNonce,
    /// The sighash signed.
    pub message: [u8; 32],
    /// One valid contribution per key of `ctx`.
    pub contributions: Vec<Contribution>,
}

impl SignedNode {
    /// A node of `n` seeded signers, each with a valid partial signature.
    pub fn new(n: usize) -> Result<Self, FixtureError> {
        if n == 0 {
            return Err(FixtureError::NoSigners);
        }
        let signers = keypairs(n);
        let points: Vec<Point> = signers.iter().map(|k| k.point).collect();
        let ctx = musig::taproot_context(&points, None)?;
        let mut rng = rng(SEED_NONCES, n);
        let secnonces: Vec<_> =
            points.iter().map(|p| musig::secnonce_from_seed(rng.gen(), p)).collect();
        let nonces: Vec<PubNonce> = secnonces.iter().map(|s| s.public_nonce()).collect();
        let agg_nonce = musig::nonce_agg(&nonces)?;
        let message: [u8; 32] = rng.gen();
        let contributions = signers
            .iter()
            .zip(secnonces)
            .zip(nonces)
            .map(|((signer, secnonce), pubnonce)| {
                let psig = musig::sign_partial(&ctx, signer, secnonce, &agg_nonce, &message)?;
                Ok(Contribution { signer: signer.point, pubnonce, psig })
            })
            .collect::<Result<Vec<_>, MusigError>>()?;
        Ok(SignedNode { ctx, agg_nonce, message, contributions })
    }
}

/// `n` registrations of one deposit each, asking for one fixed leaf plus the remainder.
pub fn funding_requests(n: usize) -> Vec<FundingRequest> {
    let mut rng = rng(SEED_FUNDING, n);
    (0..n)
        .map(|_| {
            let deposit =
                OutPoint { txid: Txid::from_byte_array(rng.gen()), vout: rng.gen_range(0..4) };
            let output = TxOut {
                value: Amount::from_sat(DEPOSIT_SAT),
                script_pubkey: p2tr_script(&mut rng),
            };
            FundingRequest {
                deposits: vec![(deposit, output)],
                requested: Amount::from_sat(REQUESTED_SAT),
                remainder_script: p2tr_script(&mut rng),
                max_fee: Amount::from_sat(MAX_FEE_SAT),
            }
        })
        .collect()
}

/// The coordinator's service-fee output script.
pub fn coordinator_script() -> ScriptBuf {
    p2tr_script(&mut rng(SEED_FUNDING, 0))
}

/// The proposal body of `batch`: its funding transaction (one input per request, output
/// 0 the tree's root), the prevouts, every leaf, the batch key and the tree shape.
pub fn proposal_body(
    batch: &Batch,
    requests: &[FundingRequest],
) -> Result<ProposalBody, FixtureError> {
    // The root key is aggregated for any scope; one leaf's scope is the cheapest way to it.
    let plan = TreePlan::new(
        Arc::clone(&batch.leaves),
        batch.batch_key,
        batch.params,
        &Scope::Paths(vec![0]),
        None,
    )?;
    let coordinator = coordinator_script();
    let funding = fees::plan_funding(requests, &FeeSchedule::default(), &coordinator)?;
    let funding_tx = fees::funding_tx(requests, &funding, plan.root_output()?, &coordinator);
    Ok(ProposalBody {
        round: 1,
        batch: 0,
        attempt: 0,
        funding_tx,
        funding_prevouts: requests
            .iter()
            .flat_map(|r| r.deposits.iter().map(|(_, out)| out.clone()))
            .collect(),
        leaves: batch.leaves.to_vec(),
        batch_key: batch.batch_key,
        tree: batch.params,
    })
}

/// The proposal the owner of `leaf` receives: the shared encoded body, its leaf, one
/// aggregated nonce per node of its path and its deposit's input and coordinator nonce.
pub fn proposal(
    batch: &Batch,
    body: &Encoded<ProposalBody>,
    leaf: usize,
) -> Result<ToParticipant, FixtureError> {
    let path = batch.shape()?.path(leaf)?;
    let signers: Vec<Point> = batch
        .leaves
        .get(leaf)
        .map(|l| vec![l.cosigner, batch.batch_key])
        .ok_or(FixtureError::NoSuchLeaf { leaf, leaves: batch.len() })?;
    let nonces = pubnonces(&signers);
    let nonce = musig::nonce_agg(&nonces)?;
    Ok(ToParticipant::Proposal(Proposal {
        body: body.clone(),
        your_leaves: vec![leaf as u32],
        node_nonces: path
            .into_iter()
            .map(|node| NodeNonce { node: node as u32, nonce: nonce.clone() })
            .collect(),
        deposit_inputs: vec![leaf as u32],
        coordinator_deposit_nonces: nonces.into_iter().take(1).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_common::codec;
    use cohort_common::tree::Tree;

    #[test]
    fn fixtures_are_deterministic_and_distinct() {
        let (a, b) = (Batch::new(20), Batch::new(20));
        assert_eq!(a.leaves, b.leaves);
        assert_eq!(a.batch_key, b.batch_key);
        assert_ne!(Batch::new(21).leaves[..20], a.leaves[..]);
        let mut cosigners: Vec<_> = a.leaves.iter().map(|l| l.cosigner.serialize()).collect();
        cosigners.sort_unstable();
        cosigners.dedup();
        assert_eq!(cosigners.len(), 20);
        assert_eq!(keypairs(5)[4].point, keypairs(5)[4].point);
        assert_eq!(funding_requests(7), funding_requests(7));
    }

    #[test]
    fn batch_builds_and_scoped_plan_matches_full_tree() {
        let batch = Batch::new(40);
        let tree =
            Tree::build(Arc::clone(&batch.leaves), batch.batch_key, batch.params, None, |_| {
                funding_outpoint()
            })
            .unwrap();
        assert_eq!(tree.node_count(), batch.node_key_sets().unwrap().len());
        let leaf = batch.scoped_leaf();
        let scoped = TreePlan::new(
            Arc::clone(&batch.leaves),
            batch.batch_key,
            batch.params,
            &Scope::Paths(vec![leaf]),
            None,
        )
        .unwrap()
        .finish(funding_outpoint())
        .unwrap();
        for node in tree.signed_by(leaf).unwrap() {
            assert_eq!(scoped.node(node).unwrap().txid, tree.node(node).unwrap().txid);
        }
    }

    #[test]
    fn signed_node_combines_both_ways() {
        let node = SignedNode::new(5).unwrap();
        let fast =
            musig::combine(&node.ctx, &node.agg_nonce, &node.message, &node.contributions).unwrap();
        let slow = musig::combine_verify_each(
            &node.ctx,
            &node.agg_nonce,
            &node.message,
            &node.contributions,
        )
        .unwrap();
        assert_eq!(fast, slow);
        assert!(musig::verify_schnorr(&fast, &node.message, &musig::output_key(&node.ctx)));
        assert!(matches!(SignedNode::new(0), Err(FixtureError::NoSigners)));
    }

    #[test]
    fn funding_prices_and_proposal_round_trips() {
        let batch = Batch::new(12);
        let requests = funding_requests(12);
        let body = proposal_body(&batch, &requests).unwrap();
        assert_eq!(body.funding_tx.input.len(), 12);
        assert_eq!(body.funding_prevouts.len(), 12);
        let encoded = Encoded::new(&body).unwrap();
        assert_eq!(encoded.decode(1 << 20).unwrap(), body);
        let msg = proposal(&batch, &encoded, 11).unwrap();
        let frame = codec::encode_frame(&msg, u32::MAX).unwrap();
        let decoded: ToParticipant =
            codec::decode(&frame[codec::FRAME_HEADER_LEN..], 1 << 20).unwrap();
        assert_eq!(decoded, msg);
        assert!(frame.len() > encoded.len());
        assert!(matches!(proposal(&batch, &encoded, 12), Err(FixtureError::Tree(_))));
    }
}
