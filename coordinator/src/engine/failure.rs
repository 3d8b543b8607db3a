//! When a participant fails: exclusion, bans, aborted attempts, fresh nonces,
//! cancels and deadlines. The batch decides what an abort means for its phase
//! (`batch.rs`); the engine excludes the culprits and bans their deposits here.

use std::time::{Duration, Instant};

use cohort_common::messages::{AbortReason, Renonce};

use super::batch::Ban;
use super::{BanState, BatchPhase, Coordinator, CoordinatorConfig, Event, PeerId, RoundPhase};

impl Coordinator {
    /// Whether `reg`'s batch still needs something from it: false once its deposit
    /// signatures are in (or the funding transaction is already out).
    pub(super) fn still_needs(&self, reg: u64) -> bool {
        let Some(b) = self.batch_of(reg) else { return false };
        self.batches().get(b as usize).is_some_and(|p| p.needs(reg))
    }

    pub(super) fn on_renonce(&mut self, now: Instant, reg: u64, renonce: Renonce) {
        let Some(b) = self.batch_of(reg) else { return };
        let Some(round) = &mut self.round else { return };
        let depth = usize::from(round.params.tree.max_depth);
        let Some(phase) = round.batches.get(b as usize) else { return };
        if renonce.batch != b || !phase.waits_for_nonces(reg, renonce.attempt) {
            return;
        }
        let Some(r) = round.registrations.get(&reg) else { return };
        let valid = renonce.leaves.len() == r.member.batch.leaf_keys.len()
            && renonce.deposit_nonces.len() == r.member.batch.deposits.len()
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
            return self.fail_member(now, reg, AbortReason::InvalidMessage, Ban::Yes);
        }
        for key in distinct {
            round.taken.cosigners.insert(key);
        }
        if let Some(r) = round.registrations.get_mut(&reg) {
            r.member.batch.leaf_keys = renonce.leaves.iter().map(|l| l.cosigner).collect();
            r.member.leaf_nonces = renonce.leaves.into_iter().map(|l| l.nonces).collect();
            r.member.deposit_nonces = renonce.deposit_nonces;
        }
        self.on_batch(now, b, |phase, _| phase.renonced(reg));
    }

    pub(super) fn on_cancel(&mut self, now: Instant, peer: PeerId, reg: u64) {
        if self.withdraw_before_batches(reg) {
            self.peers.insert(peer, None);
            return;
        }
        // Before its deposit signatures a member may leave; its deposits are not banned.
        if self.still_needs(reg) {
            self.fail_member(now, reg, AbortReason::Cancelled, Ban::No);
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
            for (op, _) in &r.member.batch.deposits {
                round.taken.outpoints.remove(op);
            }
        }
        true
    }

    /// Excludes `reg` from its batch (banning its deposits if `ban`) and aborts the attempt.
    pub(super) fn fail_member(&mut self, now: Instant, reg: u64, reason: AbortReason, ban: Ban) {
        let Some(b) = self.batch_of(reg) else { return };
        self.abort_attempt(now, b, vec![reg], reason, ban);
    }

    /// Excludes `culprits` from batch `b` and has the batch abort its attempt.
    pub(super) fn abort_attempt(
        &mut self,
        now: Instant,
        b: u32,
        culprits: Vec<u64>,
        reason: AbortReason,
        ban: Ban,
    ) {
        let aborting = self.batches().get(b as usize).is_some_and(|p| {
            matches!(
                p,
                BatchPhase::SigningTree(_)
                    | BatchPhase::SigningDeposits(_)
                    | BatchPhase::Renoncing(_)
            )
        });
        if !aborting {
            return;
        }
        for id in &culprits {
            self.exclude(now, b, *id, &reason, ban);
        }
        self.on_batch(now, b, |phase, ctx| phase.abort(&culprits, reason, ctx));
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
        let expired: Vec<(u32, Vec<u64>)> = round
            .batches
            .iter()
            .enumerate()
            .filter_map(|(b, phase)| phase.expired(now).map(|late| (b as u32, late)))
            .collect();
        for (b, holdouts) in expired {
            self.abort_attempt(now, b, holdouts, AbortReason::Timeout, Ban::Yes);
        }
    }

    /// Marks a registration excluded from batch `b`, bans its deposits if `ban`, and
    /// records both.
    fn exclude(&mut self, now: Instant, b: u32, id: u64, reason: &AbortReason, ban: Ban) {
        let Some(round) = &mut self.round else { return };
        let Some(r) = round.registrations.get_mut(&id) else { return };
        r.active = false;
        if ban == Ban::Yes {
            for (op, _) in &r.member.batch.deposits {
                let offences = self.bans.get(op).map_or(0, |b| b.offences).saturating_add(1);
                let until = now + ban_length(&self.config, offences);
                self.bans.insert(*op, BanState { until, offences });
                self.events.push_back(Event::Banned { outpoint: *op, until, offences });
            }
        }
        self.events.push_back(Event::Excluded {
            round: round.params.round,
            batch: b,
            registration: id,
            reason: reason.clone(),
        });
    }
}

/// How long the `offences`-th offence of a deposit is banned: `ban_duration` doubled for
/// each earlier offence, at most `max_ban_duration`.
pub(super) fn ban_length(config: &CoordinatorConfig, offences: u32) -> Duration {
    let doublings = offences.saturating_sub(1).min(31);
    config.ban_duration.saturating_mul(1 << doublings).min(config.max_ban_duration)
}
