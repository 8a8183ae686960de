//! A small, self-contained deterministic random number generator and the
//! distributions the generator needs.
//!
//! The generator is xoshiro256++ seeded through splitmix64. Everything here is
//! implemented in this crate (no external RNG crate), so the output of a given
//! seed cannot change because a dependency changed its sampling algorithms.

/// One step of splitmix64: advances `state` and returns the next output.
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    mix64(*state)
}

/// The splitmix64 finaliser. A bijection on `u64`, used both for seeding and
/// for turning unique counters into random-looking unique identifiers.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Derives an independent 64-bit key from a seed and a list of stream ids.
pub(crate) fn derive(seed: u64, streams: &[u64]) -> u64 {
    let mut s = seed ^ 0x7E55_E4A0_DA7A_6E11;
    let mut out = splitmix64(&mut s);
    for &x in streams {
        s ^= mix64(x.wrapping_add(out));
        out = splitmix64(&mut s);
    }
    out
}

/// xoshiro256++.
#[derive(Clone, Debug)]
pub(crate) struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub(crate) fn new(seed: u64, streams: &[u64]) -> Rng {
        let mut sm = derive(seed, streams);
        let mut s = [0u64; 4];
        for x in &mut s {
            *x = splitmix64(&mut sm);
        }
        if s == [0; 4] {
            s[0] = 1;
        }
        Rng { s }
    }

    #[inline]
    pub(crate) fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    #[inline]
    pub(crate) fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in (0, 1]: safe to take the logarithm of.
    #[inline]
    pub(crate) fn f64_open0(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `p`.
    #[inline]
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    /// Uniform integer in [0, n). `n` must be > 0 (returns 0 for n == 0).
    #[inline]
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Lemire's multiply-shift; the tiny bias (< n / 2^64) is irrelevant here.
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform index into a slice of length `n`.
    #[inline]
    pub(crate) fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// Picks an element of a non-empty slice.
    #[inline]
    pub(crate) fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.index(items.len())]
    }

    /// Uniform integer in [lo, hi] (inclusive).
    #[inline]
    pub(crate) fn range_i64(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        lo + self.below((hi - lo) as u64 + 1) as i64
    }

    /// Index drawn with probability proportional to `weights`. Non-positive
    /// weights are never chosen; if all are zero, returns 0.
    pub(crate) fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().filter(|w| **w > 0.0).sum();
        if total <= 0.0 {
            return 0;
        }
        let mut x = self.f64() * total;
        let mut last = 0;
        for (i, &w) in weights.iter().enumerate() {
            if w <= 0.0 {
                continue;
            }
            last = i;
            if x < w {
                return i;
            }
            x -= w;
        }
        last
    }

    /// Exponential with the given mean.
    #[inline]
    pub(crate) fn exp(&mut self, mean: f64) -> f64 {
        -self.f64_open0().ln() * mean
    }

    /// Standard normal (Marsaglia polar method, one value per call).
    pub(crate) fn normal(&mut self) -> f64 {
        loop {
            let u = 2.0 * self.f64() - 1.0;
            let v = 2.0 * self.f64() - 1.0;
            let s = u * u + v * v;
            if s > 0.0 && s < 1.0 {
                return u * (-2.0 * s.ln() / s).sqrt();
            }
        }
    }

    /// Gamma(shape, scale): mean shape * scale (Marsaglia–Tsang).
    pub(crate) fn gamma(&mut self, shape: f64, scale: f64) -> f64 {
        if shape.is_nan() || scale.is_nan() || shape <= 0.0 || scale <= 0.0 {
            return 0.0;
        }
        if shape < 1.0 {
            // Boost: Gamma(a) = Gamma(a + 1) * U^(1/a).
            let g = self.gamma(shape + 1.0, 1.0);
            return g * self.f64_open0().powf(1.0 / shape) * scale;
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = 1.0 + c * x;
            if v <= 0.0 {
                continue;
            }
            let v = v * v * v;
            let u = self.f64_open0();
            if u < 1.0 - 0.0331 * x * x * x * x || u.ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
                return d * v * scale;
            }
        }
    }

    /// Beta(a, b).
    pub(crate) fn beta(&mut self, a: f64, b: f64) -> f64 {
        let x = self.gamma(a, 1.0);
        let y = self.gamma(b, 1.0);
        if x + y <= 0.0 {
            return 0.5;
        }
        x / (x + y)
    }

    /// Poisson with the given mean.
    pub(crate) fn poisson(&mut self, mean: f64) -> u64 {
        if mean.is_nan() || mean <= 0.0 {
            return 0;
        }
        if mean < 30.0 {
            // Knuth's multiplication method.
            let limit = (-mean).exp();
            let mut k = 0u64;
            let mut p = self.f64_open0();
            while p > limit {
                k += 1;
                p *= self.f64_open0();
            }
            k
        } else {
            // Normal approximation with continuity correction: plenty for
            // event counts.
            let x = mean + mean.sqrt() * self.normal() + 0.5;
            if x < 0.0 {
                0
            } else {
                x as u64
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_stream_separated() {
        let mut a = Rng::new(1, &[2, 3]);
        let mut b = Rng::new(1, &[2, 3]);
        let mut c = Rng::new(1, &[2, 4]);
        let va: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let vb: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let vc: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(va, vb);
        assert_ne!(va, vc);
    }

    #[test]
    fn distribution_means() {
        let mut r = Rng::new(9, &[]);
        let n = 200_000;
        let mean = |f: &mut dyn FnMut() -> f64| (0..n).map(|_| f()).sum::<f64>() / n as f64;
        let g = mean(&mut || r.gamma(0.7, 3.0));
        assert!((g - 2.1).abs() < 0.05, "gamma mean {g}");
        let g = mean(&mut || r.gamma(4.0, 0.5));
        assert!((g - 2.0).abs() < 0.03, "gamma mean {g}");
        let b = mean(&mut || r.beta(2.0, 8.0));
        assert!((b - 0.2).abs() < 0.005, "beta mean {b}");
        let p = mean(&mut || r.poisson(3.5) as f64);
        assert!((p - 3.5).abs() < 0.03, "poisson mean {p}");
        let p = mean(&mut || r.poisson(50.0) as f64);
        assert!((p - 50.0).abs() < 0.2, "poisson mean {p}");
        let e = mean(&mut || r.exp(2.0));
        assert!((e - 2.0).abs() < 0.03, "exp mean {e}");
    }

    #[test]
    fn mix_is_a_bijection_on_samples() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000u64 {
            assert!(seen.insert(mix64(i)));
        }
    }
}
