//! The coordinator service over loopback QUIC with in-process participants running the
//! participant's own driver (stopped at chosen steps): a full round on the dev ledger,
//! kill-and-restart at each phase boundary (registration open, after the proposals, after
//! the tree is signed and before deposit signatures, after `Finalized`), a broadcast
//! that got no answer resumed after a restart, and a finalized batch watched until it
//! confirms across restarts.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::hashes::Hash;
use cohort_common::chain::{Chain, ChainError, RejectReason, Utxo};
use cohort_common::ledger::Ledger;
use cohort_common::messages::RefusalReason;
use cohort_coordinator::admin::{self, AdminRequest, AdminResponse, Mode as ServiceMode};
use cohort_coordinator::engine::RoundStage;
use cohort_coordinator::service::{now_ms, ChainBackend, RESTART_REASON};
use cohort_coordinator::store::{BatchStatus, CoordinatorStore, RegistrationStatus, SqliteStore};
use cohort_participant::driver::Outcome;
use cohort_participant::store::DepositStatus;
use cohort_transport::{Client, Limits};
use tokio::sync::mpsc;

use support::{
    drive, expect_announce, next_report, participants, session_config, Fixture, Mode, Report, N,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_completes_and_survives_a_restart() {
    let fx = Fixture::new("complete");
    let (service, store, uri) = fx.start();
    let (deposits, mut rx) = participants(&fx, &uri, &[Mode::Honest; N]).await;
    let mut confirmed = 0;
    while confirmed < N {
        match next_report(&mut rx).await {
            Report::Done(Ok(Outcome::Confirmed { .. })) => confirmed += 1,
            Report::Done(other) => panic!("participant ended with {other:?}"),
            Report::Persisting { .. }
            | Report::Registered
            | Report::Proposed
            | Report::Deposits(_)
            | Report::Alarm(_) => {}
        }
    }
    for d in &deposits {
        assert!(fx.ledger.utxo(&d.outpoint).unwrap().is_none(), "deposit spent by the funding tx");
    }
    // The participants watch the chain on their own: the coordinator's watch may record
    // the same confirmation a moment after the last of them saw it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let last = loop {
        let last = store.batches_of_round(1).unwrap().last().unwrap().clone();
        if matches!(last.status, BatchStatus::Confirmed { .. }) {
            break last;
        }
        assert!(Instant::now() < deadline, "never confirmed: {:?}", last.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let tree = store.signed_tree(1, 0).unwrap().expect("signed tree stored");
    assert!(!tree.is_empty());
    // The round's timeline, as `admin round 1 --timeline` draws it.
    let socket = service.admin_socket().unwrap().to_owned();
    let timeline =
        admin::request(&socket, &AdminRequest::Timeline { round: 1 }, Duration::from_secs(10));
    let AdminResponse::Timeline(svg) = timeline.await.unwrap() else { panic!("no timeline") };
    assert!(svg.contains(&format!("batch 0, {N} members")), "{svg}");
    assert!(svg.contains("✓ confirmed"), "{svg}");
    service.shutdown("test restart").await;
    drop(store);

    // Restarted after the round: the batch and its tree are still known, nothing is
    // aborted, the URI (pin) is the same, and the numbering continues.
    let (service, store, uri2) = fx.start();
    assert_eq!(uri2.pin, uri.pin);
    assert!(service.recovery().aborted.is_empty());
    assert_eq!(service.recovery().last_round, Some(1));
    assert_eq!(store.batches_of_round(1).unwrap().last().unwrap().status, last.status);
    assert_eq!(store.signed_tree(1, 0).unwrap().unwrap(), tree);
    expect_announce(&uri2, 2).await;
    service.shutdown("test over").await;
    let _ = std::fs::remove_dir_all(&fx.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_round_aborts_and_keeps_bans() {
    let fx = Fixture::new("midround");
    let (service, store, uri) = fx.start();
    let mut modes = [Mode::StallAtPersist; N];
    modes[0] = Mode::QuitAfterProposal;
    let (deposits, mut rx) = participants(&fx, &uri, &modes).await;
    // The quitter leaves after signing the tree (banned); the others get a second
    // attempt, sign its tree and stall before their deposit signatures.
    let mut persisting = 0;
    while persisting < N - 1 {
        match next_report(&mut rx).await {
            Report::Persisting { attempt: 2 } => persisting += 1,
            // The quitter's driver was stopped.
            Report::Persisting { .. }
            | Report::Registered
            | Report::Proposed
            | Report::Deposits(_)
            | Report::Alarm(_)
            | Report::Done(Err(_)) => {}
            Report::Done(other) => panic!("participant ended with {other:?}"),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let batches = store.batches_of_round(1).unwrap();
        if batches.iter().any(|b| b.attempt == 2 && b.status == BatchStatus::TreeSigned) {
            break;
        }
        assert!(Instant::now() < deadline, "tree never recorded: {batches:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let banned = deposits[0].outpoint;
    assert!(store.is_banned(&banned, now_ms()).unwrap());
    service.shutdown("killed").await;
    drop(store);

    let (service, store, uri) = fx.start();
    assert_eq!(service.recovery().aborted, vec![(1, 0, 2)]);
    assert_eq!(service.recovery().bans, 1);
    for b in store.batches_of_round(1).unwrap() {
        assert!(matches!(b.status, BatchStatus::Aborted { .. }), "{b:?}");
        if b.attempt == 2 {
            assert_eq!(b.status, BatchStatus::Aborted { reason: RESTART_REASON.into() });
        }
    }
    // Every deposit is still unspent: its owner can reclaim it or join again.
    for d in &deposits {
        assert!(fx.ledger.utxo(&d.outpoint).unwrap().is_some(), "deposit must be unspent");
    }
    // The numbering continues, and the restarted engine enforces the ban.
    expect_announce(&uri, 2).await;
    let client = Client::connect(&uri, &Limits::default()).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(drive(client, session_config(deposits[0].clone()), Mode::Honest, tx));
    let mut report = next_report(&mut rx).await;
    if let Report::Deposits(statuses) = report {
        assert_eq!(statuses, vec![DepositStatus::Unspent], "released after the refusal");
        report = next_report(&mut rx).await;
    }
    match report {
        Report::Done(Ok(Outcome::Refused { reason })) => {
            assert_eq!(reason, RefusalReason::Banned(banned).to_string());
        }
        other => panic!("expected a ban refusal, got {other:?}"),
    }
    // The operator lists the ban and lifts it; its offence count stays.
    let socket = service.admin_socket().unwrap().to_owned();
    let ask = |req| {
        let socket = socket.clone();
        async move { admin::request(&socket, &req, Duration::from_secs(10)).await.unwrap() }
    };
    let AdminResponse::Bans(bans) = ask(AdminRequest::Bans).await else { panic!("bans") };
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!((bans[0].outpoint, bans[0].offences), (banned, 1));
    let lifted = ask(AdminRequest::Unban { outpoint: banned }).await;
    assert!(matches!(&lifted, AdminResponse::Done(what) if what.contains("may register again")));
    assert_eq!(ask(AdminRequest::Bans).await, AdminResponse::Bans(Vec::new()));
    assert!(!store.is_banned(&banned, now_ms()).unwrap());
    let again = ask(AdminRequest::Unban { outpoint: banned }).await;
    assert!(matches!(&again, AdminResponse::Error(why) if why.contains("is not banned")));
    let AdminResponse::Status(status) = ask(AdminRequest::Status).await else { panic!() };
    assert_eq!((status.round, status.bans), (Some(2), 0));
    service.shutdown("test over").await;
    assert!(!socket.exists(), "the admin socket outlived the service");
    let _ = std::fs::remove_dir_all(&fx.dir);
}

/// Killed with registration still open: the round is aborted on restart, nothing is
/// banned, every deposit is unspent and registers again in the next round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_registration_loses_nothing() {
    let fx = Fixture::new("registration");
    let (service, store, uri) = fx.start();
    // Fewer than N: registration stays open.
    let (deposits, mut rx) = participants(&fx, &uri, &[Mode::Honest; 3]).await;
    let mut registered = 0;
    while registered < 3 {
        if let Report::Registered = next_report(&mut rx).await {
            registered += 1;
        }
    }
    service.shutdown("killed").await;
    drop(store);

    let (service, store, uri) = fx.start();
    assert_eq!(service.recovery().last_round, Some(1));
    assert!(service.recovery().aborted.is_empty(), "no batch existed yet");
    assert_eq!(service.recovery().bans, 0);
    for d in &deposits {
        assert!(fx.ledger.utxo(&d.outpoint).unwrap().is_some(), "deposit must be unspent");
        assert!(!store.is_banned(&d.outpoint, now_ms()).unwrap());
    }
    expect_announce(&uri, 2).await;
    // The same deposit registers again in round 2.
    let client = Client::connect(&uri, &Limits::default()).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(drive(client, session_config(deposits[0].clone()), Mode::Honest, tx));
    assert!(matches!(next_report(&mut rx).await, Report::Registered));
    service.shutdown("test over").await;
    let _ = std::fs::remove_dir_all(&fx.dir);
}

/// Killed after the proposals, before any tree signature: the attempt is aborted on
/// restart, nobody is banned (nobody misbehaved), every deposit is unspent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_proposals_aborts_the_attempt() {
    let fx = Fixture::new("proposals");
    let (service, store, uri) = fx.start();
    let (deposits, mut rx) = participants(&fx, &uri, &[Mode::StallAtProposal; N]).await;
    let mut proposed = 0;
    while proposed < N {
        if let Report::Proposed = next_report(&mut rx).await {
            proposed += 1;
        }
    }
    assert!(store.batches_of_round(1).unwrap().iter().all(|b| b.status == BatchStatus::Signing));
    service.shutdown("killed").await;
    drop(store);

    let (service, store, uri) = fx.start();
    assert_eq!(service.recovery().aborted, vec![(1, 0, 1)]);
    assert_eq!(service.recovery().bans, 0);
    let batch = store.batches_of_round(1).unwrap().pop().unwrap();
    assert_eq!(batch.status, BatchStatus::Aborted { reason: RESTART_REASON.into() });
    for d in &deposits {
        assert!(fx.ledger.utxo(&d.outpoint).unwrap().is_some(), "deposit must be unspent");
    }
    expect_announce(&uri, 2).await;
    service.shutdown("test over").await;
    let _ = std::fs::remove_dir_all(&fx.dir);
}

/// The fixture's ledger behind a node that answers every broadcast with `error` (every
/// read still answers).
struct FailsAtBroadcast {
    ledger: Arc<Ledger>,
    error: ChainError,
}

impl FailsAtBroadcast {
    /// A node that is down whenever a transaction is broadcast.
    fn down(ledger: Arc<Ledger>) -> Self {
        FailsAtBroadcast { ledger, error: ChainError::Backend("connection refused".into()) }
    }
}

impl Chain for FailsAtBroadcast {
    fn tip_height(&self) -> Result<u32, ChainError> {
        self.ledger.tip_height()
    }
    fn utxo(&self, outpoint: &bitcoin::OutPoint) -> Result<Option<Utxo>, ChainError> {
        self.ledger.utxo(outpoint)
    }
    fn script_utxos(
        &self,
        script: &bitcoin::Script,
    ) -> Result<Vec<(bitcoin::OutPoint, Utxo)>, ChainError> {
        self.ledger.script_utxos(script)
    }
    fn broadcast(&self, _tx: &bitcoin::Transaction) -> Result<bitcoin::Txid, ChainError> {
        Err(self.error.clone())
    }
    fn broadcast_package(
        &self,
        _parent: &bitcoin::Transaction,
        _child: &bitcoin::Transaction,
    ) -> Result<(bitcoin::Txid, bitcoin::Txid), ChainError> {
        Err(self.error.clone())
    }
    fn fee_rate(&self) -> Result<bitcoin::FeeRate, ChainError> {
        self.ledger.fee_rate()
    }
    fn confirmations(&self, txid: &bitcoin::Txid) -> Result<Option<u32>, ChainError> {
        self.ledger.confirmations(txid)
    }
}

/// The chain refuses the complete funding transaction: every participant has signed its
/// deposits into it, so each is told that the batch is dropped (it used to wait out its
/// deadline and fail as timed out), ends `Failed` with its deposits signed, and keeps the funding txid with its
/// deposits: that transaction stays valid, and its exit paths stay on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_funding_transaction_the_chain_refuses_ends_every_session_at_once() {
    let fx = Fixture::new("refused");
    let refusing = FailsAtBroadcast {
        ledger: fx.ledger.clone(),
        error: ChainError::Rejected(RejectReason::Node { reason: "bad-txns-test".into() }),
    };
    let (service, store, uri) = fx.start_on(ChainBackend::External(Arc::new(refusing)));
    let (deposits, mut rx) = participants(&fx, &uri, &[Mode::Honest; N]).await;
    let (mut ended, mut statuses) = (0, Vec::new());
    while ended < N {
        match next_report(&mut rx).await {
            Report::Done(Ok(Outcome::Failed { reason, deposits_signed: true })) => {
                assert!(reason.contains("broadcast failed"), "{reason}");
                ended += 1;
            }
            Report::Done(other) => panic!("participant ended with {other:?}"),
            Report::Deposits(s) => statuses.extend(s),
            Report::Persisting { .. } | Report::Registered | Report::Proposed => {}
            Report::Alarm(what) => panic!("alarm: {what}"),
        }
    }
    let stored = store.batches_of_round(1).unwrap().pop().unwrap();
    assert!(matches!(stored.status, BatchStatus::Aborted { .. }), "{:?}", stored.status);
    let txid = stored.funding_tx.compute_txid();
    assert_eq!(statuses.len(), N);
    for status in statuses {
        assert_eq!(status, DepositStatus::InBatch { funding_txids: vec![txid] });
    }
    for d in &deposits {
        assert!(fx.ledger.utxo(&d.outpoint).unwrap().is_some(), "the deposit is still unspent");
    }
    service.shutdown("test over").await;
    let _ = std::fs::remove_dir_all(&fx.dir);
}

/// The node is down when the complete funding transaction is broadcast, and the
/// coordinator is killed before it comes back: the stored attempt may be on the network,
/// so it is never aborted; the restarted coordinator broadcasts it again and records it
/// finalized, then confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_with_no_answer_is_resumed_after_a_restart() {
    let fx = Fixture::new("rebroadcast");
    let (service, store, uri) =
        fx.start_on(ChainBackend::External(Arc::new(FailsAtBroadcast::down(fx.ledger.clone()))));
    let (deposits, mut rx) = participants(&fx, &uri, &[Mode::Honest; N]).await;
    let mut ended = 0;
    while ended < N {
        if let Report::Done(_) = next_report(&mut rx).await {
            ended += 1;
        }
    }
    // Past a few polls (200 ms): the attempt stays `Broadcasting`, never aborted.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let stored = store.batches_of_round(1).unwrap().pop().unwrap();
    assert_eq!(stored.status, BatchStatus::Broadcasting);
    let txid = stored.funding_tx.compute_txid();
    assert_eq!(fx.ledger.confirmations(&txid).unwrap(), None, "the node never got it");
    service.shutdown("killed").await;
    drop(store);

    let (service, store, _) = fx.start();
    assert!(service.recovery().aborted.is_empty(), "{:?}", service.recovery());
    assert_eq!(service.recovery().rebroadcast, vec![stored.clone()]);
    let status = |store: &SqliteStore| store.batches_of_round(1).unwrap().pop().unwrap().status;
    // The batch's status and its registrations' are separate writes: wait for both.
    let completed = |store: &SqliteStore| {
        let regs = store.registrations_of_round(1).unwrap();
        regs.iter().all(|r| r.status == RegistrationStatus::Completed).then_some(()).ok_or(regs)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&store) != (BatchStatus::Finalized { txid }) || completed(&store).is_err() {
        assert!(
            Instant::now() < deadline,
            "never finalized with every registration completed: {:?} {:?}",
            status(&store),
            completed(&store)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for d in &deposits {
        assert!(fx.ledger.utxo(&d.outpoint).unwrap().is_none(), "deposit spent by the funding tx");
    }
    assert!(completed(&store).is_ok(), "{:?}", completed(&store));

    // Killed again while the finalized transaction waits for a block: the restarted
    // coordinator watches it still, and records its confirmation.
    service.shutdown("killed while unconfirmed").await;
    drop(store);
    let (service, store, _) = fx.start();
    let mut finalized = stored.clone();
    finalized.status = BatchStatus::Finalized { txid };
    assert_eq!(service.recovery().rebroadcast, vec![finalized]);
    let height = fx.ledger.mine(1);
    while !matches!(status(&store), BatchStatus::Confirmed { .. }) {
        assert!(Instant::now() < deadline, "never confirmed: {:?}", status(&store));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status(&store), BatchStatus::Confirmed { height });
    service.shutdown("test over").await;
    let _ = std::fs::remove_dir_all(&fx.dir);
}

/// One HTTP request to the service's metrics endpoint: the status code and the body.
async fn http(
    service: &cohort_coordinator::service::CoordinatorService,
    request: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = service.metrics_addr().expect("the fixture turns the endpoint on");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let code = answer.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (code, body)
}

/// The value of one sample line (`name{labels} value`), summed over every line whose
/// name and labels start with `prefix`.
fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A round with one participant quitting after the tree signatures, scraped over HTTP:
/// the counts are those of what happened (every registration, two attempts, one
/// exclusion and ban, one batch finalized then confirmed, one funding broadcast), and
/// the health endpoints answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened_in_a_round_with_a_fault() {
    let fx = Fixture::new("metrics");
    let (service, _store, uri) = fx.start();
    let mut modes = [Mode::Honest; N];
    modes[0] = Mode::QuitAfterProposal;
    let (_deposits, mut rx) = participants(&fx, &uri, &modes).await;
    let mut confirmed = 0;
    while confirmed < N - 1 {
        if let Report::Done(Ok(Outcome::Confirmed { .. })) = next_report(&mut rx).await {
            confirmed += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (code, text) = http(&service, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(code, 200);
        if sample(&text, "cohort_batches_total{outcome=\"confirmed\"}") >= 1.0 {
            break text;
        }
        assert!(Instant::now() < deadline, "never saw the confirmation:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let n = N as f64;
    for (prefix, want) in [
        ("cohort_rounds_total", 1.0),
        ("cohort_registrations_total", n),
        ("cohort_attempts_total", 2.0),
        ("cohort_attempts_aborted_total", 1.0),
        ("cohort_exclusions_total", 1.0),
        ("cohort_bans_total", 1.0),
        ("cohort_batches_total{outcome=\"finalized\"}", 1.0),
        ("cohort_batches_total{outcome=\"failed\"}", 0.0),
        ("cohort_funding_broadcasts_total", 1.0),
        ("cohort_funding_confirmed_total", 1.0),
        ("cohort_refusals_total", 0.0),
    ] {
        assert_eq!(sample(&text, prefix), want, "{prefix} in\n{text}");
    }
    assert!(sample(&text, "cohort_service_fees_sat_total") > 0.0, "{text}");
    assert!(sample(&text, "cohort_engine_seconds_total") > 0.0, "{text}");
    assert!(
        sample(&text, "cohort_phase_seconds_count{phase=\"tree_signatures\"}") >= 2.0,
        "{text}"
    );
    assert!(sample(&text, "cohort_store_seconds_count") > 0.0, "{text}");
    assert!(sample(&text, "cohort_chain_seconds_count") > 0.0, "{text}");
    assert!(text.ends_with("# EOF\n"));

    assert_eq!(http(&service, "GET /healthz HTTP/1.1\r\n\r\n").await, (200, "ok\n".into()));
    let (code, body) = http(&service, "GET /readyz HTTP/1.1\r\n\r\n").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("ready: chain tip"), "{body}");
    assert_eq!(http(&service, "GET /nothing HTTP/1.1\r\n\r\n").await.0, 404);
    assert_eq!(http(&service, "POST /metrics HTTP/1.1\r\n\r\n").await.0, 405);
    let oversized = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(10_000));
    assert_eq!(http(&service, &oversized).await.0, 400);
    service.shutdown("test over").await;
    let _ = std::fs::remove_dir_all(&fx.dir);
}

/// A coordinator whose `Finalized` names another txid than the batch's: the participant
/// takes its own word, not the coordinator's. It raises an alarm naming both txids,
/// records it in its history, and still reports (and keeps its exit paths for) the
/// funding transaction it checked and signed, which is the one that confirms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finalized_naming_another_txid_is_an_alarm() {
    let fx = Fixture::new("alarm");
    let (service, store, uri) = fx.start();
    let mut modes = [Mode::Honest; N];
    modes[0] = Mode::LiedToAtFinalized;
    let (_deposits, mut rx) = participants(&fx, &uri, &modes).await;
    let (mut alarms, mut confirmed, mut funding) = (Vec::new(), 0, Vec::new());
    while confirmed < N {
        match next_report(&mut rx).await {
            Report::Alarm(what) => alarms.push(what),
            Report::Done(Ok(Outcome::Confirmed { funding_txid, .. })) => {
                funding.push(funding_txid);
                confirmed += 1;
            }
            Report::Done(other) => panic!("participant ended with {other:?}"),
            _ => {}
        }
    }
    let stored = store.batches_of_round(1).unwrap().pop().unwrap();
    let txid = stored.funding_tx.compute_txid();
    assert!(funding.iter().all(|f| *f == Some(txid)), "{funding:?} against {txid}");
    assert_eq!(alarms.len(), 1, "{alarms:?}");
    let fake = bitcoin::Txid::from_byte_array([0xee; 32]);
    assert!(alarms[0].contains(&fake.to_string()) && alarms[0].contains(&txid.to_string()));
    service.shutdown("test over").await;
    let _ = std::fs::remove_dir_all(&fx.dir);
}

/// A registration of `deposits` made-up deposits for `round`, signed by nobody: it passes
/// every check but the chain's and the signatures'.
fn bogus_registration(round: u64, deposits: u8) -> cohort_common::messages::Register {
    use cohort_common::keys::Keypair;
    use cohort_common::messages::{DepositRegistration, Register, RegisterBody, RemainderRequest};
    let nonce =
        |k: &Keypair| cohort_common::musig::new_secnonce(&k.point, None, None).public_nonce();
    let user = Keypair::random();
    let remainder = Keypair::random();
    let body = RegisterBody {
        round,
        deposits: (0..deposits)
            .map(|i| DepositRegistration {
                outpoint: bitcoin::OutPoint {
                    txid: bitcoin::Txid::from_byte_array([i; 32]),
                    vout: 0,
                },
                user_key: user.public,
                deposit_csv: 1_000,
                nonce: nonce(&user),
            })
            .collect(),
        leaves: Vec::new(),
        remainder: RemainderRequest {
            script_pubkey: cohort_common::exit::p2tr_single(&remainder),
            cosigner: remainder.point,
            nonces: (0..4).map(|_| nonce(&remainder)).collect(),
        },
        max_fee: bitcoin::Amount::from_sat(20_000),
    };
    let sig = bitcoin::secp256k1::schnorr::Signature::from_slice(&[1; 64]).unwrap();
    Register { body, ownership_sigs: vec![sig; usize::from(deposits)] }
}

/// Sends one registration on a fresh session and returns the coordinator's refusal.
async fn refusal_of(
    uri: &cohort_transport::CoordinatorUri,
    reg: cohort_common::messages::Register,
) -> RefusalReason {
    use cohort_common::messages::{ToCoordinator, ToParticipant};
    let client = Client::connect(uri, &Limits::default()).await.unwrap();
    let (mut send, mut recv) = client.open_session().await.unwrap();
    send.send(&ToCoordinator::Register(reg)).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), recv.recv()).await {
            Ok(Ok(Some(ToParticipant::Refused(r)))) => {
                client.close("done");
                return r.reason;
            }
            Ok(Ok(Some(_))) => {}
            other => panic!("no refusal: {other:?}"),
        }
    }
}

/// A registration that fails a cheap check (here: another round) is refused before any of
/// its 16 deposits is looked up on the chain; one that passes them costs a lookup per
/// deposit, so a flood of the first kind costs the coordinator's node nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_failing_cheap_checks_cost_no_chain_lookup() {
    let fx = Fixture::new("flood");
    let (service, _store, uri) = fx.start();
    expect_announce(&uri, 1).await;
    let lookups = |service: &cohort_coordinator::service::CoordinatorService| {
        sample(&service.metrics().encode(), "cohort_chain_seconds_count")
    };
    let before = lookups(&service);
    for _ in 0..20 {
        let reason = refusal_of(&uri, bogus_registration(99, 16)).await;
        assert!(matches!(reason, RefusalReason::WrongRound { got: 99, .. }), "{reason:?}");
    }
    assert_eq!(lookups(&service), before, "a refused-early registration was looked up");
    let reason = refusal_of(&uri, bogus_registration(1, 16)).await;
    assert!(matches!(reason, RefusalReason::UnknownDeposit(_)), "{reason:?}");
    assert!(lookups(&service) >= before + 17.0, "the tip and each deposit are looked up");
    let text = service.metrics().encode();
    assert_eq!(sample(&text, "cohort_refusals_total{reason=\"wrong_round\"}"), 20.0, "{text}");
    service.shutdown("test over").await;
    let _ = std::fs::remove_dir_all(&fx.dir);
}

/// `admin pause` keeps the next round from opening; `admin drain` during a round closes
/// registration, lets the batch finish (every participant confirmed) and ends the service;
/// the store tells the operator what happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_drain_during_a_round_lets_its_batch_finish() {
    let fx = Fixture::new("drain");
    let (service, store, uri) = fx.start();
    let socket = service.admin_socket().unwrap().to_owned();
    let ask = |req| {
        let socket = socket.clone();
        async move { admin::request(&socket, &req, Duration::from_secs(10)).await.unwrap() }
    };
    let AdminResponse::Status(status) = ask(AdminRequest::Status).await else { panic!() };
    assert_eq!(status.mode, ServiceMode::Running);
    assert_eq!((status.round, status.stage), (Some(1), Some(RoundStage::Registration)));
    assert!(matches!(ask(AdminRequest::Pause).await, AdminResponse::Done(_)));
    let AdminResponse::Status(status) = ask(AdminRequest::Status).await else { panic!() };
    assert_eq!((status.mode, status.next_round_in_ms), (ServiceMode::Paused, None));
    assert!(matches!(ask(AdminRequest::Resume).await, AdminResponse::Done(_)));

    // Fewer participants than close the round: only the drain closes its registration.
    let (deposits, mut rx) = participants(&fx, &uri, &[Mode::Honest; N - 2]).await;
    let mut registered = 0;
    while registered < N - 2 {
        if let Report::Registered = next_report(&mut rx).await {
            registered += 1;
        }
    }
    let drained = service.drained();
    let answer = ask(AdminRequest::Drain).await;
    assert!(matches!(&answer, AdminResponse::Done(what) if what.contains("round 1")), "{answer:?}");
    let mut confirmed = 0;
    while confirmed < N - 2 {
        match next_report(&mut rx).await {
            Report::Done(Ok(Outcome::Confirmed { .. })) => confirmed += 1,
            Report::Done(other) => panic!("participant ended with {other:?}"),
            _ => {}
        }
    }
    tokio::time::timeout(Duration::from_secs(10), drained).await.expect("drain never completed");
    for d in &deposits {
        assert!(fx.ledger.utxo(&d.outpoint).unwrap().is_none(), "deposit spent by the batch");
    }
    // The engine has ended: the admin channel says so, and no round 2 was opened.
    let after = ask(AdminRequest::Status).await;
    assert!(matches!(&after, AdminResponse::Error(why) if why.contains("stopped")), "{after:?}");
    assert_eq!(store.recent_rounds(10).unwrap().len(), 1, "a round opened while draining");
    service.shutdown("drained").await;
    drop(store);

    // A restarted service tells what happened to round 1.
    let (service, _store, _) = fx.start();
    let socket = service.admin_socket().unwrap().to_owned();
    let ask = |req| {
        let socket = socket.clone();
        async move { admin::request(&socket, &req, Duration::from_secs(10)).await.unwrap() }
    };
    let AdminResponse::Round(detail) = ask(AdminRequest::Round { round: 1 }).await else {
        panic!("round 1")
    };
    assert_eq!((detail.summary.registrations, detail.summary.finalized), (N - 2, 1));
    assert!(detail.attempts[0].status.starts_with("confirmed at"), "{detail:?}");
    let AdminResponse::Batch(batch) = ask(AdminRequest::Batch { round: 1, batch: 0 }).await else {
        panic!("batch 1:0")
    };
    assert!(batch.tree_nodes > 0);
    assert_eq!(batch.attempts[0].inputs, N - 2);
    let missing = ask(AdminRequest::Batch { round: 1, batch: 9 }).await;
    assert!(matches!(missing, AdminResponse::Error(_)));
    let AdminResponse::Rounds(rounds) = ask(AdminRequest::Rounds { limit: 10 }).await else {
        panic!()
    };
    assert_eq!(rounds.iter().map(|r| r.round).collect::<Vec<_>>(), vec![2, 1]);
    service.shutdown("test over").await;
    let _ = std::fs::remove_dir_all(&fx.dir);
}
