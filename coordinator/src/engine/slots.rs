//! Per-signer contributions to one phase of an attempt (after `musig2`'s
//! `FirstRound`/`SecondRound` slots): each member fills its slot once; the very same
//! contribution sent again is accepted without effect (a participant may re-send after
//! a reconnect), a different one is misbehaviour, and [`Slots::holdouts`] names who has
//! not delivered when a deadline passes.

/// What became of a contribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// The first delivery: taken.
    Taken {
        /// Whether every member has now delivered.
        complete: bool,
    },
    /// The same contribution again: nothing changes.
    Repeated,
}

/// Why a contribution was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotError<E> {
    /// The sender is not a member of this attempt.
    #[error("not a member of the attempt")]
    NotMember,
    /// The member already delivered something else: misbehaviour.
    #[error("a second, different contribution")]
    Conflict,
    /// The first delivery did not pass its check.
    #[error("invalid contribution")]
    Invalid(#[source] E),
}

/// One slot per member of an attempt, by member index.
#[derive(Debug, Clone)]
pub struct Slots<T> {
    members: Vec<u64>,
    got: Vec<Option<T>>,
    filled: usize,
}

impl<T: PartialEq> Slots<T> {
    /// Empty slots for `members` (registration ids, in batch order).
    pub fn new(members: Vec<u64>) -> Self {
        let got = members.iter().map(|_| None).collect();
        Slots { members, got, filled: 0 }
    }

    /// Offers member `index`'s contribution: `check` runs on a first delivery only.
    pub fn offer<E>(
        &mut self,
        index: usize,
        value: T,
        check: impl FnOnce(&T) -> Result<(), E>,
    ) -> Result<Offer, SlotError<E>> {
        let slot = self.got.get_mut(index).ok_or(SlotError::NotMember)?;
        match slot {
            Some(held) if *held == value => Ok(Offer::Repeated),
            Some(_) => Err(SlotError::Conflict),
            None => {
                check(&value).map_err(SlotError::Invalid)?;
                *slot = Some(value);
                self.filled += 1;
                Ok(Offer::Taken { complete: self.is_complete() })
            }
        }
    }

    /// Whether every member has delivered.
    pub fn is_complete(&self) -> bool {
        self.filled == self.got.len()
    }

    /// Whether member `index` has delivered.
    pub fn has(&self, index: usize) -> bool {
        self.got.get(index).is_some_and(Option::is_some)
    }

    /// The registrations that have not delivered.
    pub fn holdouts(&self) -> Vec<u64> {
        self.members.iter().zip(&self.got).filter(|(_, g)| g.is_none()).map(|(m, _)| *m).collect()
    }

    /// Member `index`'s contribution, if delivered.
    pub fn get(&self, index: usize) -> Option<&T> {
        self.got.get(index).and_then(Option::as_ref)
    }

    /// Every delivered contribution with its member index.
    pub fn delivered(&self) -> impl Iterator<Item = (usize, &T)> {
        self.got.iter().enumerate().filter_map(|(i, g)| g.as_ref().map(|v| (i, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(_: &u8) -> Result<(), &'static str> {
        Ok(())
    }

    #[test]
    fn identical_resend_is_idempotent_and_a_different_one_conflicts() {
        let mut s = Slots::new(vec![10, 20]);
        assert_eq!(s.holdouts(), vec![10, 20]);
        assert_eq!(s.offer(0, 1u8, ok), Ok(Offer::Taken { complete: false }));
        assert_eq!(s.offer(0, 1u8, |_| Err("checked again")), Ok(Offer::Repeated));
        assert_eq!(s.offer(0, 2u8, ok), Err(SlotError::Conflict));
        assert_eq!(s.holdouts(), vec![20]);
        assert_eq!(s.offer(1, 3u8, |_| Err("bad")), Err(SlotError::Invalid("bad")));
        assert!(!s.has(1));
        assert_eq!(s.get(0), Some(&1));
        assert_eq!(s.offer(1, 3u8, ok), Ok(Offer::Taken { complete: true }));
        assert!(s.holdouts().is_empty() && s.is_complete());
        assert_eq!(s.offer(2, 3u8, ok), Err(SlotError::NotMember));
        assert_eq!(s.delivered().map(|(i, v)| (i, *v)).collect::<Vec<_>>(), vec![(0, 1), (1, 3)]);
    }
}
