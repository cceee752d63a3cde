//! Compaction: small segments of a partition merged into larger ones, swapped in with one
//! catalog commit.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::error::Result;

use super::table::{SegmentHandle, read_all, storage_order};
use super::{Engine, Swap};

/// Small segments (in time order) cut into groups of at least two whose rows add up to at most about
/// `max_rows`, each merged into one segment; a segment left alone in its group is not rewritten.
pub(super) fn merge_groups(mut segs: Vec<Arc<SegmentHandle>>, max_rows: u64) -> Vec<Vec<Arc<SegmentHandle>>> {
    segs.sort_by_key(|s| (s.entry.min_ts, s.entry.id));
    let (mut groups, mut current, mut rows) = (Vec::new(), Vec::new(), 0u64);
    for s in segs {
        if !current.is_empty() && rows + s.entry.rows > max_rows {
            groups.push(std::mem::take(&mut current));
            rows = 0;
        }
        rows += s.entry.rows;
        current.push(s);
    }
    groups.push(current);
    groups.retain(|g| g.len() >= 2);
    groups
}

impl Engine {
    /// Merges the small segments of each partition that has many. Returns the number of merges.
    pub fn compact(&self) -> Result<usize> {
        self.check_open()?;
        let _m = self.maintenance.lock();
        let mut merges = 0;
        for t in self.tables() {
            let candidates: Vec<(i64, Vec<Arc<SegmentHandle>>)> = t
                .data
                .read()
                .partitions
                .iter()
                .map(|(k, p)| {
                    let small: Vec<Arc<SegmentHandle>> = p
                        .segments
                        .iter()
                        .filter(|s| s.entry.rows < self.options.compaction_max_rows)
                        .cloned()
                        .collect();
                    (*k, small)
                })
                .filter(|(_, s)| s.len() >= self.options.compaction_min_segments)
                .collect();
            for (key, segs) in candidates {
                for group in merge_groups(segs, self.options.compaction_max_rows) {
                    let batch = storage_order(read_all(&t, &group)?, &t.schema, &t.def)?;
                    let new = self.write_segment(&t, key, &batch)?;
                    self.swap_segments(&t, vec![Swap { key, old: group, new: vec![new] }], None)?;
                    merges += 1;
                    self.stats.compactions.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(merges)
    }
}
