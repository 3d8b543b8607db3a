//! Read-mostly caches shared by many participants living in one process (the
//! simulator): node key contexts and decoded proposal bodies (each with its tree's node
//! contexts).
//!
//! Sharing is safe because everything cached is a pure function of its key: a key
//! context of the exact sorted key set, a decoded body of the exact body bytes. Each
//! participant still runs every check of its own (its key in every set, its leaves).

use std::sync::Arc;

use bitcoin::Txid;
use cohort_common::codec::{CodecError, Encoded};
use cohort_common::messages::{ProposalBody, TreeLeaf};
use cohort_common::musig::KeyAggCache;
use cohort_common::params::DEFAULT_MAX_FRAME;
use cohort_common::tree::{NodeMemo, TreeShape};
use dashmap::DashMap;
use sha2::{Digest, Sha256};

/// Largest body a proposal may decode to, in bytes: the frame limit.
pub const BODY_DECODE_LIMIT: usize = DEFAULT_MAX_FRAME as usize;

/// A proposal body decoded once: the body (with its leaves moved out), the leaves
/// shared as the tree wants them, and the funding transaction's locally computed txid.
#[derive(Debug)]
pub struct DecodedBody {
    /// The body; its `leaves` are empty (they live in [`DecodedBody::leaves`]).
    pub body: ProposalBody,
    /// Every leaf of the tree, in order.
    pub leaves: Arc<[TreeLeaf]>,
    /// `body.funding_tx.compute_txid()`.
    pub funding_txid: Txid,
    /// The tree's shape and node key contexts, each context computed at most once for
    /// every participant sharing this decoded body; `None` when the body's parameters
    /// allow no tree (the checks report why).
    pub memo: Option<NodeMemo>,
}

impl DecodedBody {
    /// Decodes and splits a body.
    pub fn decode(encoded: &Encoded<ProposalBody>) -> Result<Self, CodecError> {
        let mut body = encoded.decode(BODY_DECODE_LIMIT)?;
        let leaves: Arc<[TreeLeaf]> = std::mem::take(&mut body.leaves).into();
        let funding_txid = body.funding_tx.compute_txid();
        let memo = TreeShape::new(leaves.len(), body.tree)
            .ok()
            .map(|shape| NodeMemo::new(Arc::new(shape), Arc::clone(&leaves), body.batch_key));
        Ok(DecodedBody { body, leaves, funding_txid, memo })
    }
}

/// Shared caches for many participants in one process: node key contexts and decoded
/// proposal bodies keyed by the SHA-256 of the body bytes, with a fast path when the
/// body's shared bytes are the very allocation already cached (the cached `Encoded`
/// keeps that allocation alive, so its address cannot be reused by another body).
pub struct SharedCaches {
    keys: KeyAggCache,
    /// Final node signatures already verified: SHA-256 of key ‖ message ‖ signature.
    verified: DashMap<[u8; 32], ()>,
    by_hash: DashMap<[u8; 32], Arc<DecodedBody>>,
    by_ptr: DashMap<(usize, usize), (Encoded<ProposalBody>, Arc<DecodedBody>)>,
}

impl std::fmt::Debug for SharedCaches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCaches")
            .field("keys", &self.keys.len())
            .field("bodies", &self.by_hash.len())
            .finish()
    }
}

impl Default for SharedCaches {
    fn default() -> Self {
        Self::new()
    }
}

impl SharedCaches {
    /// Empty caches.
    pub fn new() -> Self {
        SharedCaches {
            keys: KeyAggCache::new(),
            verified: DashMap::new(),
            by_hash: DashMap::new(),
            by_ptr: DashMap::new(),
        }
    }

    /// The key-context cache.
    pub fn keys(&self) -> &KeyAggCache {
        &self.keys
    }

    /// Number of distinct bodies decoded.
    pub fn bodies(&self) -> usize {
        self.by_hash.len()
    }

    /// Drops every cached body and verified signature (key contexts stay); call
    /// between rounds.
    pub fn clear_bodies(&self) {
        self.by_ptr.clear();
        self.by_hash.clear();
        self.verified.clear();
    }

    /// Verifies a BIP-340 signature, at most once per exact (key, message, signature)
    /// in this process: a pure function, so sharing the answer changes nothing.
    pub fn verify_schnorr(
        &self,
        sig: &bitcoin::secp256k1::schnorr::Signature,
        message: &[u8; 32],
        key: &bitcoin::XOnlyPublicKey,
    ) -> bool {
        let id: [u8; 32] = Sha256::new()
            .chain_update(key.serialize())
            .chain_update(message)
            .chain_update(sig.as_ref())
            .finalize()
            .into();
        if self.verified.contains_key(&id) {
            return true;
        }
        let ok = cohort_common::musig::verify_schnorr(sig, message, key);
        if ok {
            self.verified.insert(id, ());
        }
        ok
    }

    /// The decoded body of `encoded`, decoded at most once per distinct bytes.
    pub fn decoded(&self, encoded: &Encoded<ProposalBody>) -> Result<Arc<DecodedBody>, CodecError> {
        let ptr = (encoded.bytes().as_ptr() as usize, encoded.len());
        if let Some(hit) = self.by_ptr.get(&ptr) {
            return Ok(Arc::clone(&hit.value().1));
        }
        let hash: [u8; 32] = Sha256::digest(encoded.bytes()).into();
        if let Some(hit) = self.by_hash.get(&hash) {
            // Same bytes in another allocation (each arrived over its own connection):
            // answer from the cache without keeping this copy alive.
            return Ok(Arc::clone(hit.value()));
        }
        let fresh = Arc::new(DecodedBody::decode(encoded)?);
        let decoded = Arc::clone(self.by_hash.entry(hash).or_insert(fresh).value());
        // The first allocation seen is the one an in-process network shares among all
        // participants: remember it so they skip hashing.
        self.by_ptr.entry(ptr).or_insert_with(|| (encoded.clone(), Arc::clone(&decoded)));
        Ok(decoded)
    }
}
