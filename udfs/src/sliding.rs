//! Order statistics of a sliding window: the values kept sorted as they enter and leave, so a
//! window's median, quartiles and median absolute deviation cost a binary search and a shift per step
//! instead of a sort per row. The median absolute deviation needs no second sort either: the
//! deviations below and above the median are two sorted runs, and their median is found by a binary
//! search over both.

/// The values of a window, sorted (by `f64::total_cmp`).
#[derive(Debug, Default, Clone)]
pub struct SortedWindow {
    sorted: Vec<f64>,
}

impl SortedWindow {
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    pub fn clear(&mut self) {
        self.sorted.clear();
    }

    pub fn insert(&mut self, x: f64) {
        let at = self.sorted.partition_point(|v| v.total_cmp(&x).is_lt());
        self.sorted.insert(at, x);
    }

    /// Removes one value equal to `x` (bit for bit); false when there is none.
    pub fn remove(&mut self, x: f64) -> bool {
        let at = self.sorted.partition_point(|v| v.total_cmp(&x).is_lt());
        if at < self.sorted.len() && self.sorted[at].total_cmp(&x).is_eq() {
            self.sorted.remove(at);
            true
        } else {
            false
        }
    }

    /// The `q` quantile, interpolated as `percentile_cont`; NaN when empty.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.sorted.is_empty() {
            return f64::NAN;
        }
        let pos = q * (self.sorted.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        self.sorted[lo] + (pos - lo as f64) * (self.sorted[hi] - self.sorted[lo])
    }

    pub fn median(&self) -> f64 {
        self.quantile(0.5)
    }

    /// The median of |x − center| over the window (interpolated as `percentile_cont`); NaN when empty.
    pub fn median_abs_deviation(&self, center: f64) -> f64 {
        let n = self.sorted.len();
        if n == 0 {
            return f64::NAN;
        }
        // Values at or below the center give deviations that grow towards the start of the window,
        // values above it deviations that grow towards the end: two ascending runs.
        let split = self.sorted.partition_point(|&v| v <= center);
        let below = |j: usize| center - self.sorted[split - 1 - j];
        let above = |j: usize| self.sorted[split + j] - center;
        let (nb, na) = (split, n - split);
        let pos = 0.5 * (n - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        let a = kth_of_two(nb, below, na, above, lo);
        let b = if hi == lo { a } else { kth_of_two(nb, below, na, above, hi) };
        a + (pos - lo as f64) * (b - a)
    }
}

/// The `k`-th smallest (from 0) of the union of two ascending sequences given by length and accessor.
fn kth_of_two(na: usize, a: impl Fn(usize) -> f64, nb: usize, b: impl Fn(usize) -> f64, k: usize) -> f64 {
    debug_assert!(k < na + nb);
    let take = k + 1;
    // How many of the `take` smallest come from `a`: the least i with a(i) >= b(take - i - 1).
    let (mut lo, mut hi) = (take.saturating_sub(nb), take.min(na));
    while lo < hi {
        let i = (lo + hi) / 2;
        if a(i) < b(take - i - 1) {
            lo = i + 1;
        } else {
            hi = i;
        }
    }
    let (i, j) = (lo, take - lo);
    let last_a = if i > 0 { a(i - 1) } else { f64::NEG_INFINITY };
    let last_b = if j > 0 { b(j - 1) } else { f64::NEG_INFINITY };
    last_a.max(last_b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted_quantile(v: &[f64], q: f64) -> f64 {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        let pos = q * (s.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        s[lo] + (pos - lo as f64) * (s[hi] - s[lo])
    }

    /// Every step of a sliding window over values with ties and outliers gives the quantiles and the
    /// median absolute deviation a sort of the window gives.
    #[test]
    fn sliding_statistics_equal_a_sort_of_the_window() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let values: Vec<f64> = (0..3000)
            .map(|i| {
                let r = next();
                match r % 10 {
                    0 => (r % 7) as f64,                // ties
                    1 => 1e6 * ((r >> 8) % 100) as f64, // outliers
                    _ => ((r >> 11) % 10_000) as f64 / 7.0 + (i % 50) as f64,
                }
            })
            .collect();
        for window in [1usize, 2, 3, 4, 5, 10, 61] {
            let mut w = SortedWindow::default();
            for (i, &x) in values.iter().enumerate() {
                w.insert(x);
                if i >= window {
                    assert!(w.remove(values[i - window]));
                }
                let frame = &values[(i + 1).saturating_sub(window)..=i];
                assert_eq!(w.len(), frame.len());
                for q in [0.0, 0.25, 0.5, 0.75, 1.0] {
                    assert_eq!(w.quantile(q), sorted_quantile(frame, q), "window {window}, row {i}, q {q}");
                }
                let m = w.median();
                let dev: Vec<f64> = frame.iter().map(|v| (v - m).abs()).collect();
                assert_eq!(w.median_abs_deviation(m), sorted_quantile(&dev, 0.5), "window {window}, row {i}");
                // Around any center, not only the median.
                let c = frame[0] + 0.5;
                let dev: Vec<f64> = frame.iter().map(|v| (v - c).abs()).collect();
                assert_eq!(w.median_abs_deviation(c), sorted_quantile(&dev, 0.5), "window {window}, row {i}");
            }
        }
        let mut w = SortedWindow::default();
        assert!(w.median().is_nan() && w.median_abs_deviation(0.0).is_nan());
        w.insert(1.0);
        assert!(!w.remove(2.0));
    }
}
