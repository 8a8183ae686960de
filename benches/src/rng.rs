//! A deterministic random stream for synthetic data (shared by the
//! benchmark binary and the criterion micro-benchmarks).

/// splitmix64: the same stream for the same seed, good enough for
/// synthetic data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (up to a bias of n / 2^64).
    #[allow(dead_code)] // used by the micro-benchmarks only
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
