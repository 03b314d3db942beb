//! The simulator's random numbers (pure): one small seeded generator, so the same `--seed`
//! replays the same race (start offsets, paces, GPS noise, who gets which fault and where).
//!
//! How it fits: [`super::plan`] draws each racer's plan from it, [`super::track`] each fix's
//! noise, [`super::faults`] the bad day, and [`super::patrol`] the devices' walks; nothing
//! here knows about rides, racers or cities.

/// SplitMix64: a tiny, well-mixed generator, so a seed reproduces a run exactly without a
/// dependency.
#[derive(Debug, Clone, Copy)]
pub struct SplitMix64 {
    /// The generator's whole state.
    state: u64,
}

impl SplitMix64 {
    /// A generator started at `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[low, high)`.
    pub fn range(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }
}
