//! A segment file from untrusted bytes: open (header, trailer, footer) and decode every column of
//! every row group, each way the scan reads them. Errors are fine; a panic, a hang or a huge
//! allocation is a finding.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use trafficdb::arrow::array::BooleanArray;
use trafficdb::segment::Segment;
use trafficdb_fuzz::{FIXTURE, file_at, mutate};

fuzz_target!(|data: &[u8]| {
    let bytes = mutate(&FIXTURE.segment, data);
    let path = Path::new("/s/1.seg");
    let fs = file_at(path, &bytes);
    let Ok(seg) = Segment::open(&fs, path) else { return };
    for rg in 0..seg.footer.row_groups.len() {
        let rows = seg.footer.row_groups[rg].rows as usize;
        let every_other = (rows <= 1 << 16).then(|| BooleanArray::from_iter((0..rows).map(|i| Some(i % 2 == 0))));
        for (c, col) in seg.footer.columns.iter().enumerate() {
            let ty = col.ty.arrow_type();
            let _ = seg.read_column(rg, c, &ty, None);
            let _ = seg.read_column_encoded(rg, c, &ty);
            if let Some(s) = &every_other {
                let _ = seg.read_column(rg, c, &ty, Some(s));
            }
        }
    }
});
