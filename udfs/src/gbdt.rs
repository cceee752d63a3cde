//! Gradient-boosted decision trees for a binary label, grown on histograms of binned features: the
//! algorithm of LightGBM and of scikit-learn's `HistGradientBoostingClassifier`, whose defaults these
//! are (learning rate 0.1, 100 trees of at most 31 leaves grown best-first, at least 20 rows a leaf, up to
//! 255 bins a feature, no L2 penalty).
//!
//! Each tree fits a Newton step of the log loss: with `p` the current probability, a row's gradient is
//! `w (p - y)` and its hessian `w p (1 - p)`; a split's gain is `G_L² / (H_L + λ) + G_R² / (H_R + λ) -
//! G² / (H + λ)` and a leaf's value `-learning_rate · G / (H + λ)`. Numbers are cut into at most 255
//! bins at quantiles (midpoints between distinct values when there are fewer); a missing value (NaN) has
//! a bin of its own and each split learns which side it goes to. Categories split natively: sorted by
//! `G / (H + 10)`, the best prefix goes left (categories seen in fewer than 10 rows, and values unseen in
//! training, go with the missing ones).
//!
//! Every node keeps the value it would have as a leaf, so a prediction's log-odds split into one
//! contribution per feature: the change of value along the path, credited to the splitting feature
//! (Saabas's attribution); the contributions plus the model's baseline are the log-odds.

use serde::{Deserialize, Serialize};

use crate::logistic::{ClassWeight, FitError};

/// The bin of a missing value.
const MISSING_BIN: usize = 255;
/// Bins of a histogram: 255 for values, one for missing.
const BINS: usize = 256;
/// Categories seen in fewer training rows of a node are not sorted into the split.
const MIN_CATEGORY_SUPPORT: u32 = 10;
/// Smoothing of a category's gradient ratio when categories are sorted.
const CATEGORY_SMOOTHING: f64 = 10.0;
/// A child needs at least this much hessian.
const MIN_HESSIAN: f64 = 1e-3;
/// Values sampled to choose a numeric feature's bin edges.
const BIN_SAMPLE: usize = 200_000;
/// A missing category code.
pub const MISSING_CODE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    pub learning_rate: f64,
    /// Trees (boosting iterations).
    pub max_iter: usize,
    pub max_leaf_nodes: usize,
    pub min_samples_leaf: usize,
    /// L2 penalty on leaf values (λ).
    pub l2: f64,
    /// Bins for the values of a numeric feature (2 to 255).
    pub max_bins: usize,
    pub class_weight: ClassWeight,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            learning_rate: 0.1,
            max_iter: 100,
            max_leaf_nodes: 31,
            min_samples_leaf: 20,
            l2: 0.0,
            max_bins: 255,
            class_weight: ClassWeight::None,
        }
    }
}

/// One feature's values, for training or prediction.
#[derive(Debug, Clone)]
pub enum Column {
    /// Numbers; NaN is missing.
    Numeric(Vec<f64>),
    /// Category codes, [`MISSING_CODE`] for missing.
    Categorical(Vec<u32>),
}

impl Column {
    fn len(&self) -> usize {
        match self {
            Column::Numeric(v) => v.len(),
            Column::Categorical(v) => v.len(),
        }
    }
}

/// A fitted ensemble: the log-odds of a row is `init` plus the value of the leaf it reaches in every tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub init: f64,
    pub trees: Vec<Tree>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    /// The root first.
    pub nodes: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// What the tree adds to the log-odds of a row that stops here (for an inner node: would add).
    pub value: f64,
    /// Training rows that reached the node.
    pub rows: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<Split>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Split {
    pub feature: usize,
    /// A number goes left when it is at most this.
    #[serde(default)]
    pub threshold: f64,
    /// Category codes that go left (sorted); empty for a numeric split.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_codes: Vec<u32>,
    /// Whether a missing value (or a category that is not in `left_codes` nor was seen) goes left.
    pub missing_left: bool,
    pub left: u32,
    pub right: u32,
    /// The loss reduction of the split.
    pub gain: f64,
}

impl Split {
    fn goes_left(&self, column: &Column, row: usize) -> bool {
        match column {
            Column::Numeric(v) => {
                let x = v[row];
                if x.is_nan() { self.missing_left } else { x <= self.threshold }
            }
            Column::Categorical(v) => match v[row] {
                MISSING_CODE => self.missing_left,
                c => self.left_codes.binary_search(&c).is_ok(),
            },
        }
    }
}

impl Tree {
    fn leaf(&self, columns: &[Column], row: usize) -> usize {
        let mut at = 0;
        while let Some(s) = &self.nodes[at].split {
            at = if s.goes_left(&columns[s.feature], row) { s.left } else { s.right } as usize;
        }
        at
    }
}

impl Model {
    /// The log-odds of every row.
    pub fn log_odds(&self, columns: &[Column], rows: usize) -> Vec<f64> {
        let mut z = vec![self.init; rows];
        for tree in &self.trees {
            for (row, z) in z.iter_mut().enumerate() {
                *z += tree.nodes[tree.leaf(columns, row)].value;
            }
        }
        z
    }

    /// The log-odds before any split: the initial score plus every root's value.
    pub fn baseline(&self) -> f64 {
        self.init + self.trees.iter().map(|t| t.nodes[0].value).sum::<f64>()
    }

    /// Each feature's contribution to `row`'s log-odds (Saabas): added to [`Model::baseline`], the
    /// log-odds.
    pub fn contributions(&self, columns: &[Column], row: usize) -> Vec<f64> {
        let mut out = vec![0.0; columns.len()];
        for tree in &self.trees {
            let mut at = 0;
            while let Some(s) = &tree.nodes[at].split {
                let next = if s.goes_left(&columns[s.feature], row) { s.left } else { s.right } as usize;
                out[s.feature] += tree.nodes[next].value - tree.nodes[at].value;
                at = next;
            }
        }
        out
    }

    /// Per feature: the gain of its splits, summed over the trees.
    pub fn gains(&self, features: usize) -> Vec<f64> {
        let mut out = vec![0.0; features];
        for s in self.trees.iter().flat_map(|t| &t.nodes).filter_map(|n| n.split.as_ref()) {
            out[s.feature] += s.gain;
        }
        out
    }
}

/// Fits `options.max_iter` trees (fewer when no split lowers the loss any more).
pub fn fit(columns: &[Column], y: &[bool], options: &Options) -> Result<Model, FitError> {
    let n = y.len();
    if n == 0 {
        return Err(FitError::Empty);
    }
    if columns.iter().any(|c| c.len() != n) {
        return Err(FitError::Invalid("columns of different lengths".into()));
    }
    let positives = y.iter().filter(|&&v| v).count();
    if positives == 0 || positives == n {
        return Err(FitError::OneClass);
    }
    if !(options.learning_rate > 0.0 && options.learning_rate.is_finite()) {
        return Err(FitError::Invalid(format!("learning_rate must be above 0, not {}", options.learning_rate)));
    }
    if !(2..=255).contains(&options.max_bins) {
        return Err(FitError::Invalid(format!("max_bins must be from 2 to 255, not {}", options.max_bins)));
    }
    if options.max_leaf_nodes < 2 {
        return Err(FitError::Invalid(format!("max_leaf_nodes must be 2 or more, not {}", options.max_leaf_nodes)));
    }
    let (w_neg, w_pos) = match options.class_weight {
        ClassWeight::None => (1.0, 1.0),
        ClassWeight::Balanced => (n as f64 / (2.0 * (n - positives) as f64), n as f64 / (2.0 * positives as f64)),
        ClassWeight::Custom(a, b) => (a, b),
    };
    let weight = |v: bool| if v { w_pos } else { w_neg };
    let binned: Vec<Binned> = columns.iter().map(|c| Binned::new(c, options.max_bins)).collect();
    let total_w: f64 = y.iter().map(|&v| weight(v)).sum();
    let mean = positives as f64 * w_pos / total_w;
    let init = (mean / (1.0 - mean)).ln();
    let mut z = vec![init; n];
    let mut grad = vec![0.0; n];
    let mut hess = vec![0.0; n];
    let mut trees = Vec::new();
    let mut grower = Grower { binned: &binned, options, rows: (0..n as u32).collect(), scratch: Vec::with_capacity(n) };
    for _ in 0..options.max_iter {
        for i in 0..n {
            let p = crate::logistic::sigmoid(z[i]);
            let w = weight(y[i]);
            grad[i] = w * (p - f64::from(u8::from(y[i])));
            hess[i] = w * p * (1.0 - p);
        }
        let (tree, leaves) = grower.grow(&grad, &hess);
        if tree.nodes.len() == 1 {
            break;
        }
        for (node, start, end) in leaves {
            let value = tree.nodes[node].value;
            for &r in &grower.rows[start..end] {
                z[r as usize] += value;
            }
        }
        trees.push(tree);
    }
    Ok(Model { init, trees })
}

/// A training column cut into bins.
struct Binned {
    bins: Vec<u8>,
    /// Numeric: the upper edge of every bin but the last (a value at most `edges[b]` is in bin `b` or
    /// lower). Empty for a categorical column.
    edges: Vec<f64>,
    categorical: bool,
}

impl Binned {
    fn new(column: &Column, max_bins: usize) -> Binned {
        match column {
            Column::Categorical(codes) => Binned {
                bins: codes
                    .iter()
                    .map(|&c| if (c as usize) < MISSING_BIN { c as u8 } else { MISSING_BIN as u8 })
                    .collect(),
                edges: Vec::new(),
                categorical: true,
            },
            Column::Numeric(values) => {
                let present: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
                let step = present.len().div_ceil(BIN_SAMPLE).max(1);
                let mut sample: Vec<f64> = present.iter().step_by(step).copied().collect();
                sample.sort_unstable_by(f64::total_cmp);
                let mut distinct = sample.clone();
                distinct.dedup();
                let edges: Vec<f64> = if distinct.len() <= max_bins {
                    distinct.windows(2).map(|w| w[0] + (w[1] - w[0]) / 2.0).collect()
                } else {
                    let mut e: Vec<f64> = (1..max_bins)
                        .map(|q| {
                            let at = q as f64 / max_bins as f64 * (sample.len() - 1) as f64;
                            let (lo, hi) = (sample[at.floor() as usize], sample[at.ceil() as usize]);
                            lo + (hi - lo) / 2.0
                        })
                        .collect();
                    e.dedup();
                    e
                };
                let bins = values
                    .iter()
                    .map(|v| if v.is_nan() { MISSING_BIN as u8 } else { edges.partition_point(|e| e < v) as u8 })
                    .collect();
                Binned { bins, edges, categorical: false }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Cell {
    g: f64,
    h: f64,
    n: u32,
}

impl Cell {
    fn add(&mut self, o: &Cell) {
        self.g += o.g;
        self.h += o.h;
        self.n += o.n;
    }

    fn minus(&self, o: &Cell) -> Cell {
        Cell { g: self.g - o.g, h: self.h - o.h, n: self.n - o.n }
    }
}

/// A node's histograms: `BINS` cells per feature.
type Histogram = Vec<Cell>;

/// The best split of a node found so far.
#[derive(Debug, Clone)]
struct Candidate {
    feature: usize,
    gain: f64,
    /// Numeric: the last bin that goes left.
    bin: usize,
    /// Categorical: the bins (codes) that go left.
    left_bins: Vec<usize>,
    missing_left: bool,
}

/// A leaf that may still be split.
struct Open {
    node: usize,
    start: usize,
    end: usize,
    total: Cell,
    histogram: Histogram,
    best: Option<Candidate>,
}

struct Grower<'a> {
    binned: &'a [Binned],
    options: &'a Options,
    /// Training rows, grouped by leaf: a leaf holds a range.
    rows: Vec<u32>,
    scratch: Vec<u32>,
}

impl Grower<'_> {
    /// Grows one tree best-first; returns it and its leaves as (node, rows start, rows end).
    fn grow(&mut self, grad: &[f64], hess: &[f64]) -> (Tree, Vec<(usize, usize, usize)>) {
        let n = self.rows.len();
        let histogram = self.histogram(0, n, grad, hess);
        let total = histogram[..BINS].iter().fold(Cell::default(), |mut t, c| {
            t.add(c);
            t
        });
        let mut nodes = vec![Node { value: self.value(&total), rows: total.n, split: None }];
        let mut open = vec![self.open(0, 0, n, total, histogram)];
        let mut leaves = Vec::new();
        while open.len() + leaves.len() < self.options.max_leaf_nodes {
            let Some(k) = open
                .iter()
                .enumerate()
                .filter_map(|(k, o)| Some((k, o.best.as_ref()?.gain)))
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(k, _)| k)
            else {
                break;
            };
            let parent = open.swap_remove(k);
            let c = parent.best.clone().expect("chosen for its split");
            let mid = self.partition(&parent, &c);
            let (left_total, right_total) = {
                let mut l = Cell::default();
                let h = &parent.histogram[c.feature * BINS..(c.feature + 1) * BINS];
                for (b, cell) in h.iter().enumerate() {
                    if goes_left(&c, b, self.binned[c.feature].categorical) {
                        l.add(cell);
                    }
                }
                (l, parent.total.minus(&l))
            };
            // The smaller child's histogram from its rows, the larger one's by subtraction.
            let left_smaller = mid - parent.start <= parent.end - mid;
            let small = if left_smaller {
                self.histogram(parent.start, mid, grad, hess)
            } else {
                self.histogram(mid, parent.end, grad, hess)
            };
            let large: Histogram = parent.histogram.iter().zip(&small).map(|(p, s)| p.minus(s)).collect();
            let (left_h, right_h) = if left_smaller { (small, large) } else { (large, small) };
            let (l, r) = (nodes.len(), nodes.len() + 1);
            nodes.push(Node { value: self.value(&left_total), rows: left_total.n, split: None });
            nodes.push(Node { value: self.value(&right_total), rows: right_total.n, split: None });
            let binned = &self.binned[c.feature];
            nodes[parent.node].split = Some(Split {
                feature: c.feature,
                threshold: if binned.categorical { 0.0 } else { binned.edges[c.bin] },
                left_codes: c.left_bins.iter().map(|&b| b as u32).filter(|&b| b as usize != MISSING_BIN).collect(),
                missing_left: c.missing_left,
                left: l as u32,
                right: r as u32,
                gain: c.gain,
            });
            for child in [
                self.open(l, parent.start, mid, left_total, left_h),
                self.open(r, mid, parent.end, right_total, right_h),
            ] {
                if child.best.is_some() {
                    open.push(child);
                } else {
                    leaves.push((child.node, child.start, child.end));
                }
            }
        }
        leaves.extend(open.into_iter().map(|o| (o.node, o.start, o.end)));
        (Tree { nodes }, leaves)
    }

    fn value(&self, total: &Cell) -> f64 {
        -self.options.learning_rate * total.g / (total.h + self.options.l2)
    }

    fn open(&self, node: usize, start: usize, end: usize, total: Cell, histogram: Histogram) -> Open {
        let mut o = Open { node, start, end, total, histogram, best: None };
        if total.n as usize >= 2 * self.options.min_samples_leaf {
            o.best = self.best_split(&o);
        }
        o
    }

    fn histogram(&self, start: usize, end: usize, grad: &[f64], hess: &[f64]) -> Histogram {
        let rows = &self.rows[start..end];
        let mut out = vec![Cell::default(); self.binned.len() * BINS];
        for (f, b) in self.binned.iter().enumerate() {
            let h = &mut out[f * BINS..(f + 1) * BINS];
            for &r in rows {
                let r = r as usize;
                let cell = &mut h[b.bins[r] as usize];
                cell.g += grad[r];
                cell.h += hess[r];
                cell.n += 1;
            }
        }
        out
    }

    /// Orders the parent's rows so that those going left come first (keeping their order); returns
    /// where the right ones start.
    fn partition(&mut self, parent: &Open, c: &Candidate) -> usize {
        let b = &self.binned[c.feature];
        let mut left_of = [false; BINS];
        for (bin, left) in left_of.iter_mut().enumerate() {
            *left = goes_left(c, bin, b.categorical);
        }
        self.scratch.clear();
        let rows = &mut self.rows[parent.start..parent.end];
        let mut k = 0;
        for i in 0..rows.len() {
            let r = rows[i];
            if left_of[b.bins[r as usize] as usize] {
                rows[k] = r;
                k += 1;
            } else {
                self.scratch.push(r);
            }
        }
        rows[k..].copy_from_slice(&self.scratch);
        parent.start + k
    }

    fn best_split(&self, o: &Open) -> Option<Candidate> {
        let lambda = self.options.l2;
        let min_leaf = self.options.min_samples_leaf as u32;
        let score = |c: &Cell| c.g * c.g / (c.h + lambda);
        let parent_score = score(&o.total);
        let fits = |l: &Cell, r: &Cell| l.n >= min_leaf && r.n >= min_leaf && l.h >= MIN_HESSIAN && r.h >= MIN_HESSIAN;
        let mut best: Option<Candidate> = None;
        let mut consider = |c: Candidate| {
            if c.gain > 1e-12 && best.as_ref().is_none_or(|b| c.gain > b.gain) {
                best = Some(c);
            }
        };
        for (f, binned) in self.binned.iter().enumerate() {
            let h = &o.histogram[f * BINS..(f + 1) * BINS];
            let missing = h[MISSING_BIN];
            if binned.categorical {
                let mut cats: Vec<(usize, f64)> = (0..BINS)
                    .filter(|&b| h[b].n >= MIN_CATEGORY_SUPPORT)
                    .map(|b| (b, h[b].g / (h[b].h + CATEGORY_SMOOTHING)))
                    .collect();
                if cats.len() < 2 {
                    continue;
                }
                cats.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
                let mut left = Cell::default();
                for i in 0..cats.len() - 1 {
                    left.add(&h[cats[i].0]);
                    let right = o.total.minus(&left);
                    if fits(&left, &right) {
                        let gain = score(&left) + score(&right) - parent_score;
                        let mut left_bins: Vec<usize> = cats[..=i].iter().map(|c| c.0).collect();
                        left_bins.sort_unstable();
                        let missing_left = left_bins.contains(&MISSING_BIN);
                        consider(Candidate { feature: f, gain, bin: 0, left_bins, missing_left });
                    }
                }
            } else {
                let bins = binned.edges.len() + 1;
                let directions: &[bool] = if missing.n > 0 { &[false, true] } else { &[false] };
                for &missing_left in directions {
                    let mut left = if missing_left { missing } else { Cell::default() };
                    for (b, cell) in h.iter().enumerate().take(bins - 1) {
                        left.add(cell);
                        let right = o.total.minus(&left);
                        if !fits(&left, &right) {
                            continue;
                        }
                        let gain = score(&left) + score(&right) - parent_score;
                        // With no missing value here, a later one goes with the larger side.
                        let missing_left = missing_left || (missing.n == 0 && left.n >= right.n);
                        consider(Candidate { feature: f, gain, bin: b, left_bins: Vec::new(), missing_left });
                    }
                }
            }
        }
        best
    }
}

/// Whether bin `b` goes left under `c`.
fn goes_left(c: &Candidate, b: usize, categorical: bool) -> bool {
    if b == MISSING_BIN {
        c.missing_left
    } else if categorical {
        c.left_bins.contains(&b)
    } else {
        b <= c.bin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A label a logistic model cannot fit (an interaction) is learned, with NULLs and categories.
    #[test]
    fn learns_an_interaction_with_missing_values_and_categories() {
        let n = 4000;
        let mut x = Vec::new();
        let mut cat = Vec::new();
        let mut y = Vec::new();
        let mut s = 7u64;
        let mut next = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 33) as f64 / (1u64 << 31) as f64
        };
        for _ in 0..n {
            let a = next();
            let c = (next() * 4.0) as u32;
            let missing = next() < 0.1;
            x.push(if missing { f64::NAN } else { a });
            cat.push(if next() < 0.05 { MISSING_CODE } else { c });
            // Positive when (a > 0.5) XOR (c is 1 or 3), and always when a is missing.
            y.push(missing || ((a > 0.5) != (c % 2 == 1)));
        }
        let columns = [Column::Numeric(x), Column::Categorical(cat)];
        let model = fit(&columns, &y, &Options::default()).unwrap();
        let z = model.log_odds(&columns, n);
        let known: Vec<usize> =
            (0..n).filter(|&i| matches!(&columns[1], Column::Categorical(c) if c[i] != MISSING_CODE)).collect();
        let right = known.iter().filter(|&&i| (z[i] > 0.0) == y[i]).count();
        assert!(right as f64 > 0.97 * known.len() as f64, "{right} of {} right", known.len());
        // Contributions add up to the log-odds.
        for i in [0, 1, 17, 999] {
            let sum: f64 = model.contributions(&columns, i).iter().sum();
            assert!((model.baseline() + sum - z[i]).abs() < 1e-9);
        }
        // The same data, the same model.
        assert_eq!(model, fit(&columns, &y, &Options::default()).unwrap());
        assert_eq!(fit(&columns, &[true; 4000], &Options::default()), Err(FitError::OneClass));
    }
}
