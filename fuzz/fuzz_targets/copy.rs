//! `COPY t FROM STDIN` data from untrusted bytes, text or CSV, split into CopyData messages at
//! arbitrary points, decoded into batches of the table's types. Errors are fine; a panic, a hang or a
//! huge allocation is a finding.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use trafficdb::datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryConsumer, MemoryPool};
use trafficdb_fuzz::FIXTURE;
use trafficdb_server::ingest::copy_format::{CopyDecoder, Format};

fuzz_target!(|data: &[u8]| {
    let [how, chunk, rest @ ..] = data else { return };
    let csv = how & 1 == 1;
    let format = Format {
        csv,
        delimiter: if csv { b',' } else { b'\t' },
        null: if how & 2 == 2 { "NULL".into() } else if csv { String::new() } else { "\\N".into() },
        header: how & 4 == 4,
        quote: b'"',
        escape: if how & 8 == 8 { b'\\' } else { b'"' },
    };
    let table = FIXTURE.engine().table("t").expect("table t");
    let columns: Vec<String> = table.def.columns.iter().map(|c| c.name.clone()).collect();
    let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(256 << 20));
    let memory = MemoryConsumer::new("fuzz").register(&pool);
    let load = FIXTURE.engine().bulk_load(&table).expect("bulk load");
    let mut decoder = CopyDecoder::new(load, columns, format, memory);
    for piece in rest.chunks(*chunk as usize + 1) {
        decoder.feed(piece);
    }
    let _ = decoder.finish();
});
