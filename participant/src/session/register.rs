//! The participant's in-memory secrets (cosigner keys, secret nonces) and the messages
//! built from them: the round-parameter check, `Register` and `Renonce`.
//!
//! Secret nonces are held as `Option<SecNonce>` and taken when they sign, so each is
//! used at most once; they never leave this process (no event carries them).

use bitcoin::secp256k1::{Message, SECP256K1};
use cohort_common::keys::Keypair;
use cohort_common::messages::{
    DepositRegistration, LeafNonces, LeafRequest, MessageError, Register, RegisterBody,
    RemainderRequest, Renonce, RoundAnnounce,
};
use cohort_common::musig::{Point, PubNonce, SecNonce};
use cohort_common::params::{MAX_DEPOSIT_CSV, RADIX_RANGE};
use musig2::SecNonceBuilder;
use rand::RngCore;

use super::{Randomness, SessionConfig};

/// Largest `max_depth` a participant accepts (nonces per leaf it must draw).
pub const MAX_ACCEPTED_DEPTH: u8 = 16;

/// Why a round announcement (or the session's own configuration) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// The parameters name another round than the announcement.
    #[error("announcement of round {announced} carries parameters of round {params}")]
    RoundMismatch {
        /// Round of the announcement.
        announced: u64,
        /// Round of its parameters.
        params: u64,
    },
    /// The radix is outside 2..=16.
    #[error("radix {0} is outside 2..=16")]
    BadRadix(u8),
    /// `max_depth` is zero or above [`MAX_ACCEPTED_DEPTH`].
    #[error("max_depth {0} is outside 1..=16")]
    BadMaxDepth(u8),
    /// The coordinator key differs from the one in a deposit's script.
    #[error("deposit {deposit}: its script's coordinator key is not the announced one")]
    CoordinatorKey {
        /// Index of the deposit.
        deposit: usize,
    },
    /// A deposit's timeout is above the round's (or the protocol's) maximum.
    #[error("deposit {deposit}: csv {csv} is above the maximum {max}")]
    DepositCsv {
        /// Index of the deposit.
        deposit: usize,
        /// Its timeout.
        csv: u16,
        /// The maximum accepted.
        max: u16,
    },
    /// The exit timeout is zero or above the protocol's maximum.
    #[error("exit csv {0} is outside 1..=28800")]
    ExitCsv(u16),
    /// The session has no deposit to register.
    #[error("no deposit to register")]
    NoDeposits,
    /// More deposits than the round accepts.
    #[error("{count} deposits exceed the round's maximum of {max}")]
    TooManyDeposits {
        /// Deposits configured.
        count: usize,
        /// The round's maximum.
        max: u16,
    },
    /// More fixed leaves than the round accepts.
    #[error("{count} leaves exceed the round's maximum of {max}")]
    TooManyLeaves {
        /// Leaves configured.
        count: usize,
        /// The round's maximum.
        max: u16,
    },
    /// A deposit's key, script and output do not belong together.
    #[error("deposit {deposit}: key, script and output do not match")]
    DepositMismatch {
        /// Index of the deposit.
        deposit: usize,
    },
    /// The ownership message could not be computed.
    #[error("ownership message: {0}")]
    Ownership(#[source] MessageError),
    /// No cosigner secret was drawn for the remainder leaf.
    #[error("no secret for the remainder leaf")]
    NoRemainderSecret,
}

/// Checks an announcement against the session's deposits before registering.
pub(super) fn check_announce(
    announce: &RoundAnnounce,
    config: &SessionConfig,
) -> Result<(), ParamsError> {
    let p = &announce.params;
    if p.round != announce.round {
        return Err(ParamsError::RoundMismatch { announced: announce.round, params: p.round });
    }
    if !RADIX_RANGE.contains(&p.tree.radix) {
        return Err(ParamsError::BadRadix(p.tree.radix));
    }
    if p.tree.max_depth == 0 || p.tree.max_depth > MAX_ACCEPTED_DEPTH {
        return Err(ParamsError::BadMaxDepth(p.tree.max_depth));
    }
    if p.exit_csv == 0 || p.exit_csv > MAX_DEPOSIT_CSV {
        return Err(ParamsError::ExitCsv(p.exit_csv));
    }
    if config.deposits.is_empty() {
        return Err(ParamsError::NoDeposits);
    }
    if config.deposits.len() > usize::from(p.max_deposits_per_registration) {
        return Err(ParamsError::TooManyDeposits {
            count: config.deposits.len(),
            max: p.max_deposits_per_registration,
        });
    }
    if config.leaves.len() > usize::from(p.max_leaves_per_registration) {
        return Err(ParamsError::TooManyLeaves {
            count: config.leaves.len(),
            max: p.max_leaves_per_registration,
        });
    }
    let max_csv = p.max_deposit_csv.min(MAX_DEPOSIT_CSV);
    for (deposit, d) in config.deposits.iter().enumerate() {
        if d.script.coordinator() != p.coordinator_key {
            return Err(ParamsError::CoordinatorKey { deposit });
        }
        if d.script.csv() > max_csv {
            return Err(ParamsError::DepositCsv { deposit, csv: d.script.csv(), max: max_csv });
        }
        if d.script.user() != d.key.public || d.script.script_pubkey() != d.txout.script_pubkey {
            return Err(ParamsError::DepositMismatch { deposit });
        }
    }
    Ok(())
}

/// A fresh secret nonce for `key`: a 32-byte seed from `rng`, with the secret key hashed
/// in as extra input (as `musig::new_secnonce` does), so a weak or repeated seed alone
/// does not give the same nonce for another key.
fn secnonce(rng: &mut Randomness, key: &Keypair) -> SecNonce {
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    SecNonceBuilder::from_pubkey(seed, key.point)
        .with_extra_input(&key.scalar().serialize())
        .build()
}

/// One leaf's fresh cosigner key and its `max_depth` secret nonces (number `depth - 1`
/// signs the node at that depth).
pub(super) struct LeafSecret {
    /// The cosigner key of this attempt.
    pub key: Keypair,
    /// Secret nonces, taken when used.
    pub nonces: Vec<Option<SecNonce>>,
    /// Their public nonces, in the same order.
    pub pubnonces: Vec<PubNonce>,
}

/// One deposit's secret nonce for the cooperative spend.
pub(super) struct DepositSecret {
    /// Taken when it signs.
    pub nonce: Option<SecNonce>,
    /// Its public nonce.
    pub pubnonce: PubNonce,
}

impl std::fmt::Debug for DepositSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DepositSecret").field("unused", &self.nonce.is_some()).finish()
    }
}

/// Every secret of one attempt: leaves (fixed in order, then the remainder) and deposits.
pub(super) struct Secrets {
    /// One per leaf, the remainder last.
    pub leaves: Vec<LeafSecret>,
    /// One per deposit, in configuration order.
    pub deposits: Vec<DepositSecret>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("leaves", &self.leaves.len())
            .field("deposits", &self.deposits.len())
            .finish_non_exhaustive()
    }
}

impl Secrets {
    /// Fresh cosigner keys and nonces for `leaves` leaves and a nonce per deposit, all
    /// drawn from `rng`.
    pub fn fresh(config: &SessionConfig, max_depth: u8, rng: &mut Randomness) -> Self {
        let leaf_count = config.leaves.len() + 1;
        let leaves = (0..leaf_count)
            .map(|_| {
                let key = Keypair::from_rng(rng);
                let nonces: Vec<SecNonce> = (0..max_depth).map(|_| secnonce(rng, &key)).collect();
                let pubnonces = nonces.iter().map(SecNonce::public_nonce).collect();
                LeafSecret { key, nonces: nonces.into_iter().map(Some).collect(), pubnonces }
            })
            .collect();
        let deposits = config
            .deposits
            .iter()
            .map(|d| {
                let nonce = secnonce(rng, &d.key);
                DepositSecret { pubnonce: nonce.public_nonce(), nonce: Some(nonce) }
            })
            .collect();
        Secrets { leaves, deposits }
    }

    /// The cosigner key of leaf `i` (the remainder is the last).
    pub fn cosigner(&self, i: usize) -> Option<Point> {
        self.leaves.get(i).map(|l| l.key.point)
    }

    /// The registration: body and ownership signatures (their auxiliary randomness
    /// from `rng`).
    pub fn register(
        &self,
        config: &SessionConfig,
        round: u64,
        challenge: &[u8; 32],
        rng: &mut Randomness,
    ) -> Result<Register, ParamsError> {
        let deposits = config
            .deposits
            .iter()
            .zip(&self.deposits)
            .map(|(d, s)| DepositRegistration {
                outpoint: d.outpoint,
                user_key: d.key.public,
                deposit_csv: d.script.csv(),
                nonce: s.pubnonce.clone(),
            })
            .collect();
        let leaves = config
            .leaves
            .iter()
            .zip(&self.leaves)
            .map(|(output, s)| LeafRequest {
                output: output.clone(),
                cosigner: s.key.point,
                nonces: s.pubnonces.clone(),
            })
            .collect();
        let Some(rem) = self.leaves.last() else {
            return Err(ParamsError::NoRemainderSecret);
        };
        let remainder = RemainderRequest {
            script_pubkey: config.remainder_script.clone(),
            cosigner: rem.key.point,
            nonces: rem.pubnonces.clone(),
        };
        let body = RegisterBody { round, deposits, leaves, remainder, max_fee: config.max_fee };
        let msg = body.ownership_message(challenge).map_err(ParamsError::Ownership)?;
        let msg = Message::from_digest(msg);
        let ownership_sigs = config
            .deposits
            .iter()
            .map(|d| {
                let kp = bitcoin::secp256k1::Keypair::from_secret_key(SECP256K1, &d.key.secret);
                let mut aux = [0u8; 32];
                rng.fill_bytes(&mut aux);
                SECP256K1.sign_schnorr_with_aux_rand(&msg, &kp, &aux)
            })
            .collect();
        Ok(Register { body, ownership_sigs })
    }

    /// The answer to a nonce request: the fresh keys and public nonces.
    pub fn renonce(&self, batch: u32, attempt: u32) -> Renonce {
        Renonce {
            batch,
            attempt,
            leaves: self
                .leaves
                .iter()
                .map(|l| LeafNonces { cosigner: l.key.point, nonces: l.pubnonces.clone() })
                .collect(),
            deposit_nonces: self.deposits.iter().map(|d| d.pubnonce.clone()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::{Amount, ScriptBuf};

    fn config() -> SessionConfig {
        SessionConfig {
            deposits: Vec::new(),
            leaves: Vec::new(),
            remainder_script: ScriptBuf::new(),
            max_fee: Amount::ZERO,
            limits: Default::default(),
        }
    }

    fn public(secrets: &Secrets) -> Vec<(Point, Vec<PubNonce>)> {
        secrets.leaves.iter().map(|l| (l.key.point, l.pubnonces.clone())).collect()
    }

    #[test]
    fn one_seed_gives_the_same_secrets_and_every_draw_is_fresh() {
        let seeded = |seed| {
            let mut rng = Randomness::seeded([seed; 32]);
            (Secrets::fresh(&config(), 4, &mut rng), Secrets::fresh(&config(), 4, &mut rng))
        };
        let (a1, a2) = seeded(1);
        let (b1, _) = seeded(1);
        let (c1, _) = seeded(2);
        assert_eq!(public(&a1), public(&b1), "same seed, same keys and nonces");
        assert_ne!(public(&a1), public(&c1), "another seed, other keys and nonces");
        assert_ne!(public(&a1), public(&a2), "the next attempt draws fresh secrets");
        let nonces: std::collections::HashSet<_> =
            a1.leaves[0].pubnonces.iter().map(|n| n.serialize()).collect();
        assert_eq!(nonces.len(), 4, "no nonce repeats within an attempt");
        let (o1, o2) = (
            Secrets::fresh(&config(), 4, &mut Randomness::os()),
            Secrets::fresh(&config(), 4, &mut Randomness::os()),
        );
        assert_ne!(public(&o1), public(&o2), "the OS source never repeats");
    }
}
