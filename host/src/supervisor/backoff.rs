//! Restart back-off, as the kubelet does it: the delay starts at a base (10 s), doubles after
//! each restart up to a cap (5 min), and goes back to the base once a container ran for a while
//! (10 min) without exiting.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct BackOff {
    base: Duration,
    cap: Duration,
    reset_after: Duration,
    next: Duration,
}

impl BackOff {
    pub const KUBELET_BASE: Duration = Duration::from_secs(10);
    pub const KUBELET_CAP: Duration = Duration::from_secs(300);
    pub const KUBELET_RESET: Duration = Duration::from_secs(600);

    /// Kubelet's constants, with the base scaled (for tests); cap and reset scale with it.
    pub fn new(base: Duration) -> Self {
        let scale = base.as_secs_f64() / Self::KUBELET_BASE.as_secs_f64();
        BackOff {
            base,
            cap: Self::KUBELET_CAP.mul_f64(scale),
            reset_after: Self::KUBELET_RESET.mul_f64(scale),
            next: base,
        }
    }

    /// The delay before the next restart of a container that ran for `ran`.
    pub fn next_delay(&mut self, ran: Duration) -> Duration {
        if ran >= self.reset_after {
            self.next = self.base;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(self.cap);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets_after_a_long_run() {
        let mut b = BackOff::new(BackOff::KUBELET_BASE);
        let short = Duration::from_secs(1);
        let delays: Vec<u64> = (0..7).map(|_| b.next_delay(short).as_secs()).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(b.next_delay(Duration::from_secs(600)).as_secs(), 10);
        assert_eq!(b.next_delay(short).as_secs(), 20);
        let mut fast = BackOff::new(Duration::from_millis(100));
        assert_eq!(fast.next_delay(short), Duration::from_millis(100));
        assert_eq!(fast.next_delay(short), Duration::from_millis(200));
    }
}
