//! Test-only fault injection (`netclaim run --inject-fault <fault>`, hidden): failures the
//! real parts produce only rarely or not on demand, so the recovery paths they open can be
//! tested on the real binary. Never set in production; every use is logged.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// A failure to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Fault {
    /// The next give-back of a device (a rollback or a detach) fails before it starts,
    /// once per time the fault is given: the device stays in the pod as a failed rollback
    /// would leave it.
    GiveBackFailsOnce,
}

/// The armed faults and how many times each may still fire.
#[derive(Debug, Default)]
pub struct Faults {
    armed: Mutex<BTreeMap<Fault, u32>>,
}

impl Faults {
    /// Each fault armed as many times as it is listed (`--inject-fault X --inject-fault X`
    /// fires X twice).
    pub fn once(faults: &[Fault]) -> Self {
        let mut armed = BTreeMap::new();
        for fault in faults {
            *armed.entry(*fault).or_insert(0) += 1;
        }
        Self {
            armed: Mutex::new(armed),
        }
    }

    /// Whether `fault` fires now (using it up).
    pub fn take(&self, fault: Fault) -> bool {
        let mut armed = self
            .armed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match armed.get_mut(&fault) {
            Some(left) if *left > 0 => {
                *left -= 1;
                tracing::warn!(?fault, "injecting a fault (test only)");
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_fires_as_often_as_armed() {
        let faults = Faults::once(&[Fault::GiveBackFailsOnce]);
        assert!(faults.take(Fault::GiveBackFailsOnce));
        assert!(!faults.take(Fault::GiveBackFailsOnce));
        assert!(!Faults::default().take(Fault::GiveBackFailsOnce));
        let twice = Faults::once(&[Fault::GiveBackFailsOnce, Fault::GiveBackFailsOnce]);
        assert!(twice.take(Fault::GiveBackFailsOnce));
        assert!(twice.take(Fault::GiveBackFailsOnce));
        assert!(!twice.take(Fault::GiveBackFailsOnce));
    }
}
