//! The real coordinator engine (`cohort_coordinator::engine::Coordinator`) driving real
//! sessions over the embedded regtest ledger, one step at a time: what the engine sends
//! is held per participant and delivered when the test says so, through a tamper hook
//! that may change any message per recipient. A test can also take the engine's batch
//! apart ([`Batch`]), change its body, and deliver that instead.
//!
//! One attack is out of the engine's reach: a *coherent* malicious batch whose funding
//! transaction is changed before the tree is built on its txid (the tree, root output
//! and node nonces must follow the tampered txid, under a batch key the test holds).
//! [`Kit::build_batch_with`] builds that one locally, with `common::batch`'s pricing and
//! the test's own batch key, and [`Kit::combine_tree`]/[`Kit::complete_funding`] sign it.
//!
//! Shared with `participant/tests/malicious_coordinator.rs` and `attacks.rs` (included
//! there by path), so it names the session's types through `super::` only.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::secp256k1::schnorr;
use bitcoin::{Amount, OutPoint, ScriptBuf, Transaction, TxOut};
use cohort_common::chain::Chain;
use cohort_common::codec::Encoded;
use cohort_common::exit::{cpfp_child, p2tr_single, FeeInput};
use cohort_common::fees::{funding_tx, plan_funding, FundingRequest};
use cohort_common::keys::Keypair;
use cohort_common::ledger::Ledger;
use cohort_common::messages::{
    DepositSigs, NodeNonce, NodeSignature, Proposal, ProposalBody, Register, RoundParams,
    SignedTree, ToCoordinator, ToParticipant, TreeLeaf, TreeSigs,
};
use cohort_common::musig::{self, AggNonce, Contribution, PubNonce, SecNonce};
use cohort_common::params::{FeeSchedule, LeafOutput, TreeParams};
use cohort_common::scripts::{key_spend_sighash, key_spend_witness, DepositScript};
use cohort_common::tree::Tree;
use cohort_coordinator::engine::{Coordinator, CoordinatorConfig, Event as EngineEvent, Inbound};
use rand::SeedableRng;

use super::{
    Event, ExitPath, OwnedDeposit, PhaseName, ProposalError, Session, SessionConfig, SessionError,
    SharedCaches,
};

/// One participant: its session, keys, and everything it sent.
pub struct Party {
    pub session: Session,
    pub config: SessionConfig,
    pub registration: u64,
    /// Current cosigner key and public nonces per leaf (fixed, then the remainder).
    pub leaf_keys: Vec<(musig::Point, Vec<PubNonce>)>,
    /// Current public nonce per deposit.
    pub deposit_nonces: Vec<PubNonce>,
    /// Messages not yet consumed by the kit.
    pub outbox: VecDeque<ToCoordinator>,
    /// Every message ever sent.
    pub sent: Vec<ToCoordinator>,
    /// Every event ever emitted.
    pub events: Vec<Event>,
}

impl Party {
    /// Whether any message of this kind was ever sent.
    pub fn sent_deposit_sigs(&self) -> bool {
        self.sent.iter().any(|m| matches!(m, ToCoordinator::DepositSigs(_)))
    }

    /// Whether tree signatures were ever sent.
    pub fn sent_tree_sigs(&self) -> bool {
        self.sent.iter().any(|m| matches!(m, ToCoordinator::TreeSigs(_)))
    }

    /// The exit paths of the last `PersistExitPaths` event.
    pub fn persist_request(&self) -> Option<(u32, u32, Vec<ExitPath>)> {
        self.events.iter().rev().find_map(|e| match e {
            Event::PersistExitPaths { batch, attempt, paths, .. } => {
                Some((*batch, *attempt, paths.clone()))
            }
            _ => None,
        })
    }
}

/// One batch attempt as a coordinator sees it: the engine's (public parts only; its
/// batch and coordinator secrets stay in the engine) or one the kit built itself.
pub struct Batch {
    pub body: ProposalBody,
    pub tree: Tree,
    /// Who holds the secrets and signs: the engine, or the kit with these keys.
    pub signer: Signer,
    pub agg_nonces: Vec<AggNonce>,
    /// Public nonces of every leaf, batch order.
    pub leaf_nonces: Vec<Vec<PubNonce>>,
    pub your_leaves: Vec<Vec<u32>>,
    pub deposit_inputs: Vec<Vec<u32>>,
    pub coord_pubnonces: Vec<PubNonce>,
    pub node_sigs: BTreeMap<usize, schnorr::Signature>,
}

/// The secrets of a batch the kit built itself.
pub struct LocalSecrets {
    pub batch_key: Keypair,
    pub node_secnonces: Vec<Option<SecNonce>>,
    pub node_pubnonces: Vec<PubNonce>,
    pub coord_secnonces: Vec<Option<SecNonce>>,
}

/// Who signs a [`Batch`]'s coordinator side.
pub enum Signer {
    /// The real engine: tree and deposit signatures go to it.
    Engine,
    /// The kit, for a coherent malicious batch the engine would never build.
    Local(Box<LocalSecrets>),
}

/// Changes a message the engine sends to participant `i` before it is delivered.
pub type Tamper = Box<dyn FnMut(usize, &mut ToParticipant)>;

/// The real coordinator engine and its participants.
pub struct Kit {
    pub ledger: Ledger,
    pub coordinator: Keypair,
    pub coordinator_script: ScriptBuf,
    /// The round parameters the engine is configured from at [`Kit::register_all`]
    /// (change them before).
    pub params: RoundParams,
    pub parties: Vec<Party>,
    pub now: Instant,
    /// The engine, from [`Kit::register_all`] on.
    pub engine: Option<Coordinator>,
    /// Applied to every engine message at delivery.
    pub tamper: Tamper,
    /// Engine messages per participant, not yet delivered.
    pub held: Vec<VecDeque<ToParticipant>>,
    /// Every event the engine emitted.
    pub engine_events: Vec<EngineEvent>,
}

impl Kit {
    /// Why party 0 refused its proposal, after checking it sent no signature of any kind,
    /// sent `Cancel` and ended.
    pub fn refusal(&self) -> ProposalError {
        let party = &self.parties[0];
        assert!(!party.sent_tree_sigs(), "no tree signature for a bad proposal");
        assert!(!party.sent_deposit_sigs(), "no deposit signature for a bad proposal");
        assert!(matches!(party.sent.last(), Some(ToCoordinator::Cancel(_))));
        assert_eq!(party.session.phase(), PhaseName::Failed);
        assert!(matches!(
            party.events.last(),
            Some(Event::Failed(SessionError::ProposalRejected(_)))
        ));
        party
            .events
            .iter()
            .find_map(|e| match e {
                Event::ProposalRejected { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .expect("a ProposalRejected event")
    }

    /// `n` participants with one deposit and one fixed leaf each.
    pub fn new(n: usize, caches: Option<Arc<SharedCaches>>) -> Kit {
        Kit::from_rng(n, caches, &mut rand::rngs::StdRng::from_entropy())
    }

    /// [`Kit::new`] with every key, script and amount drawn from `rng` (the round fuzzer
    /// seeds it, so that one input always builds the same round). The sessions still
    /// draw their own secrets from the operating system; replace them before
    /// [`Kit::register_all`] for a fully repeatable run.
    pub fn from_rng(
        n: usize,
        caches: Option<Arc<SharedCaches>>,
        rng: &mut rand::rngs::StdRng,
    ) -> Kit {
        let ledger = Ledger::new();
        let coordinator = Keypair::from_rng(rng);
        let params = RoundParams {
            round: 7,
            tree: TreeParams { radix: 2, max_depth: 4 },
            fees: FeeSchedule::default(),
            coordinator_key: coordinator.public,
            exit_csv: 144,
            max_deposit_csv: 28_800,
            min_confs: 1,
            safety_margin: 144,
            max_leaves_per_registration: 4,
            max_deposits_per_registration: 4,
            max_batch_weight: 400_000,
            registration_closes_ms: 1,
            phase_timeout_ms: 1_000,
            max_attempts: 3,
        };
        let users: Vec<(Keypair, DepositScript, Amount)> = (0..n)
            .map(|i| {
                let user = Keypair::from_rng(rng);
                let script = DepositScript::new(user.public, coordinator.public, 1_000).unwrap();
                (user, script, Amount::from_sat(200_000 + 1_000 * i as u64))
            })
            .collect();
        // Every deposit in one block, so that none of a large kit's is near its timeout.
        let payments: Vec<(ScriptBuf, Amount)> =
            users.iter().map(|(_, script, amount)| (script.script_pubkey(), *amount)).collect();
        let outpoints = ledger.faucet_many(&payments).unwrap();
        let parties = users
            .into_iter()
            .zip(outpoints)
            .map(|((user, script, amount), outpoint)| {
                let txout = TxOut { value: amount, script_pubkey: script.script_pubkey() };
                let config = SessionConfig {
                    deposits: vec![OwnedDeposit { outpoint, txout, script, key: user.clone() }],
                    leaves: vec![LeafOutput {
                        script_pubkey: p2tr_single(&Keypair::from_rng(rng)),
                        amount: Amount::from_sat(50_000),
                    }],
                    remainder_script: p2tr_single(&user),
                    max_fee: Amount::from_sat(20_000),
                    limits: Default::default(),
                };
                Party {
                    session: Session::new(config.clone(), caches.clone()),
                    config,
                    registration: 0,
                    leaf_keys: Vec::new(),
                    deposit_nonces: Vec::new(),
                    outbox: VecDeque::new(),
                    sent: Vec::new(),
                    events: Vec::new(),
                }
            })
            .collect();
        let coordinator_script = p2tr_single(&Keypair::from_rng(rng));
        Kit {
            ledger,
            coordinator,
            coordinator_script,
            params,
            parties,
            now: Instant::now(),
            engine: None,
            tamper: Box::new(|_, _| {}),
            held: (0..n).map(|_| VecDeque::new()).collect(),
            engine_events: Vec::new(),
        }
    }

    /// The engine's configuration from [`Kit::params`].
    fn engine_config(&self) -> CoordinatorConfig {
        let mut c =
            CoordinatorConfig::from_round_params(&self.params, self.coordinator_script.clone());
        c.max_registrations = self.parties.len();
        c
    }

    fn engine(&mut self) -> &mut Coordinator {
        self.engine.as_mut().expect("the engine runs from register_all on")
    }

    /// Moves what the engine sent into the held queues and answers its requests: a
    /// store write always succeeds.
    pub fn flush_engine(&mut self) {
        let now = self.now;
        while let Some(engine) = self.engine.as_mut() {
            if let Some((peer, msg)) = engine.poll_transmit() {
                self.held[peer as usize].push_back(msg);
                continue;
            }
            let Some(event) = engine.poll_event() else { break };
            if let EngineEvent::PersistBatch { batch, attempt, .. } = &event {
                engine.batch_persisted(now, *batch, *attempt, Ok(()));
            }
            self.engine_events.push(event);
        }
    }

    /// Hands one of party `i`'s messages to the engine, with the chain data it needs.
    pub fn send_to_engine(&mut self, i: usize, msg: ToCoordinator) {
        let now = self.now;
        let max = self.engine().max_deposits_per_registration();
        let input = Inbound::resolve(msg, &self.ledger, max);
        self.engine().handle_message(now, i as u64, input);
        self.flush_engine();
    }

    /// Delivers party `i`'s held engine messages (tampered) while `take` accepts them.
    pub fn release_while(&mut self, i: usize, take: impl Fn(&ToParticipant) -> bool) {
        while self.held[i].front().is_some_and(&take) {
            let Some(mut msg) = self.held[i].pop_front() else { break };
            (self.tamper)(i, &mut msg);
            if let ToParticipant::Registered(r) = &msg {
                self.parties[i].registration = r.registration;
            }
            self.deliver(i, msg);
        }
    }

    /// A tamper hook replacing the body of the engine's proposal to party `i` by `body`
    /// (everything else of the proposal, and everyone else's, as the engine sent it).
    pub fn body_for(i: usize, body: ProposalBody) -> Tamper {
        let encoded = Encoded::new(&body).unwrap();
        Box::new(move |to, msg| {
            if let (true, ToParticipant::Proposal(p)) = (to == i, msg) {
                p.body = encoded.clone();
            }
        })
    }

    /// Delivers all of party `i`'s held engine messages (tampered).
    pub fn release(&mut self, i: usize) {
        self.release_while(i, |_| true);
    }

    /// Moves the clock.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// Delivers a message to party `i` and collects what it sends and emits.
    pub fn deliver(&mut self, i: usize, msg: ToParticipant) {
        let now = self.now;
        self.parties[i].session.handle_message(now, msg);
        self.pump(i);
    }

    /// Collects party `i`'s transmits and events.
    pub fn pump(&mut self, i: usize) {
        let p = &mut self.parties[i];
        while let Some(m) = p.session.poll_transmit() {
            p.sent.push(m.clone());
            p.outbox.push_back(m);
        }
        while let Some(e) = p.session.poll_event() {
            p.events.push(e);
        }
    }

    /// Starts the engine from [`Kit::params`], connects everyone and runs registration:
    /// each party gets the engine's announce, registers, and gets the engine's answer.
    /// The engine then closes registration and proposes; its proposals stay held.
    pub fn register_all(&mut self) {
        let rng = Box::new(rand::rngs::StdRng::seed_from_u64(self.params.round));
        let mut engine = Coordinator::with_rng(self.coordinator.clone(), self.engine_config(), rng)
            .expect("the kit's parameters are valid");
        engine.set_next_round(self.params.round);
        for i in 0..self.parties.len() {
            engine.peer_connected(self.now, i as u64);
        }
        engine.start_round(self.now);
        self.engine = Some(engine);
        self.flush_engine();
        for i in 0..self.parties.len() {
            self.release(i);
            let Some(ToCoordinator::Register(reg)) = self.parties[i].outbox.pop_front() else {
                panic!("party {i} did not register");
            };
            let challenge = self.engine().challenge().expect("registration open");
            self.check_register(i, &reg, &challenge);
            let p = &mut self.parties[i];
            p.leaf_keys = reg.body.leaves.iter().map(|l| (l.cosigner, l.nonces.clone())).collect();
            p.leaf_keys.push((reg.body.remainder.cosigner, reg.body.remainder.nonces.clone()));
            p.deposit_nonces = reg.body.deposits.iter().map(|d| d.nonce.clone()).collect();
            self.send_to_engine(i, ToCoordinator::Register(reg));
            self.release_while(i, |m| !matches!(m, ToParticipant::Proposal(_)));
            assert_ne!(self.parties[i].registration, 0, "party {i} registered by the engine");
        }
    }

    /// What a coordinator checks of a registration that the session is responsible for
    /// (the engine checks the rest).
    fn check_register(&self, i: usize, reg: &Register, challenge: &[u8; 32]) {
        let msg = reg.body.ownership_message(challenge).unwrap();
        assert_eq!(reg.ownership_sigs.len(), reg.body.deposits.len());
        for (d, sig) in reg.body.deposits.iter().zip(&reg.ownership_sigs) {
            let xonly = d.user_key.x_only_public_key().0;
            assert!(musig::verify_schnorr(sig, &msg, &xonly), "party {i} ownership sig");
        }
        let depth = usize::from(self.params.tree.max_depth);
        assert!(reg.body.leaves.iter().all(|l| l.nonces.len() == depth));
        assert_eq!(reg.body.remainder.nonces.len(), depth);
    }

    /// Takes party `i`'s `Renonce` and records its fresh keys and nonces.
    pub fn take_renonce(&mut self, i: usize) {
        let p = &mut self.parties[i];
        let Some(ToCoordinator::Renonce(r)) = p.outbox.pop_front() else {
            panic!("party {i} did not renonce");
        };
        p.leaf_keys = r.leaves.iter().map(|l| (l.cosigner, l.nonces.clone())).collect();
        p.deposit_nonces = r.deposit_nonces;
    }

    /// The engine's batch, attempt `attempt`, taken apart from the proposals it holds
    /// for every party; the kit's own honest build when the engine proposed nothing
    /// for that attempt (it only runs attempts it decided on itself).
    pub fn build_batch(&self, attempt: u32) -> Batch {
        self.engine_batch(attempt).unwrap_or_else(|| self.build_batch_with(attempt, |_, _| {}))
    }

    /// The held engine proposals of attempt `attempt`, one per party.
    fn held_proposals(&self, attempt: u32) -> Option<Vec<Proposal>> {
        let body = |p: &Proposal| p.body.decode(1 << 23).ok().map(|b: ProposalBody| b.attempt);
        self.held
            .iter()
            .map(|q| {
                q.iter().find_map(|m| match m {
                    ToParticipant::Proposal(p) if body(p) == Some(attempt) => Some(p.clone()),
                    _ => None,
                })
            })
            .collect()
    }

    /// The engine's batch of attempt `attempt`, if it proposed one to every party.
    pub fn engine_batch(&self, attempt: u32) -> Option<Batch> {
        let proposals = self.held_proposals(attempt)?;
        let body: ProposalBody = proposals.first()?.body.decode(1 << 23).ok()?;
        let outpoint = OutPoint { txid: body.funding_tx.compute_txid(), vout: 0 };
        let leaves: Arc<[TreeLeaf]> = body.leaves.clone().into();
        let tree = Tree::build(leaves, body.batch_key, body.tree, None, |_| outpoint).ok()?;
        let mut agg = BTreeMap::new();
        let mut coord = BTreeMap::new();
        for p in &proposals {
            agg.extend(p.node_nonces.iter().map(|n| (n.node as usize, n.nonce.clone())));
            let nonces = p.deposit_inputs.iter().zip(&p.coordinator_deposit_nonces);
            coord.extend(nonces.map(|(&k, n)| (k as usize, n.clone())));
        }
        let mut leaf_nonces = vec![Vec::new(); body.leaves.len()];
        for (prop, party) in proposals.iter().zip(&self.parties) {
            for (&leaf, (_, nonces)) in prop.your_leaves.iter().zip(&party.leaf_keys) {
                leaf_nonces[leaf as usize] = nonces.clone();
            }
        }
        Some(Batch {
            body,
            tree,
            signer: Signer::Engine,
            agg_nonces: agg.into_values().collect(),
            leaf_nonces,
            your_leaves: proposals.iter().map(|p| p.your_leaves.clone()).collect(),
            deposit_inputs: proposals.iter().map(|p| p.deposit_inputs.clone()).collect(),
            coord_pubnonces: coord.into_values().collect(),
            node_sigs: BTreeMap::new(),
        })
    }

    /// Rebuilds party `i`'s session from its configuration changed by `change` (before
    /// registering): other limits, other deposits.
    pub fn reconfigure(&mut self, i: usize, change: impl FnOnce(&mut SessionConfig, &Ledger)) {
        let p = &mut self.parties[i];
        change(&mut p.config, &self.ledger);
        p.session = Session::new(p.config.clone(), None);
    }

    /// A batch the kit builds itself (the engine never would), with the funding tx and
    /// its prevouts changed by `tamper` before the tree is built on its txid: a
    /// coherent malicious batch under a batch key the kit holds.
    pub fn build_batch_with(
        &self,
        attempt: u32,
        tamper: impl FnOnce(&mut Transaction, &mut Vec<TxOut>),
    ) -> Batch {
        let reqs: Vec<FundingRequest> = self
            .parties
            .iter()
            .map(|p| FundingRequest {
                deposits: p.config.deposits.iter().map(|d| (d.outpoint, d.txout.clone())).collect(),
                requested: p.config.leaves.iter().map(|l| l.amount).sum(),
                remainder_script: p.config.remainder_script.clone(),
                max_fee: p.config.max_fee,
            })
            .collect();
        let plan = plan_funding(&reqs, &self.params.fees, &self.coordinator_script).unwrap();
        let (mut leaves, mut leaf_nonces, mut your_leaves, mut deposit_inputs) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut input = 0u32;
        for (p, share) in self.parties.iter().zip(&plan.shares) {
            let mut outputs = p.config.leaves.clone();
            outputs.push(LeafOutput {
                script_pubkey: p.config.remainder_script.clone(),
                amount: share.remainder,
            });
            let mut mine = Vec::new();
            for (output, (cosigner, nonces)) in outputs.into_iter().zip(&p.leaf_keys) {
                mine.push(leaves.len() as u32);
                leaves.push(TreeLeaf { output, cosigner: *cosigner });
                leaf_nonces.push(nonces.clone());
            }
            your_leaves.push(mine);
            let n = p.config.deposits.len() as u32;
            deposit_inputs.push((input..input + n).collect());
            input += n;
        }
        let batch_key = Keypair::random();
        let mut funding = None;
        let mut prevouts: Vec<TxOut> =
            reqs.iter().flat_map(|r| r.deposits.iter().map(|(_, o)| o.clone())).collect();
        let leaves: Arc<[TreeLeaf]> = leaves.into();
        let tree = Tree::build(leaves.clone(), batch_key.point, self.params.tree, None, |root| {
            let mut tx = funding_tx(&reqs, &plan, root, &self.coordinator_script);
            tamper(&mut tx, &mut prevouts);
            let outpoint = OutPoint { txid: tx.compute_txid(), vout: 0 };
            funding = Some(tx);
            outpoint
        })
        .unwrap();
        let funding_tx = funding.unwrap();
        let mut node_secnonces = Vec::new();
        let mut node_pubnonces = Vec::new();
        let mut agg_nonces = Vec::new();
        for shape in tree.shape().nodes() {
            let sn = musig::new_secnonce(&batch_key.point, Some(&batch_key.scalar()), None);
            let mut nonces: Vec<PubNonce> = shape
                .leaves
                .clone()
                .map(|l| leaf_nonces[l][usize::from(shape.depth) - 1].clone())
                .collect();
            nonces.push(sn.public_nonce());
            agg_nonces.push(musig::nonce_agg(&nonces).unwrap());
            node_pubnonces.push(sn.public_nonce());
            node_secnonces.push(Some(sn));
        }
        let coord_secnonces: Vec<SecNonce> = (0..input)
            .map(|_| {
                musig::new_secnonce(&self.coordinator.point, Some(&self.coordinator.scalar()), None)
            })
            .collect();
        let body = ProposalBody {
            round: self.params.round,
            batch: 0,
            attempt,
            funding_prevouts: prevouts,
            funding_tx,
            leaves: leaves.to_vec(),
            batch_key: batch_key.point,
            tree: self.params.tree,
        };
        let coord_pubnonces = coord_secnonces.iter().map(SecNonce::public_nonce).collect();
        let secrets = LocalSecrets {
            batch_key,
            node_secnonces,
            node_pubnonces,
            coord_secnonces: coord_secnonces.into_iter().map(Some).collect(),
        };
        Batch {
            body,
            tree,
            signer: Signer::Local(Box::new(secrets)),
            agg_nonces,
            leaf_nonces,
            your_leaves,
            deposit_inputs,
            coord_pubnonces,
            node_sigs: BTreeMap::new(),
        }
    }

    /// The nodes on party `i`'s paths.
    pub fn path_nodes(batch: &Batch, i: usize) -> BTreeSet<usize> {
        batch.your_leaves[i]
            .iter()
            .flat_map(|&l| batch.tree.shape().path(l as usize).unwrap())
            .collect()
    }

    /// Party `i`'s proposal with the given (possibly tampered) encoded body.
    pub fn proposal(batch: &Batch, i: usize, body: &Encoded<ProposalBody>) -> Proposal {
        let node_nonces = Self::path_nodes(batch, i)
            .into_iter()
            .map(|n| NodeNonce { node: n as u32, nonce: batch.agg_nonces[n].clone() })
            .collect();
        Proposal {
            body: body.clone(),
            your_leaves: batch.your_leaves[i].clone(),
            node_nonces,
            deposit_inputs: batch.deposit_inputs[i].clone(),
            coordinator_deposit_nonces: batch.deposit_inputs[i]
                .iter()
                .map(|&k| batch.coord_pubnonces[k as usize].clone())
                .collect(),
        }
    }

    /// Sends every party its proposal: the engine's held ones (through the tamper hook)
    /// for an engine batch, else one shared encoded body.
    pub fn propose(&mut self, batch: &Batch) {
        if let Signer::Engine = batch.signer {
            for i in 0..self.parties.len() {
                self.release(i);
            }
            return;
        }
        let body = Encoded::new(&batch.body).unwrap();
        for i in 0..self.parties.len() {
            let proposal = Self::proposal(batch, i, &body);
            self.deliver(i, ToParticipant::Proposal(proposal));
        }
    }

    /// Takes party `i`'s tree signatures.
    pub fn take_tree_sigs(&mut self, i: usize) -> TreeSigs {
        match self.parties[i].outbox.pop_front() {
            Some(ToCoordinator::TreeSigs(s)) => s,
            other => panic!("party {i} sent {other:?} instead of tree signatures"),
        }
    }

    /// Every node's signature from the parties' partial signatures (`sigs[i]` is party
    /// `i`'s): the engine combines them for its batch (its `SignedTree` messages stay
    /// held, read here); the kit combines them for its own.
    pub fn combine_tree(&mut self, batch: &mut Batch, sigs: &[TreeSigs]) {
        let Signer::Local(secrets) = &mut batch.signer else {
            for (i, s) in sigs.iter().enumerate() {
                self.send_to_engine(i, ToCoordinator::TreeSigs(s.clone()));
            }
            for i in 0..sigs.len() {
                let signed = self.held[i].iter().find_map(|m| match m {
                    ToParticipant::SignedTree(t) => Some(t.clone()),
                    _ => None,
                });
                let signed = signed.unwrap_or_else(|| panic!("{:?}", self.engine_events));
                batch.node_sigs.extend(signed.sigs.iter().map(|n| (n.node as usize, n.sig)));
            }
            return;
        };
        let psigs: BTreeMap<(u32, u32), _> =
            sigs.iter().flat_map(|s| &s.sigs).map(|p| ((p.node, p.leaf), p.psig)).collect();
        for (node, shape) in batch.tree.shape().nodes().to_vec().into_iter().enumerate() {
            let n = batch.tree.node(node).unwrap();
            let agg = &batch.agg_nonces[node];
            let mut contributions: Vec<Contribution> = shape
                .leaves
                .clone()
                .map(|l| Contribution {
                    signer: batch.tree.leaves()[l].cosigner,
                    pubnonce: batch.leaf_nonces[l][usize::from(shape.depth) - 1].clone(),
                    psig: psigs[&(node as u32, l as u32)],
                })
                .collect();
            let key = &secrets.batch_key;
            let sn = secrets.node_secnonces[node].take().unwrap();
            let psig = musig::sign_partial(&n.key, key, sn, agg, &n.sighash).unwrap();
            contributions.push(Contribution {
                signer: key.point,
                pubnonce: secrets.node_pubnonces[node].clone(),
                psig,
            });
            let sig = musig::combine(&n.key, agg, &n.sighash, &contributions).unwrap();
            batch.node_sigs.insert(node, sig);
        }
    }

    /// Party `i`'s signed tree.
    pub fn signed_tree(batch: &Batch, i: usize) -> SignedTree {
        SignedTree {
            batch: batch.body.batch,
            attempt: batch.body.attempt,
            sigs: Self::path_nodes(batch, i)
                .into_iter()
                .map(|n| NodeSignature { node: n as u32, sig: batch.node_sigs[&n] })
                .collect(),
        }
    }

    /// Confirms party `i`'s last persist request.
    pub fn persist(&mut self, i: usize) {
        let (batch, attempt, _) = self.parties[i].persist_request().expect("persist request");
        let now = self.now;
        self.parties[i].session.exit_paths_persisted(now, batch, attempt);
        self.pump(i);
    }

    /// Takes party `i`'s deposit signatures.
    pub fn take_deposit_sigs(&mut self, i: usize) -> DepositSigs {
        match self.parties[i].outbox.pop_front() {
            Some(ToCoordinator::DepositSigs(s)) => s,
            other => panic!("party {i} sent {other:?} instead of deposit signatures"),
        }
    }

    /// Completes the funding tx of a batch the kit built with every party's deposit
    /// signatures and C's (the engine completes its own: see [`Kit::run_round`]).
    pub fn complete_funding(&self, batch: &mut Batch, sigs: &[DepositSigs]) -> Transaction {
        let Signer::Local(secrets) = &mut batch.signer else {
            panic!("the engine completes its own funding tx");
        };
        let mut tx = batch.body.funding_tx.clone();
        let prevouts = batch.body.funding_prevouts.clone();
        for (i, s) in sigs.iter().enumerate() {
            let p = &self.parties[i];
            for (k, dp) in s.sigs.iter().enumerate() {
                let input = dp.input as usize;
                assert_eq!(batch.deposit_inputs[i][k], dp.input);
                let ctx = p.config.deposits[k].script.signing_context().unwrap();
                let pn = p.deposit_nonces[k].clone();
                let cn = batch.coord_pubnonces[input].clone();
                let agg = musig::nonce_agg(&[pn.clone(), cn.clone()]).unwrap();
                let msg = key_spend_sighash(&tx, input, &prevouts).unwrap();
                let sn = secrets.coord_secnonces[input].take().unwrap();
                let cpsig = musig::sign_partial(&ctx, &self.coordinator, sn, &agg, &msg).unwrap();
                let contributions = [
                    Contribution {
                        signer: p.config.deposits[k].key.point,
                        pubnonce: pn,
                        psig: dp.psig,
                    },
                    Contribution { signer: self.coordinator.point, pubnonce: cn, psig: cpsig },
                ];
                let sig = musig::combine(&ctx, &agg, &msg, &contributions).unwrap();
                tx.input[input].witness = key_spend_witness(&sig);
            }
        }
        tx
    }

    /// The whole honest round after registration: propose, sign, persist, complete,
    /// broadcast, mine, finalize, confirm. The engine runs its own batch end to end
    /// (it persists, asks for the broadcast, learns the confirmation and tells the
    /// parties); the kit runs one it built. Returns the funding tx.
    pub fn run_round(&mut self, attempt: u32) -> Transaction {
        let mut batch = self.build_batch(attempt);
        self.propose(&batch);
        let n = self.parties.len();
        let sigs: Vec<TreeSigs> = (0..n).map(|i| self.take_tree_sigs(i)).collect();
        self.combine_tree(&mut batch, &sigs);
        for i in 0..n {
            match batch.signer {
                Signer::Engine => self.release(i),
                Signer::Local(_) => {
                    self.deliver(i, ToParticipant::SignedTree(Self::signed_tree(&batch, i)))
                }
            }
            assert!(!self.parties[i].sent_deposit_sigs(), "no deposit sigs before persisting");
            self.persist(i);
        }
        let dsigs: Vec<DepositSigs> = (0..n).map(|i| self.take_deposit_sigs(i)).collect();
        if let Signer::Engine = batch.signer {
            return self.engine_finish(dsigs);
        }
        let funding = self.complete_funding(&mut batch, &dsigs);
        let txid = self.ledger.broadcast(&funding).expect("funding tx accepted");
        let height = self.ledger.mine(1);
        for i in 0..n {
            let finalized = cohort_common::messages::Finalized { batch: 0, txid };
            self.deliver(i, ToParticipant::Finalized(finalized));
            let confirmed = cohort_common::messages::Confirmed { batch: 0, height };
            self.deliver(i, ToParticipant::Confirmed(confirmed));
        }
        funding
    }

    /// Hands the deposit signatures to the engine, stores, broadcasts what it asks for
    /// on the ledger, mines, reports the confirmation and delivers what it sends.
    fn engine_finish(&mut self, dsigs: Vec<DepositSigs>) -> Transaction {
        let seen = self.engine_events.len();
        for (i, s) in dsigs.into_iter().enumerate() {
            self.send_to_engine(i, ToCoordinator::DepositSigs(s));
        }
        let (batch, funding) = self.engine_events[seen..]
            .iter()
            .find_map(|e| match e {
                EngineEvent::Broadcast { batch, tx, .. } => Some((*batch, (**tx).clone())),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no broadcast: {:?}", &self.engine_events[seen..]));
        let now = self.now;
        let result = self.ledger.broadcast(&funding).map_err(|e| e.to_string());
        let txid = result.clone().expect("funding tx accepted");
        self.engine().broadcast_result(now, batch, result);
        let height = self.ledger.mine(1);
        self.engine().confirmed(now, txid, height);
        self.flush_engine();
        for i in 0..self.parties.len() {
            self.release(i);
        }
        funding
    }

    /// Publishes every transaction of `paths` not yet on chain, each with a CPFP child
    /// paying from a fresh faucet output, mining after each level.
    pub fn publish_paths(&self, paths: &[ExitPath]) {
        for path in paths {
            for tx in &path.path {
                if self.ledger.transaction(&tx.compute_txid()).is_some() {
                    continue;
                }
                let key = Keypair::random();
                let amount = Amount::from_sat(50_000);
                let outpoint = self.ledger.faucet(&p2tr_single(&key), amount).unwrap();
                let txout = TxOut { value: amount, script_pubkey: p2tr_single(&key) };
                let fee = FeeInput { outpoint, txout, key };
                let rate = self.ledger.fee_rate().unwrap();
                let child = cpfp_child(tx, &fee, rate).unwrap();
                self.ledger.broadcast_package(tx, &child).expect("exit package accepted");
                self.ledger.mine(1);
            }
            let last = path.path.last().unwrap();
            let outpoint = OutPoint { txid: last.compute_txid(), vout: path.vout };
            let utxo = self.ledger.utxo(&outpoint).unwrap().expect("leaf output on chain");
            assert_eq!(utxo.txout, path.leaf_output);
        }
    }
}
