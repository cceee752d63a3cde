//! How well predicted probabilities match labels: ranking (AUC ROC, AUC PR), probability quality
//! (log loss, Brier score) and the confusion matrix at a threshold. Definitions follow scikit-learn's
//! (`roc_auc_score`, `average_precision_score`, `log_loss`, `brier_score_loss`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub rows: u64,
    pub positives: u64,
    /// `None` when the rows hold a single class.
    pub auc_roc: Option<f64>,
    pub auc_pr: Option<f64>,
    pub log_loss: f64,
    pub brier: f64,
    pub threshold: f64,
    pub accuracy: f64,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub f1: Option<f64>,
}

/// Scores sorted by descending probability, ties grouped: (threshold, true positives, false
/// positives) at each distinct threshold, cumulative.
fn curve(p: &[f64], y: &[bool]) -> Vec<(f64, u64, u64)> {
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_unstable_by(|&a, &b| p[b].total_cmp(&p[a]));
    let mut out: Vec<(f64, u64, u64)> = Vec::new();
    let (mut tp, mut fp) = (0u64, 0u64);
    for (k, &i) in order.iter().enumerate() {
        if y[i] {
            tp += 1;
        } else {
            fp += 1;
        }
        let last_of_tie = order.get(k + 1).is_none_or(|&j| p[j] != p[i]);
        if last_of_tie {
            out.push((p[i], tp, fp));
        }
    }
    out
}

/// Computes every metric of `p` (probabilities) against `y`, with `threshold` for the confusion matrix.
pub fn evaluate(p: &[f64], y: &[bool], threshold: f64) -> Metrics {
    let n = p.len();
    let positives = y.iter().filter(|&&b| b).count() as u64;
    let negatives = n as u64 - positives;
    let (mut log_loss, mut brier) = (0.0, 0.0);
    let (mut tp, mut fp, mut tn, mut fn_) = (0u64, 0u64, 0u64, 0u64);
    for (&p, &y) in p.iter().zip(y) {
        let q = p.clamp(1e-15, 1.0 - 1e-15);
        log_loss -= if y { q.ln() } else { (1.0 - q).ln() };
        let t = if y { 1.0 } else { 0.0 };
        brier += (p - t) * (p - t);
        match (p >= threshold, y) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, false) => tn += 1,
            (false, true) => fn_ += 1,
        }
    }
    let (auc_roc, auc_pr) = if positives > 0 && negatives > 0 {
        let points = curve(p, y);
        // Trapezoids between consecutive (fpr, tpr) points, from (0, 0).
        let (mut roc, mut ap) = (0.0, 0.0);
        let (mut prev_tp, mut prev_fp) = (0u64, 0u64);
        for &(_, tp, fp) in &points {
            roc += (fp - prev_fp) as f64 * (tp + prev_tp) as f64 / 2.0;
            // Average precision: precision at each threshold weighted by the recall it adds.
            ap += (tp - prev_tp) as f64 / positives as f64 * tp as f64 / (tp + fp) as f64;
            prev_tp = tp;
            prev_fp = fp;
        }
        (Some(roc / (positives as f64 * negatives as f64)), Some(ap))
    } else {
        (None, None)
    };
    let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
    let precision = ratio(tp, tp + fp);
    let recall = ratio(tp, tp + fn_);
    let f1 = ratio(2 * tp, 2 * tp + fp + fn_);
    let rows = n.max(1) as f64;
    Metrics {
        rows: n as u64,
        positives,
        auc_roc,
        auc_pr,
        log_loss: log_loss / rows,
        brier: brier / rows,
        threshold,
        accuracy: (tp + tn) as f64 / rows,
        precision,
        recall,
        f1,
    }
}

/// One point of a ROC curve.
#[derive(Debug, Clone, PartialEq)]
pub struct RocPoint {
    pub threshold: f64,
    pub fpr: f64,
    pub tpr: f64,
    pub precision: f64,
}

/// The ROC curve from (0, 0) to (1, 1), thinned to at most `max_points` points (the first and last
/// always kept); the threshold of the first point is infinity.
pub fn roc_curve(p: &[f64], y: &[bool], max_points: usize) -> Vec<RocPoint> {
    let positives = y.iter().filter(|&&b| b).count().max(1) as f64;
    let negatives = (y.len() - y.iter().filter(|&&b| b).count()).max(1) as f64;
    let points = curve(p, y);
    let mut out = vec![RocPoint { threshold: f64::INFINITY, fpr: 0.0, tpr: 0.0, precision: 1.0 }];
    let step = points.len().div_ceil(max_points.max(2) - 1).max(1);
    for (k, &(t, tp, fp)) in points.iter().enumerate() {
        if k % step == step - 1 || k + 1 == points.len() {
            out.push(RocPoint {
                threshold: t,
                fpr: fp as f64 / negatives,
                tpr: tp as f64 / positives,
                precision: tp as f64 / (tp + fp) as f64,
            });
        }
    }
    out
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationBin {
    pub bin: usize,
    pub lower: f64,
    pub upper: f64,
    pub rows: u64,
    pub mean_predicted: Option<f64>,
    pub observed_rate: Option<f64>,
}

/// Equal-width bins of the predicted probability: in each, the mean prediction and the observed rate.
pub fn calibration(p: &[f64], y: &[bool], bins: usize) -> Vec<CalibrationBin> {
    let bins = bins.max(1);
    let mut sum = vec![0.0; bins];
    let mut hits = vec![0u64; bins];
    let mut rows = vec![0u64; bins];
    for (&p, &y) in p.iter().zip(y) {
        let b = ((p * bins as f64) as usize).min(bins - 1);
        sum[b] += p;
        rows[b] += 1;
        hits[b] += y as u64;
    }
    (0..bins)
        .map(|b| CalibrationBin {
            bin: b + 1,
            lower: b as f64 / bins as f64,
            upper: (b + 1) as f64 / bins as f64,
            rows: rows[b],
            mean_predicted: (rows[b] > 0).then(|| sum[b] / rows[b] as f64),
            observed_rate: (rows[b] > 0).then(|| hits[b] as f64 / rows[b] as f64),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_hand_worked_values() {
        // scikit-learn: roc_auc_score([0,0,1,1], [0.1,0.4,0.35,0.8]) = 0.75,
        // average_precision_score(...) = 0.8333..., log_loss = 0.4722..., brier = 0.1581...
        let p = [0.1, 0.4, 0.35, 0.8];
        let y = [false, false, true, true];
        let m = evaluate(&p, &y, 0.5);
        assert!((m.auc_roc.unwrap() - 0.75).abs() < 1e-12);
        assert!((m.auc_pr.unwrap() - 5.0 / 6.0).abs() < 1e-12);
        let ll = -((0.9f64).ln() + (0.6f64).ln() + (0.35f64).ln() + (0.8f64).ln()) / 4.0;
        assert!((m.log_loss - ll).abs() < 1e-12);
        assert!((m.brier - (0.01 + 0.16 + 0.4225 + 0.04) / 4.0).abs() < 1e-12);
        // At 0.5 only 0.8 is positive: tp 1, fp 0, fn 1, tn 2.
        assert_eq!((m.precision, m.recall), (Some(1.0), Some(0.5)));
        assert!((m.f1.unwrap() - 2.0 / 3.0).abs() < 1e-12 && (m.accuracy - 0.75).abs() < 1e-12);
    }

    #[test]
    fn ties_count_half_and_single_class_has_no_auc() {
        let m = evaluate(&[0.5, 0.5], &[true, false], 0.5);
        assert_eq!(m.auc_roc, Some(0.5));
        assert_eq!(evaluate(&[0.2, 0.3], &[true, true], 0.5).auc_roc, None);
    }

    #[test]
    fn curve_and_bins() {
        let p = [0.1, 0.4, 0.35, 0.8];
        let y = [false, false, true, true];
        let roc = roc_curve(&p, &y, 100);
        let pts: Vec<(f64, f64)> = roc.iter().map(|r| (r.fpr, r.tpr)).collect();
        assert_eq!(pts, vec![(0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)]);
        assert_eq!(roc_curve(&p, &y, 2).len(), 2);
        let bins = calibration(&p, &y, 2);
        assert_eq!((bins[0].rows, bins[1].rows), (3, 1));
        assert_eq!(bins[0].observed_rate, Some(1.0 / 3.0));
        assert_eq!(bins[1].mean_predicted, Some(0.8));
    }
}
