//! Collecting partial signatures: tree signatures, the signed tree, deposit
//! signatures, the complete funding transaction, broadcast and confirmation.

use std::time::Instant;

use bitcoin::Txid;
use cohort_common::messages::{
    Abort, AbortReason, Confirmed, Finalized, Reason, SignedTree, ToParticipant,
};

use super::{BatchPhase, Coordinator, Event};

impl Coordinator {
    pub(super) fn on_tree_sigs(
        &mut self,
        now: Instant,
        reg: u64,
        sigs: cohort_common::messages::TreeSigs,
    ) {
        let Some(b) = self.batch_of(reg) else { return };
        let Some(round) = &mut self.round else { return };
        let Some(BatchPhase::SigningTree { attempt, .. }) = round.batches.get_mut(b as usize)
        else {
            return;
        };
        if sigs.batch != b || sigs.attempt != attempt.number {
            return; // Stale: an earlier attempt's message.
        }
        let Some(m) = attempt.member_index(reg) else { return };
        match attempt.add_tree_sigs(m, &sigs.sigs) {
            Err(_) => self.fail_member(now, reg, AbortReason::InvalidMessage, true),
            Ok(false) => {}
            Ok(true) => self.finish_tree(now, b),
        }
    }

    pub(super) fn finish_tree(&mut self, now: Instant, b: u32) {
        let timeout = self.config.phase_timeout;
        let Some(round) = &mut self.round else { return };
        let round_id = round.params.round;
        let Some(phase) = round.batches.get_mut(b as usize) else { return };
        let BatchPhase::SigningTree { attempt, .. } = phase else { return };
        match attempt.combine_tree() {
            Err(culprits) => {
                self.abort_attempt(now, b, culprits, AbortReason::InvalidPartialSignature, true);
            }
            Ok(()) => {
                let nodes = attempt.signed_nodes();
                let number = attempt.number;
                for (m, id) in attempt.members.iter().enumerate() {
                    if let Some(r) = round.registrations.get(id) {
                        let msg = SignedTree {
                            batch: b,
                            attempt: number,
                            sigs: attempt.signed_tree_for(m),
                        };
                        self.outbox.push_back((r.peer, ToParticipant::SignedTree(msg)));
                    }
                }
                self.events.push_back(Event::TreeSigned {
                    round: round_id,
                    batch: b,
                    attempt: number,
                    nodes,
                });
                let taken = std::mem::replace(phase, BatchPhase::Failed);
                if let BatchPhase::SigningTree { attempt, .. } = taken {
                    *phase = BatchPhase::SigningDeposits { attempt, deadline: now + timeout };
                }
            }
        }
    }

    pub(super) fn on_deposit_sigs(
        &mut self,
        now: Instant,
        reg: u64,
        sigs: cohort_common::messages::DepositSigs,
    ) {
        let Some(b) = self.batch_of(reg) else { return };
        let Some(round) = &mut self.round else { return };
        let round_id = round.params.round;
        let Some(phase) = round.batches.get_mut(b as usize) else { return };
        let BatchPhase::SigningDeposits { attempt, .. } = phase else {
            if matches!(phase, BatchPhase::SigningTree { attempt, .. } if attempt.number == sigs.attempt)
            {
                // Deposit signatures before the tree is signed: out of order.
                self.fail_member(now, reg, AbortReason::InvalidMessage, true);
            }
            return;
        };
        if sigs.batch != b || sigs.attempt != attempt.number {
            return;
        }
        let Some(m) = attempt.member_index(reg) else { return };
        match attempt.add_deposit_sigs(m, &sigs.sigs) {
            Err(_) => self.fail_member(now, reg, AbortReason::InvalidMessage, true),
            Ok(false) => {}
            Ok(true) => match attempt.complete_funding() {
                Err(culprits) => {
                    self.abort_attempt(now, b, culprits, AbortReason::InvalidPartialSignature, true)
                }
                Ok(tx) => {
                    self.events.push_back(Event::Broadcast {
                        round: round_id,
                        batch: b,
                        tx: Box::new(tx),
                    });
                    let taken = std::mem::replace(phase, BatchPhase::Failed);
                    if let BatchPhase::SigningDeposits { attempt, .. } = taken {
                        *phase = BatchPhase::Broadcasting { attempt };
                    }
                }
            },
        }
    }

    /// The driver's answer to [`Event::Broadcast`].
    pub fn broadcast_result(&mut self, now: Instant, batch: u32, result: Result<Txid, String>) {
        let _ = now;
        let Some(round) = &mut self.round else { return };
        let round_id = round.params.round;
        let Some(phase) = round.batches.get_mut(batch as usize) else { return };
        let BatchPhase::Broadcasting { attempt } = phase else { return };
        let members = attempt.members.clone();
        let attempts = attempt.number;
        match result {
            Ok(txid) => {
                for id in &members {
                    if let Some(r) = round.registrations.get(id) {
                        self.outbox.push_back((
                            r.peer,
                            ToParticipant::Finalized(Finalized { batch, txid }),
                        ));
                    }
                }
                *phase = BatchPhase::Finalized { attempts, members, txid };
                self.events.push_back(Event::BatchFinalized {
                    round: round_id,
                    batch,
                    attempts,
                    txid,
                });
            }
            Err(e) => {
                let reason = AbortReason::Other(Reason::new(format!("broadcast failed: {e}")));
                for id in &members {
                    if let Some(r) = round.registrations.get(id) {
                        let abort = Abort {
                            batch,
                            attempt: attempts,
                            reason: reason.clone(),
                            excluded: Vec::new(),
                        };
                        self.outbox.push_back((r.peer, ToParticipant::Abort(abort)));
                    }
                }
                *phase = BatchPhase::Failed;
                self.events.push_back(Event::BatchFailed { round: round_id, batch, reason });
                self.maybe_finish_round();
            }
        }
    }

    /// The driver saw a funding transaction confirm.
    pub fn confirmed(&mut self, _now: Instant, txid: Txid, height: u32) {
        let Some(round) = &mut self.round else { return };
        let round_id = round.params.round;
        for (b, phase) in round.batches.iter_mut().enumerate() {
            if let BatchPhase::Finalized { members, txid: t, .. } = phase {
                if *t != txid {
                    continue;
                }
                for id in members.iter() {
                    if let Some(r) = round.registrations.get(id) {
                        let msg = Confirmed { batch: b as u32, height };
                        self.outbox.push_back((r.peer, ToParticipant::Confirmed(msg)));
                    }
                }
                *phase = BatchPhase::Confirmed { txid };
                self.events.push_back(Event::BatchConfirmed {
                    round: round_id,
                    batch: b as u32,
                    height,
                });
            }
        }
        self.maybe_finish_round();
    }

    /// Funding transactions broadcast and not yet confirmed.
    pub fn awaiting_confirmation(&self) -> Vec<Txid> {
        self.batches()
            .iter()
            .filter_map(|p| match p {
                BatchPhase::Finalized { txid, .. } => Some(*txid),
                _ => None,
            })
            .collect()
    }
}
