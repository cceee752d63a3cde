//! Logistic regression fitted by Newton's method (iteratively reweighted least squares) on standardised
//! features, with L2 regularisation and class weights. The solver reports whether it converged.
//!
//! It minimises `sum_i w_i (log(1 + e^z_i) - y_i z_i) + l2 / 2 * |beta|^2` with `z = b0 + X beta` over
//! the standardised features; the intercept is not penalised. This is scikit-learn's
//! `LogisticRegression(C = 1 / l2)` objective when the features are standardised the same way.

use ndarray::{Array1, Array2, Axis, s};

/// Rows per block when the Hessian is accumulated.
const BLOCK: usize = 16_384;

/// How much each class weighs in the loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClassWeight {
    /// Every row weighs 1.
    None,
    /// Each class weighs n / (2 n_class), as scikit-learn's `class_weight="balanced"`.
    Balanced,
    /// Weights of the negative and the positive class.
    Custom(f64, f64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    pub l2: f64,
    pub class_weight: ClassWeight,
    pub max_iter: usize,
    /// Convergence: the largest Newton step on a standardised coefficient.
    pub tol: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options { l2: 1.0, class_weight: ClassWeight::None, max_iter: 100, tol: 1e-8 }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    #[error("no training rows")]
    Empty,
    #[error("the label has a single class; a model needs both")]
    OneClass,
    #[error("{0}")]
    Invalid(String),
}

/// A fitted model. Coefficients are on standardised features; [`Model::raw_coefficients`] gives them
/// on the original scale.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Model {
    pub intercept: f64,
    pub coef: Vec<f64>,
    pub means: Vec<f64>,
    pub scales: Vec<f64>,
    pub converged: bool,
    pub iterations: usize,
}

/// The logistic function, without overflow for large |z|.
pub(crate) fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// Solves `a x = b` for a symmetric positive definite `a` by Cholesky; `None` when `a` is not.
fn cholesky_solve(a: &Array2<f64>, b: &Array1<f64>) -> Option<Array1<f64>> {
    let n = a.nrows();
    let mut l = Array2::<f64>::zeros((n, n));
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[[i, k]] * l[[j, k]]).sum();
            if i == j {
                let d = a[[i, i]] - s;
                if d <= 0.0 || !d.is_finite() {
                    return None;
                }
                l[[i, i]] = d.sqrt();
            } else {
                l[[i, j]] = (a[[i, j]] - s) / l[[j, j]];
            }
        }
    }
    let mut y = Array1::<f64>::zeros(n);
    for i in 0..n {
        let s: f64 = (0..i).map(|k| l[[i, k]] * y[k]).sum();
        y[i] = (b[i] - s) / l[[i, i]];
    }
    let mut x = Array1::<f64>::zeros(n);
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| l[[k, i]] * x[k]).sum();
        x[i] = (y[i] - s) / l[[i, i]];
    }
    Some(x)
}

/// Fits a model to rows `x` (one row per example) and labels `y`.
/// `x` is standardised in place, so the largest allocation is the caller's matrix itself.
pub fn fit(mut x: Array2<f64>, y: &[bool], options: &Options) -> Result<Model, FitError> {
    let (n, d) = x.dim();
    if n == 0 {
        return Err(FitError::Empty);
    }
    if y.len() != n {
        return Err(FitError::Invalid(format!("{n} rows but {} labels", y.len())));
    }
    if !(options.l2 >= 0.0 && options.l2.is_finite()) {
        return Err(FitError::Invalid(format!("l2 must be 0 or more, not {}", options.l2)));
    }
    if x.iter().any(|v| !v.is_finite()) {
        return Err(FitError::Invalid("features must be finite numbers (no NULL, NaN or infinity)".into()));
    }
    let positives = y.iter().filter(|&&b| b).count();
    if positives == 0 || positives == n {
        return Err(FitError::OneClass);
    }
    let (w_neg, w_pos) = match options.class_weight {
        ClassWeight::None => (1.0, 1.0),
        ClassWeight::Balanced => (n as f64 / (2.0 * (n - positives) as f64), n as f64 / (2.0 * positives as f64)),
        ClassWeight::Custom(a, b) if a > 0.0 && b > 0.0 => (a, b),
        ClassWeight::Custom(..) => return Err(FitError::Invalid("class weights must be positive".into())),
    };

    // Standardise: column 0 of the design is the intercept.
    let means: Vec<f64> = x.mean_axis(Axis(0)).map_or_else(|| vec![0.0; d], |m| m.to_vec());
    let scales: Vec<f64> =
        x.var_axis(Axis(0), 0.0).iter().map(|&var| if var > 0.0 { var.sqrt() } else { 1.0 }).collect();
    // In place, row by row (the matrix is row-major). The intercept is kept out of the matrix: the
    // design is [1 x], and its first column is written only into the Hessian's blocks.
    for mut row in x.rows_mut() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (*v - means[j]) / scales[j];
        }
    }
    let design = x;
    let linear = |beta: &Array1<f64>| design.dot(&beta.slice(s![1..])) + beta[0];
    let labels: Array1<f64> = y.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect();
    let weights: Array1<f64> = y.iter().map(|&b| if b { w_pos } else { w_neg }).collect();
    let penalty = |beta: &Array1<f64>| 0.5 * options.l2 * beta.iter().skip(1).map(|b| b * b).sum::<f64>();
    let loss = |beta: &Array1<f64>| -> f64 {
        let z = linear(beta);
        let data: f64 = z
            .iter()
            .zip(labels.iter().zip(weights.iter()))
            .map(|(&z, (&y, &w))| {
                let log1pexp = if z > 0.0 { z + (-z).exp().ln_1p() } else { z.exp().ln_1p() };
                w * (log1pexp - y * z)
            })
            .sum();
        data + penalty(beta)
    };

    let mut block = Array2::<f64>::zeros((BLOCK.min(n), d + 1));
    let mut beta = Array1::<f64>::zeros(d + 1);
    // Start the intercept at the weighted log-odds of the positive class.
    let (wp, wn) = (w_pos * positives as f64, w_neg * (n - positives) as f64);
    beta[0] = (wp / wn).ln();
    let mut current = loss(&beta);
    let mut converged = false;
    let mut iterations = 0;
    for _ in 0..options.max_iter {
        iterations += 1;
        let p = linear(&beta).mapv(sigmoid);
        let residual = (&p - &labels) * &weights;
        // X' r as a sum of rows, read in order (a matrix-vector product of X' walks each column with a
        // stride, and a matrix product would copy X into its packing buffers).
        let mut grad = Array1::<f64>::zeros(d + 1);
        grad[0] = residual.sum();
        {
            let mut g = grad.slice_mut(s![1..]);
            for (row, r) in design.rows().into_iter().zip(residual.iter()) {
                g.scaled_add(*r, &row);
            }
        }
        let curvature = (&p * &p.mapv(|v| 1.0 - v)) * &weights;
        // X' diag(curvature) X, a block of rows at a time so no second copy of the design is made.
        // As B'B with B = diag(sqrt(curvature)) X, B filled row by row into a reused block.
        let mut hessian = Array2::<f64>::zeros((d + 1, d + 1));
        for start in (0..n).step_by(BLOCK) {
            let end = (start + BLOCK).min(n);
            for (i, mut out) in (start..end).zip(block.rows_mut()) {
                let w = curvature[i].sqrt();
                out[0] = w;
                for (o, v) in out.iter_mut().skip(1).zip(design.row(i)) {
                    *o = v * w;
                }
            }
            let b = block.slice(s![..end - start, ..]);
            hessian += &b.t().dot(&b);
        }
        for j in 1..=d {
            grad[j] += options.l2 * beta[j];
            hessian[[j, j]] += options.l2;
        }
        // A tiny ridge keeps the Hessian invertible when the data are separable and l2 is 0.
        for j in 0..=d {
            hessian[[j, j]] += 1e-12;
        }
        let Some(step) = cholesky_solve(&hessian, &grad) else { break };
        // Converged when the full Newton step moves no coefficient more than `tol`.
        if step.iter().map(|s| s.abs()).fold(0.0, f64::max) < options.tol {
            beta = &beta - &step;
            converged = true;
            break;
        }
        // Backtracking: take the largest of 1, 1/2, 1/4, ... of the step that does not raise the loss.
        // Near the optimum a step changes the loss by less than its rounding error, so a rise within
        // that error counts as none (else tiny correct steps are refused and Newton never converges).
        let rounding = 1e-12 * current.abs().max(1.0);
        let mut t = 1.0;
        let mut next = &beta - &(&step * t);
        let mut next_loss = loss(&next);
        while next_loss > current + rounding && t > 1e-10 {
            t *= 0.5;
            next = &beta - &(&step * t);
            next_loss = loss(&next);
        }
        if next_loss > current + rounding {
            // No step along the Newton direction lowers the loss: stop, and say it did not converge.
            break;
        }
        beta = next;
        current = next_loss;
    }
    Ok(Model { intercept: beta[0], coef: beta.iter().skip(1).copied().collect(), means, scales, converged, iterations })
}

impl Model {
    /// The probability of the positive class for one row of original (unstandardised) features.
    pub fn predict(&self, row: &[f64]) -> f64 {
        let z: f64 = self.intercept
            + row
                .iter()
                .zip(&self.coef)
                .zip(self.means.iter().zip(&self.scales))
                .map(|((x, c), (m, s))| c * (x - m) / s)
                .sum::<f64>();
        sigmoid(z)
    }

    /// Intercept and coefficients on the original feature scale.
    pub fn raw_coefficients(&self) -> (f64, Vec<f64>) {
        let coef: Vec<f64> = self.coef.iter().zip(&self.scales).map(|(c, s)| c / s).collect();
        let intercept = self.intercept - coef.iter().zip(&self.means).map(|(c, m)| c * m).sum::<f64>();
        (intercept, coef)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Rows drawn from a logistic model with known coefficients.
    fn sample(n: usize, intercept: f64, coef: &[f64], seed: u64) -> (Array2<f64>, Vec<bool>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let d = coef.len();
        let mut x = Array2::<f64>::zeros((n, d));
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            let mut z = intercept;
            for j in 0..d {
                // Different scales and offsets, so standardisation matters.
                let v = (rng.random::<f64>() * 2.0 - 1.0) * (j as f64 + 1.0) * 3.0 + j as f64;
                x[[i, j]] = v;
                z += coef[j] * v;
            }
            y.push(rng.random::<f64>() < sigmoid(z));
        }
        (x, y)
    }

    #[test]
    fn recovers_known_coefficients() {
        let truth = [0.8, -0.5, 0.2];
        let (x, y) = sample(50_000, -0.3, &truth, 1);
        let model = fit(x.clone(), &y, &Options { l2: 0.0, ..Options::default() }).expect("fit");
        assert!(model.converged && model.iterations < 20, "{model:?}");
        let (b0, b) = model.raw_coefficients();
        assert!((b0 - -0.3).abs() < 0.1, "intercept {b0}");
        for (got, want) in b.iter().zip(truth) {
            assert!((got - want).abs() < 0.05, "coefficient {got} for {want}");
        }
        // Predictions use the same scale.
        let row = [1.0, 2.0, -1.0];
        let z = b0 + b.iter().zip(row).map(|(c, v)| c * v).sum::<f64>();
        assert!((model.predict(&row) - sigmoid(z)).abs() < 1e-12);
    }

    #[test]
    fn l2_shrinks_and_class_weights_shift() {
        let (x, y) = sample(5_000, -2.0, &[1.0, 0.5], 2);
        let free = fit(x.clone(), &y, &Options { l2: 0.0, ..Options::default() }).expect("fit");
        let shrunk = fit(x.clone(), &y, &Options { l2: 1000.0, ..Options::default() }).expect("fit");
        let norm = |m: &Model| m.coef.iter().map(|c| c * c).sum::<f64>();
        assert!(norm(&shrunk) < 0.5 * norm(&free), "{shrunk:?} vs {free:?}");
        // Balanced weights raise the rare positive class's predicted probability.
        let balanced =
            fit(x.clone(), &y, &Options { class_weight: ClassWeight::Balanced, ..Options::default() }).expect("fit");
        let row = [0.0, 1.0];
        assert!(balanced.predict(&row) > free.predict(&row));
    }

    #[test]
    fn says_when_it_did_not_converge_and_refuses_bad_input() {
        let (x, y) = sample(2_000, 0.0, &[1.0], 3);
        let one_step = fit(x.clone(), &y, &Options { max_iter: 1, ..Options::default() }).expect("fit");
        assert!(!one_step.converged);
        assert_eq!(fit(x.clone(), &vec![true; 2_000], &Options::default()), Err(FitError::OneClass));
        assert!(matches!(fit(x.clone(), &y[..10], &Options::default()), Err(FitError::Invalid(_))));
        let mut bad = x.clone();
        bad[[0, 0]] = f64::NAN;
        assert!(matches!(fit(bad, &y, &Options::default()), Err(FitError::Invalid(_))));
    }
}
