//! The deterministic virtual-transaction tree of DESIGN 4: shape, node keys, node
//! transactions, sighashes and paths.
//!
//! A node covers a contiguous range of leaves. A range of at most `radix` leaves is
//! paid directly; a larger one is split into `radix` chunks as equal as possible (the
//! first `len % radix` one longer), one output per chunk: a one-leaf chunk is that
//! leaf's own output, a larger chunk is a child node. Nodes are numbered depth first
//! (pre-order), the root is node 0.
//!
//! Building is split in two because the funding transaction's txid depends on the
//! root key: [`TreePlan::new`] aggregates the node keys (on rayon) and gives the root
//! output; [`TreePlan::finish`] then builds the node transactions top-down once the
//! funding outpoint is known. A participant asks only for its own paths
//! ([`Scope::Paths`]) and aggregates only the keys those paths' outputs need.

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use bitcoin::absolute::LockTime;
use bitcoin::secp256k1::schnorr;
use bitcoin::transaction::Version;
use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::musig::{self, KeyAggCache, KeyAggContext, MusigError, Point};
use crate::params::{LeafOutput, TreeParams, RADIX_RANGE};
use crate::scripts::{anchor_output, key_spend_sighash, key_spend_witness, p2tr_key_only};

/// Errors building a tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    /// A batch needs at least one leaf.
    #[error("a batch needs at least one leaf")]
    EmptyBatch,
    /// The radix is outside 2..=16.
    #[error("radix {0} is outside 2..=16")]
    BadRadix(u8),
    /// A leaf pays less than its script's dust limit.
    #[error("leaf {index} pays {amount}, below the dust limit {dust} of its script")]
    DustLeaf {
        /// The leaf.
        index: usize,
        /// What it pays.
        amount: Amount,
        /// The dust limit of its script.
        dust: Amount,
    },
    /// More leaves than `radix^max_depth`.
    #[error("{leaves} leaves need more than max_depth {max_depth} levels at radix {radix}")]
    TooDeep {
        /// Leaves in the batch.
        leaves: usize,
        /// The radix.
        radix: u8,
        /// The largest depth allowed.
        max_depth: u8,
    },
    /// The leaves' amounts overflow.
    #[error("leaf amounts overflow")]
    AmountOverflow,
    /// A leaf index asked for is not in the batch.
    #[error("leaf {index} is not in a batch of {leaves}")]
    UnknownLeaf {
        /// The index.
        index: usize,
        /// Leaves in the batch.
        leaves: usize,
    },
    /// A node outside the computed scope was asked for.
    #[error("node {0} was not computed in this scope")]
    OutOfScope(usize),
    /// Key aggregation failed.
    #[error("node key: {0}")]
    Musig(#[from] MusigError),
    /// A node's sighash could not be computed.
    #[error("sighash of node {0}")]
    Sighash(usize),
}

/// One leaf as the tree pays it: the output and the cosigner key that signs its path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeLeaf {
    /// The output the leaf pays.
    pub output: LeafOutput,
    /// The fresh cosigner key of this leaf for this attempt.
    pub cosigner: Point,
}

/// What one output of a node pays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Child {
    /// A leaf's own output.
    Leaf(usize),
    /// A child node.
    Node(usize),
}

/// One node of the shape: its leaves, its parent and its outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeShape {
    /// The leaves under this node.
    pub leaves: Range<usize>,
    /// The parent node and the output of it this node spends (`None` for the root).
    pub parent: Option<(usize, u32)>,
    /// The outputs in order (the anchor, always last, is not listed).
    pub children: Vec<Child>,
    /// Transactions from the root to this one, counting both (the root is 1).
    pub depth: u8,
}

/// The structure of a tree: which node covers which leaves, independent of keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeShape {
    nodes: Vec<NodeShape>,
    /// For each leaf, the node that pays it and the output index.
    leaf_outputs: Vec<(usize, u32)>,
}

impl TreeShape {
    /// The shape for `leaves` leaves.
    pub fn new(leaves: usize, params: TreeParams) -> Result<Self, TreeError> {
        if leaves == 0 {
            return Err(TreeError::EmptyBatch);
        }
        if !RADIX_RANGE.contains(&params.radix) {
            return Err(TreeError::BadRadix(params.radix));
        }
        let radix = usize::from(params.radix);
        let depth = depth_for(leaves, radix);
        if depth > usize::from(params.max_depth) {
            return Err(TreeError::TooDeep {
                leaves,
                radix: params.radix,
                max_depth: params.max_depth,
            });
        }
        let mut shape = TreeShape { nodes: Vec::new(), leaf_outputs: vec![(0, 0); leaves] };
        shape.push_node(0..leaves, None, 1, radix);
        Ok(shape)
    }

    fn push_node(
        &mut self,
        leaves: Range<usize>,
        parent: Option<(usize, u32)>,
        depth: u8,
        r: usize,
    ) {
        let index = self.nodes.len();
        self.nodes.push(NodeShape { leaves: leaves.clone(), parent, children: Vec::new(), depth });
        let len = leaves.len();
        let mut children = Vec::with_capacity(len.min(r));
        if len <= r {
            for (vout, leaf) in leaves.enumerate() {
                self.leaf_outputs[leaf] = (index, vout as u32);
                children.push(Child::Leaf(leaf));
            }
        } else {
            let (base, extra) = (len / r, len % r);
            let mut start = leaves.start;
            for chunk in 0..r {
                let size = base + usize::from(chunk < extra);
                let vout = chunk as u32;
                if size == 1 {
                    self.leaf_outputs[start] = (index, vout);
                    children.push(Child::Leaf(start));
                } else {
                    children.push(Child::Node(self.nodes.len()));
                    self.push_node(start..start + size, Some((index, vout)), depth + 1, r);
                }
                start += size;
            }
        }
        self.nodes[index].children = children;
    }

    /// All nodes, depth first.
    pub fn nodes(&self) -> &[NodeShape] {
        &self.nodes
    }

    /// Number of leaves.
    pub fn leaf_count(&self) -> usize {
        self.leaf_outputs.len()
    }

    /// Transactions on the longest path.
    pub fn depth(&self) -> u8 {
        self.nodes.iter().map(|n| n.depth).max().unwrap_or(0)
    }

    /// The node paying `leaf` and the output index, if the leaf exists.
    pub fn leaf_output(&self, leaf: usize) -> Option<(usize, u32)> {
        self.leaf_outputs.get(leaf).copied()
    }

    /// The nodes from the root to the node paying `leaf`.
    pub fn path(&self, leaf: usize) -> Result<Vec<usize>, TreeError> {
        let (mut node, _) = self
            .leaf_output(leaf)
            .ok_or(TreeError::UnknownLeaf { index: leaf, leaves: self.leaf_count() })?;
        let mut path = vec![node];
        while let Some((parent, _)) = self.nodes[node].parent {
            path.push(parent);
            node = parent;
        }
        path.reverse();
        Ok(path)
    }
}

/// Transactions on the longest path for `n` leaves: `ceil(log_r n)`, one for `n <= r`.
fn depth_for(n: usize, r: usize) -> usize {
    let (mut depth, mut capacity) = (1usize, r);
    while capacity < n {
        depth += 1;
        capacity = capacity.saturating_mul(r);
    }
    depth
}

/// Which nodes to compute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every node (the coordinator).
    Full,
    /// Only the paths of these leaves (a participant).
    Paths(Vec<usize>),
}

/// A tree whose node keys are known, waiting for the funding outpoint.
#[derive(Debug, Clone)]
pub struct TreePlan {
    shape: Arc<TreeShape>,
    leaves: Arc<[TreeLeaf]>,
    batch_key: Point,
    /// Sum of leaf amounts under each node.
    amounts: Vec<Amount>,
    /// Node key contexts (tweaked, key path only); `None` outside the scope.
    keys: Vec<Option<Arc<KeyAggContext>>>,
    /// Nodes whose transactions the scope needs.
    tx_nodes: Vec<bool>,
}

impl TreePlan {
    /// Checks the leaves, lays out the shape and aggregates the keys `scope` needs.
    pub fn new(
        leaves: Arc<[TreeLeaf]>,
        batch_key: Point,
        params: TreeParams,
        scope: &Scope,
        cache: Option<&KeyAggCache>,
    ) -> Result<Self, TreeError> {
        let shape = Arc::new(TreeShape::new(leaves.len(), params)?);
        Self::with_shape(shape, leaves, batch_key, scope, cache)
    }

    /// As [`TreePlan::new`] with a shape already laid out for these leaves (shared by
    /// many participants of one batch in one process).
    pub fn with_shape(
        shape: Arc<TreeShape>,
        leaves: Arc<[TreeLeaf]>,
        batch_key: Point,
        scope: &Scope,
        cache: Option<&KeyAggCache>,
    ) -> Result<Self, TreeError> {
        let context =
            |i: usize| aggregate(&node_key_set(&shape.nodes[i], &leaves, &batch_key), cache);
        Self::build(Arc::clone(&shape), Arc::clone(&leaves), batch_key, scope, &context)
    }

    /// As [`TreePlan::with_shape`] over the memo's leaves, batch key and shape, taking
    /// each node's key context from the memo (computed there at most once, through
    /// `cache` when given).
    pub fn from_memo(
        memo: &NodeMemo,
        scope: &Scope,
        cache: Option<&KeyAggCache>,
    ) -> Result<Self, TreeError> {
        let context = |i: usize| memo.context(i, cache);
        Self::build(
            Arc::clone(&memo.shape),
            Arc::clone(&memo.leaves),
            memo.batch_key,
            scope,
            &context,
        )
    }

    fn build(
        shape: Arc<TreeShape>,
        leaves: Arc<[TreeLeaf]>,
        batch_key: Point,
        scope: &Scope,
        context: &(dyn Fn(usize) -> Result<Arc<KeyAggContext>, MusigError> + Sync),
    ) -> Result<Self, TreeError> {
        if shape.leaf_count() != leaves.len() {
            return Err(TreeError::UnknownLeaf { index: leaves.len(), leaves: shape.leaf_count() });
        }
        for (index, leaf) in leaves.iter().enumerate() {
            let dust = leaf.output.script_pubkey.minimal_non_dust();
            if leaf.output.amount < dust {
                return Err(TreeError::DustLeaf { index, amount: leaf.output.amount, dust });
            }
        }
        let mut prefix = Vec::with_capacity(leaves.len() + 1);
        prefix.push(Amount::ZERO);
        for leaf in leaves.iter() {
            let last = prefix.last().copied().unwrap_or(Amount::ZERO);
            prefix.push(last.checked_add(leaf.output.amount).ok_or(TreeError::AmountOverflow)?);
        }
        let amounts: Vec<Amount> =
            shape.nodes.iter().map(|n| prefix[n.leaves.end] - prefix[n.leaves.start]).collect();

        let count = shape.nodes.len();
        let (tx_nodes, key_nodes) = match scope {
            Scope::Full => (vec![true; count], vec![true; count]),
            Scope::Paths(own) => {
                let mut tx = vec![false; count];
                let mut key = vec![false; count];
                for &leaf in own {
                    for node in shape.path(leaf)? {
                        tx[node] = true;
                        key[node] = true;
                        for child in &shape.nodes[node].children {
                            if let Child::Node(c) = child {
                                key[*c] = true;
                            }
                        }
                    }
                }
                (tx, key)
            }
        };
        let keys = (0..count)
            .into_par_iter()
            .map(|i| if key_nodes[i] { context(i).map(Some) } else { Ok(None) })
            .collect::<Result<Vec<_>, MusigError>>()?;
        Ok(TreePlan { shape, leaves, batch_key, amounts, keys, tx_nodes })
    }

    /// The shape.
    pub fn shape(&self) -> &TreeShape {
        &self.shape
    }

    /// The output the funding transaction must create for the root (its output 0).
    pub fn root_output(&self) -> Result<TxOut, TreeError> {
        Ok(TxOut { value: self.amounts[0], script_pubkey: self.node_script(0)? })
    }

    fn node_script(&self, node: usize) -> Result<ScriptBuf, TreeError> {
        let key =
            self.keys.get(node).and_then(Option::as_ref).ok_or(TreeError::OutOfScope(node))?;
        Ok(p2tr_key_only(key))
    }

    fn outputs(&self, node: usize) -> Result<Vec<TxOut>, TreeError> {
        let mut outputs = Vec::with_capacity(self.shape.nodes[node].children.len() + 1);
        for child in &self.shape.nodes[node].children {
            outputs.push(match *child {
                Child::Leaf(l) => TxOut {
                    value: self.leaves[l].output.amount,
                    script_pubkey: self.leaves[l].output.script_pubkey.clone(),
                },
                Child::Node(c) => {
                    TxOut { value: self.amounts[c], script_pubkey: self.node_script(c)? }
                }
            });
        }
        outputs.push(anchor_output());
        Ok(outputs)
    }

    /// Builds the node transactions of the scope, top-down from `funding`.
    pub fn finish(self, funding: OutPoint) -> Result<Tree, TreeError> {
        let count = self.shape.nodes.len();
        let mut ids: Vec<usize> = Vec::new();
        let mut nodes: Vec<Node> = Vec::new();
        let find = |ids: &[usize], i: usize| ids.binary_search(&i).ok();
        // Pre-order numbering puts every parent before its children.
        for i in 0..count {
            if !self.tx_nodes[i] {
                continue;
            }
            let (previous_output, prevout) = match self.shape.nodes[i].parent {
                None => (funding, self.root_output()?),
                Some((parent, vout)) => {
                    let parent_node = find(&ids, parent)
                        .map(|k| &nodes[k])
                        .ok_or(TreeError::OutOfScope(parent))?;
                    let prevout = parent_node
                        .tx
                        .output
                        .get(vout as usize)
                        .cloned()
                        .ok_or(TreeError::OutOfScope(parent))?;
                    (OutPoint { txid: parent_node.txid, vout }, prevout)
                }
            };
            let tx = Transaction {
                version: Version(3),
                lock_time: LockTime::ZERO,
                input: vec![TxIn {
                    previous_output,
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::ZERO,
                    witness: Witness::new(),
                }],
                output: self.outputs(i)?,
            };
            let sighash = key_spend_sighash(&tx, 0, std::slice::from_ref(&prevout))
                .map_err(|_| TreeError::Sighash(i))?;
            let key = self.keys[i].clone().ok_or(TreeError::OutOfScope(i))?;
            ids.push(i);
            nodes.push(Node { txid: tx.compute_txid(), tx, prevout, key, sighash });
        }
        Ok(Tree { shape: self.shape, leaves: self.leaves, batch_key: self.batch_key, ids, nodes })
    }
}

/// A node's Taproot key context (key path only), through `cache` when given.
fn aggregate(set: &[Point], cache: Option<&KeyAggCache>) -> Result<Arc<KeyAggContext>, MusigError> {
    match cache {
        Some(cache) => cache.taproot_context(set, None),
        None => Ok(Arc::new(musig::taproot_context(set, None)?)),
    }
}

/// One batch's leaves, batch key and shape, with each node's key context computed at
/// most once. Many participants of one batch in one process (the simulator) share one
/// through their decoded proposal body: node `i`'s key set is a function of what the
/// memo holds, so the index alone names it, and a participant's plan skips gathering,
/// sorting and hashing thousands of keys per node only to find them in a cache.
#[derive(Debug)]
pub struct NodeMemo {
    shape: Arc<TreeShape>,
    leaves: Arc<[TreeLeaf]>,
    batch_key: Point,
    contexts: Vec<OnceLock<Arc<KeyAggContext>>>,
}

impl NodeMemo {
    /// An empty memo over these leaves, batch key and shape.
    pub fn new(shape: Arc<TreeShape>, leaves: Arc<[TreeLeaf]>, batch_key: Point) -> Self {
        let contexts = (0..shape.nodes.len()).map(|_| OnceLock::new()).collect();
        NodeMemo { shape, leaves, batch_key, contexts }
    }

    /// The tree's shape.
    pub fn shape(&self) -> &Arc<TreeShape> {
        &self.shape
    }

    /// Node `i`'s context (`i` below the shape's node count, as [`TreePlan::build`]
    /// asks), computed on first use: two threads racing both compute and the first to
    /// store wins; a failure is not stored.
    fn context(
        &self,
        i: usize,
        cache: Option<&KeyAggCache>,
    ) -> Result<Arc<KeyAggContext>, MusigError> {
        let slot = &self.contexts[i];
        if let Some(hit) = slot.get() {
            return Ok(Arc::clone(hit));
        }
        let ctx =
            aggregate(&node_key_set(&self.shape.nodes[i], &self.leaves, &self.batch_key), cache)?;
        Ok(Arc::clone(slot.get_or_init(|| ctx)))
    }
}

/// The cosigner keys of every leaf under `node` plus the batch key, unsorted.
pub fn node_key_set(node: &NodeShape, leaves: &[TreeLeaf], batch_key: &Point) -> Vec<Point> {
    let mut set = Vec::with_capacity(node.leaves.len() + 1);
    set.extend(leaves[node.leaves.clone()].iter().map(|l| l.cosigner));
    set.push(*batch_key);
    set
}

/// One built node: its transaction, the output it spends, its key and its sighash.
#[derive(Debug, Clone)]
pub struct Node {
    /// The unsigned transaction.
    pub tx: Transaction,
    /// Its txid.
    pub txid: Txid,
    /// The output it spends (the parent's output, or funding output 0).
    pub prevout: TxOut,
    /// The node's MuSig2 context (sorted key set, key-path Taproot tweak).
    pub key: Arc<KeyAggContext>,
    /// The Taproot key-path sighash every cosigner signs.
    pub sighash: [u8; 32],
}

/// A built tree (or the part of it a scope asked for: only those nodes are kept).
#[derive(Debug, Clone)]
pub struct Tree {
    shape: Arc<TreeShape>,
    leaves: Arc<[TreeLeaf]>,
    batch_key: Point,
    /// Indices of the built nodes, ascending; `nodes[k]` is node `ids[k]`.
    ids: Vec<usize>,
    nodes: Vec<Node>,
}

impl Tree {
    /// Builds every node: the coordinator's view. `funding` is called with the root
    /// output and returns the outpoint that will hold it.
    pub fn build(
        leaves: Arc<[TreeLeaf]>,
        batch_key: Point,
        params: TreeParams,
        cache: Option<&KeyAggCache>,
        funding: impl FnOnce(TxOut) -> OutPoint,
    ) -> Result<Tree, TreeError> {
        let plan = TreePlan::new(leaves, batch_key, params, &Scope::Full, cache)?;
        let outpoint = funding(plan.root_output()?);
        plan.finish(outpoint)
    }

    /// The shape.
    pub fn shape(&self) -> &TreeShape {
        &self.shape
    }

    /// The leaves.
    pub fn leaves(&self) -> &[TreeLeaf] {
        &self.leaves
    }

    /// The batch key `C_b`.
    pub fn batch_key(&self) -> Point {
        self.batch_key
    }

    /// Number of nodes in the whole tree.
    pub fn node_count(&self) -> usize {
        self.shape.nodes.len()
    }

    /// A built node.
    pub fn node(&self, index: usize) -> Result<&Node, TreeError> {
        self.ids
            .binary_search(&index)
            .ok()
            .and_then(|k| self.nodes.get(k))
            .ok_or(TreeError::OutOfScope(index))
    }

    /// The built nodes with their indices, in index order.
    pub fn built_nodes(&self) -> impl Iterator<Item = (usize, &Node)> {
        self.ids.iter().copied().zip(self.nodes.iter())
    }

    /// The sorted key set of a node (as its context holds it).
    pub fn key_set(&self, index: usize) -> Result<&[Point], TreeError> {
        Ok(self.node(index)?.key.pubkeys())
    }

    /// The nodes each leaf's cosigner key signs (its path).
    pub fn signed_by(&self, leaf: usize) -> Result<Vec<usize>, TreeError> {
        self.shape.path(leaf)
    }

    /// The path of `leaf` with signatures attached: fully signed transactions from
    /// the root down, ready to publish one level at a time.
    pub fn signed_path(
        &self,
        leaf: usize,
        sigs: &dyn Fn(usize) -> Option<schnorr::Signature>,
    ) -> Result<Vec<Transaction>, TreeError> {
        self.shape
            .path(leaf)?
            .into_iter()
            .map(|i| {
                let node = self.node(i)?;
                let sig = sigs(i).ok_or(TreeError::OutOfScope(i))?;
                let mut tx = node.tx.clone();
                tx.input[0].witness = key_spend_witness(&sig);
                Ok(tx)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Keypair;
    use proptest::prelude::*;

    fn leaves(n: usize, seed: u64) -> (Arc<[TreeLeaf]>, Point) {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
        let script =
            ScriptBuf::new_p2tr_tweaked(bitcoin::key::TweakedPublicKey::dangerous_assume_tweaked(
                Keypair::from_rng(&mut rng).xonly(),
            ));
        let leaves: Vec<TreeLeaf> = (0..n)
            .map(|i| TreeLeaf {
                output: LeafOutput {
                    script_pubkey: script.clone(),
                    amount: Amount::from_sat(10_000 + i as u64),
                },
                cosigner: Keypair::from_rng(&mut rng).point,
            })
            .collect();
        (leaves.into(), Keypair::from_rng(&mut rng).point)
    }

    #[test]
    fn shape_properties_hold_for_every_size_and_radix() {
        for radix in 2..=16u8 {
            for n in 1..=300usize {
                let params = TreeParams { radix, max_depth: 16 };
                let shape = TreeShape::new(n, params).unwrap();
                let expect = depth_for(n, radix as usize);
                assert_eq!(shape.depth() as usize, expect, "n={n} r={radix}");
                // ceil(log_r n) computed independently with integer powers.
                let mut k = 1;
                while (radix as usize).pow(k) < n {
                    k += 1;
                }
                assert_eq!(expect, k as usize);
                let mut seen = vec![0u32; n];
                for (i, node) in shape.nodes().iter().enumerate() {
                    assert!(node.children.len() <= radix as usize);
                    if !(n == 1 && i == 0) {
                        assert!(
                            node.children.len() >= 2,
                            "n={n} r={radix} node {i} has one output"
                        );
                    }
                    let covered: usize = node
                        .children
                        .iter()
                        .map(|c| match c {
                            Child::Leaf(_) => 1,
                            Child::Node(c) => shape.nodes()[*c].leaves.len(),
                        })
                        .sum();
                    assert_eq!(covered, node.leaves.len());
                    for c in &node.children {
                        if let Child::Leaf(l) = c {
                            seen[*l] += 1;
                        }
                    }
                }
                assert!(seen.iter().all(|&s| s == 1), "every leaf paid exactly once");
                for leaf in 0..n {
                    let path = shape.path(leaf).unwrap();
                    assert_eq!(path[0], 0);
                    assert!(path.len() <= expect);
                    for node in &path {
                        assert!(shape.nodes()[*node].leaves.contains(&leaf));
                    }
                }
            }
        }
    }

    #[test]
    fn errors_are_clear() {
        let p = TreeParams { radix: 4, max_depth: 2 };
        assert_eq!(TreeShape::new(0, p), Err(TreeError::EmptyBatch));
        assert!(TreeShape::new(16, p).is_ok());
        assert_eq!(
            TreeShape::new(17, p),
            Err(TreeError::TooDeep { leaves: 17, radix: 4, max_depth: 2 })
        );
        assert_eq!(
            TreeShape::new(5, TreeParams { radix: 1, max_depth: 8 }),
            Err(TreeError::BadRadix(1))
        );
        let (mut l, b) = leaves(3, 1);
        Arc::get_mut(&mut l).unwrap()[1].output.amount = Amount::from_sat(10);
        let err = TreePlan::new(l, b, TreeParams::default(), &Scope::Full, None).unwrap_err();
        assert!(matches!(err, TreeError::DustLeaf { index: 1, .. }));
    }

    fn check_tree(n: usize, radix: u8, seed: u64) {
        let (l, b) = leaves(n, seed);
        let params = TreeParams { radix, max_depth: 16 };
        let funding =
            OutPoint { txid: Txid::from_raw_hash(bitcoin::hashes::Hash::all_zeros()), vout: 0 };
        let tree = Tree::build(l.clone(), b, params, None, |_| funding).unwrap();
        for (i, node) in tree.built_nodes() {
            // Conservation: zero fee at every node.
            let out: Amount = node.tx.output.iter().map(|o| o.value).sum();
            assert_eq!(out, node.prevout.value, "node {i}");
            assert_eq!(node.tx.version, Version(3));
            assert_eq!(node.tx.input.len(), 1);
            assert_eq!(node.tx.input[0].sequence, Sequence::ZERO);
            assert_eq!(node.tx.output.last(), Some(&anchor_output()));
            // Key set: exactly the leaves under it plus the batch key.
            let mut expect = node_key_set(&tree.shape().nodes()[i], &l, &b);
            musig::key_sort(&mut expect);
            assert_eq!(tree.key_set(i).unwrap(), &expect[..]);
            if let Some((parent, vout)) = tree.shape().nodes()[i].parent {
                assert_eq!(
                    node.tx.input[0].previous_output,
                    OutPoint { txid: tree.node(parent).unwrap().txid, vout }
                );
            }
        }
        // A participant's scoped build gives the same transactions for its path.
        let own = vec![n / 2];
        let plan = TreePlan::new(l.clone(), b, params, &Scope::Paths(own.clone()), None).unwrap();
        let partial = plan.finish(funding).unwrap();
        for node in partial.shape().path(own[0]).unwrap() {
            assert_eq!(partial.node(node).unwrap().txid, tree.node(node).unwrap().txid);
            assert_eq!(partial.node(node).unwrap().sighash, tree.node(node).unwrap().sighash);
        }
        // Two participants' plans from one memo: the same transactions, and the second
        // finds the first's node contexts (the very same allocations).
        let shape = Arc::new(TreeShape::new(n, params).unwrap());
        let memo = NodeMemo::new(shape, l.clone(), b);
        let first = TreePlan::from_memo(&memo, &Scope::Paths(own.clone()), None).unwrap();
        let second = TreePlan::from_memo(&memo, &Scope::Paths(own.clone()), None).unwrap();
        let (first, second) = (first.finish(funding).unwrap(), second.finish(funding).unwrap());
        for node in first.shape().path(own[0]).unwrap() {
            assert_eq!(first.node(node).unwrap().txid, tree.node(node).unwrap().txid);
            assert!(Arc::ptr_eq(&first.node(node).unwrap().key, &second.node(node).unwrap().key));
        }
        // Same inputs, same txids.
        let again = Tree::build(l, b, params, None, |_| funding).unwrap();
        let ids = |t: &Tree| t.built_nodes().map(|(_, n)| n.txid).collect::<Vec<_>>();
        assert_eq!(ids(&tree), ids(&again));
    }

    #[test]
    fn small_trees_conserve_and_match_scoped_builds() {
        for (n, r) in [(1, 2), (2, 2), (5, 2), (17, 4), (40, 4), (40, 2), (33, 16)] {
            check_tree(n, r, n as u64);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn random_trees_conserve(n in 1usize..120, radix in 2u8..=16, seed in any::<u64>()) {
            check_tree(n, radix, seed);
        }
    }
}
