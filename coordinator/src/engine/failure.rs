//! When a participant fails: exclusion, bans, aborted attempts, fresh nonces,
//! rebuilt batches, cancels and deadlines.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use bitcoin::OutPoint;
use cohort_common::messages::{Abort, AbortReason, NonceRequest, Renonce, ToParticipant};

use super::{BatchPhase, Coordinator, Event, PeerId, Registration, RoundPhase};

impl Coordinator {
    /// Whether a registration's batch needs nothing more from it: its deposit
    /// signatures are in (or the funding transaction is already out).
    pub(super) fn has_done_its_part(&self, reg: u64) -> bool {
        let Some(b) = self.batch_of(reg) else { return true };
        match self.batches().get(b as usize) {
            Some(BatchPhase::SigningDeposits { attempt, .. }) => {
                !attempt.deposit_holdouts().contains(&reg)
            }
            Some(BatchPhase::SigningTree { .. }) | Some(BatchPhase::Renoncing { .. }) => false,
            _ => true,
        }
    }

    pub(super) fn on_renonce(&mut self, now: Instant, reg: u64, renonce: Renonce) {
        let Some(b) = self.batch_of(reg) else { return };
        let depth = self.round.as_ref().map_or(0, |r| usize::from(r.params.tree.max_depth));
        let Some(round) = &mut self.round else { return };
        let Some(BatchPhase::Renoncing { attempt, waiting, .. }) =
            round.batches.get_mut(b as usize)
        else {
            return;
        };
        if renonce.batch != b || renonce.attempt != *attempt || !waiting.contains(&reg) {
            return;
        }
        let Some(r) = round.registrations.get(&reg) else { return };
        let valid = renonce.leaves.len() == r.member.leaf_keys.len()
            && renonce.deposit_nonces.len() == r.member.deposits.len()
            && renonce.leaves.iter().all(|l| l.nonces.len() == depth)
            && renonce
                .leaves
                .iter()
                .all(|l| !round.taken.cosigners.contains(&l.cosigner.serialize()));
        let mut distinct: Vec<[u8; 33]> =
            renonce.leaves.iter().map(|l| l.cosigner.serialize()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        if !valid || distinct.len() != renonce.leaves.len() {
            return self.fail_member(now, reg, AbortReason::InvalidMessage, true);
        }
        for key in distinct {
            round.taken.cosigners.insert(key);
        }
        if let Some(r) = round.registrations.get_mut(&reg) {
            r.member.leaf_keys = renonce.leaves.iter().map(|l| l.cosigner).collect();
            r.member.leaf_nonces = renonce.leaves.into_iter().map(|l| l.nonces).collect();
            r.member.deposit_nonces = renonce.deposit_nonces;
        }
        waiting.retain(|w| *w != reg);
        if waiting.is_empty() {
            self.rebuild(now, b);
        }
    }

    pub(super) fn rebuild(&mut self, now: Instant, b: u32) {
        let Some(round) = &mut self.round else { return };
        let Some(phase) = round.batches.get_mut(b as usize) else { return };
        let BatchPhase::Renoncing { attempt, members, waiting, .. } = phase else { return };
        let (attempt, members) = (*attempt, std::mem::take(members));
        let members: Vec<u64> = members.into_iter().filter(|m| !waiting.contains(m)).collect();
        let built = self.build_attempts(vec![(b, attempt, members)]);
        for b in built {
            self.install_attempt(now, attempt, b);
        }
        self.maybe_finish_round();
    }

    pub(super) fn on_cancel(&mut self, now: Instant, peer: PeerId, reg: u64) {
        if self.withdraw_before_batches(reg) {
            self.peers.insert(peer, None);
            return;
        }
        // Before its deposit signatures a member may leave; its deposits are not banned.
        if !self.has_done_its_part(reg) {
            self.fail_member(now, reg, AbortReason::Cancelled, false);
        }
    }

    /// During registration, drops a registration and frees its deposits; leaving then
    /// costs nothing. Returns whether registration was still open.
    pub(super) fn withdraw_before_batches(&mut self, reg: u64) -> bool {
        let Some(round) = &mut self.round else { return false };
        if !matches!(round.phase, RoundPhase::Registration { .. }) {
            return false;
        }
        if let Some(r) = round.registrations.remove(&reg) {
            for (op, _) in &r.member.deposits {
                round.taken.outpoints.remove(op);
            }
        }
        true
    }

    /// Excludes `reg` from its batch (banning its deposits if `ban`) and aborts the attempt.
    pub(super) fn fail_member(&mut self, now: Instant, reg: u64, reason: AbortReason, ban: bool) {
        let Some(b) = self.batch_of(reg) else { return };
        self.abort_attempt(now, b, vec![reg], reason, ban);
    }

    pub(super) fn abort_attempt(
        &mut self,
        now: Instant,
        b: u32,
        culprits: Vec<u64>,
        reason: AbortReason,
        ban: bool,
    ) {
        let ban_until = now + self.config.ban_duration;
        let timeout = self.config.phase_timeout;
        let max_attempts = u32::from(self.config.max_attempts);
        let Some(round) = &mut self.round else { return };
        let round_id = round.params.round;
        let Some(phase) = round.batches.get_mut(b as usize) else { return };
        let (number, members) = match phase {
            BatchPhase::SigningTree { attempt, .. }
            | BatchPhase::SigningDeposits { attempt, .. } => {
                (attempt.number, attempt.members.clone())
            }
            BatchPhase::Renoncing { .. } => {
                // Already aborted: drop the culprits from the next attempt, nothing more.
                return self.drop_while_renoncing(now, b, culprits, reason, ban);
            }
            _ => return,
        };
        let until = ban.then_some(ban_until);
        for id in &culprits {
            let regs = (&mut round.registrations, round_id);
            exclude(regs, &mut self.bans, &mut self.events, (b, *id), &reason, until);
        }
        let remaining: Vec<u64> =
            members.iter().copied().filter(|m| !culprits.contains(m)).collect();
        let next = number + 1;
        let give_up = remaining.is_empty() || next > max_attempts;
        for id in &members {
            let Some(r) = round.registrations.get(id) else { continue };
            let abort = Abort {
                batch: b,
                attempt: number,
                reason: if give_up && !culprits.contains(id) {
                    AbortReason::MaxAttempts
                } else {
                    reason.clone()
                },
                excluded: culprits.clone(),
            };
            self.outbox.push_back((r.peer, ToParticipant::Abort(abort)));
            if !give_up && !culprits.contains(id) {
                self.outbox.push_back((
                    r.peer,
                    ToParticipant::NonceRequest(NonceRequest { batch: b, attempt: next }),
                ));
            }
        }
        if give_up {
            *phase = BatchPhase::Failed;
            self.events.push_back(Event::BatchFailed { round: round_id, batch: b, reason });
            self.maybe_finish_round();
        } else {
            *phase = BatchPhase::Renoncing {
                attempt: next,
                waiting: remaining.clone(),
                members: remaining,
                deadline: now + timeout,
            };
        }
    }

    /// Handles every deadline that has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(round) = &self.round else { return };
        if let RoundPhase::Registration { closes_at } = round.phase {
            if now >= closes_at {
                self.close_registration(now);
            }
            return;
        }
        let mut expired = Vec::new();
        for (b, phase) in round.batches.iter().enumerate() {
            match phase {
                BatchPhase::SigningTree { attempt, deadline } if now >= *deadline => {
                    expired.push((b as u32, attempt.tree_holdouts(), false));
                }
                BatchPhase::SigningDeposits { attempt, deadline } if now >= *deadline => {
                    expired.push((b as u32, attempt.deposit_holdouts(), false));
                }
                BatchPhase::Renoncing { waiting, deadline, .. } if now >= *deadline => {
                    expired.push((b as u32, waiting.clone(), true));
                }
                _ => {}
            }
        }
        for (b, holdouts, renoncing) in expired {
            if renoncing {
                self.drop_while_renoncing(now, b, holdouts, AbortReason::Timeout, true);
            } else {
                self.abort_attempt(now, b, holdouts, AbortReason::Timeout, true);
            }
        }
    }

    pub(super) fn drop_while_renoncing(
        &mut self,
        now: Instant,
        b: u32,
        culprits: Vec<u64>,
        reason: AbortReason,
        ban: bool,
    ) {
        let until = ban.then_some(now + self.config.ban_duration);
        let Some(round) = &mut self.round else { return };
        let round_id = round.params.round;
        let Some(BatchPhase::Renoncing { attempt, members, waiting, .. }) =
            round.batches.get_mut(b as usize)
        else {
            return;
        };
        let aborted = attempt.saturating_sub(1);
        members.retain(|m| !culprits.contains(m));
        waiting.retain(|m| !culprits.contains(m));
        let empty = waiting.is_empty();
        for id in culprits {
            let regs = (&mut round.registrations, round_id);
            let Some(peer) =
                exclude(regs, &mut self.bans, &mut self.events, (b, id), &reason, until)
            else {
                continue;
            };
            let abort =
                Abort { batch: b, attempt: aborted, reason: reason.clone(), excluded: vec![id] };
            self.outbox.push_back((peer, ToParticipant::Abort(abort)));
        }
        if empty {
            self.rebuild(now, b);
        }
    }
}

/// Marks a registration excluded from batch `b`, bans its deposits until `ban_until`
/// when given, and records both. Returns its peer.
fn exclude(
    (registrations, round_id): (&mut BTreeMap<u64, Registration>, u64),
    bans: &mut HashMap<OutPoint, Instant>,
    events: &mut VecDeque<Event>,
    (b, id): (u32, u64),
    reason: &AbortReason,
    ban_until: Option<Instant>,
) -> Option<PeerId> {
    let r = registrations.get_mut(&id)?;
    r.active = false;
    if let Some(until) = ban_until {
        for (op, _) in &r.member.deposits {
            bans.insert(*op, until);
            events.push_back(Event::Banned { outpoint: *op, until });
        }
    }
    events.push_back(Event::Excluded {
        round: round_id,
        batch: b,
        registration: id,
        reason: reason.clone(),
    });
    Some(r.peer)
}
