//! The participant's in-memory secrets (cosigner keys, secret nonces) and the messages
//! built from them: the round-parameter check, `Register` and `Renonce`.
//!
//! Secret nonces are held as `Option<SecNonce>` and taken when they sign, so each is
//! used at most once; they never leave this process (no event carries them).

use bitcoin::secp256k1::{Message, SECP256K1};
use cohort_common::keys::Keypair;
use cohort_common::messages::{
    DepositRegistration, LeafNonces, LeafRequest, MessageError, ParamsError as RoundParamsError,
    Register, RegisterBody, RemainderRequest, Renonce, RoundAnnounce, ShapeError,
};
use cohort_common::musig::{Point, PubNonce, SecNonce};
use cohort_common::params::MAX_DEPOSIT_CSV;
use musig2::SecNonceBuilder;
use rand::RngCore;

use super::{Randomness, SessionConfig};

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
    /// A round parameter is outside the range the protocol accepts (the same check the
    /// coordinator's own configuration passed).
    #[error("round parameters: {0}")]
    Round(#[from] RoundParamsError),
    /// The session's deposits or leaves do not fit the round (counted as the coordinator
    /// counts them: the remainder is a leaf).
    #[error("registration: {0}")]
    Shape(#[from] ShapeError),
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
    p.validate()?;
    p.check_registration_shape(config.deposits.len(), config.leaves.len())?;
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

    #[test]
    fn an_announce_outside_the_protocol_ranges_is_refused_and_the_remainder_is_a_leaf() {
        use super::super::OwnedDeposit;
        use cohort_common::messages::RoundParams;
        use cohort_common::params::{FeeSchedule, TreeParams, DEFAULT_EXIT_CSV};
        use cohort_common::scripts::DepositScript;

        let coordinator = Keypair::random();
        let user = Keypair::random();
        let script = DepositScript::new(user.public, coordinator.public, 1_000).unwrap();
        let txout = bitcoin::TxOut {
            value: Amount::from_sat(100_000),
            script_pubkey: script.script_pubkey(),
        };
        let deposit =
            OwnedDeposit { outpoint: bitcoin::OutPoint::null(), txout, script, key: user };
        let leaf = cohort_common::params::LeafOutput {
            script_pubkey: ScriptBuf::new(),
            amount: Amount::from_sat(50_000),
        };
        let config = SessionConfig { deposits: vec![deposit], leaves: vec![leaf], ..config() };
        let announce = |tree, max_leaves| RoundAnnounce {
            round: 1,
            attempt: 1,
            params: RoundParams {
                round: 1,
                tree,
                fees: FeeSchedule::default(),
                coordinator_key: coordinator.public,
                exit_csv: DEFAULT_EXIT_CSV,
                max_deposit_csv: MAX_DEPOSIT_CSV,
                min_confs: 1,
                safety_margin: 10,
                max_leaves_per_registration: max_leaves,
                max_deposits_per_registration: 1,
                max_batch_weight: 400_000,
                registration_closes_ms: 1_000,
                phase_timeout_ms: 1_000,
                max_attempts: 3,
            },
            challenge: [0; 32],
        };
        let good = TreeParams { radix: 4, max_depth: 4 };
        assert_eq!(check_announce(&announce(good, 2), &config), Ok(()));
        let wide = TreeParams { radix: 17, max_depth: 4 };
        let out_of_range =
            RoundParamsError::OutOfRange { name: "radix", value: 17, min: 2, max: 16 };
        assert_eq!(
            check_announce(&announce(wide, 2), &config),
            Err(ParamsError::Round(out_of_range))
        );
        // One leaf and the remainder are two, as the coordinator counts them.
        assert_eq!(
            check_announce(&announce(good, 1), &config),
            Err(ParamsError::Shape(ShapeError::TooManyLeaves { count: 2, max: 1 }))
        );
    }
}
