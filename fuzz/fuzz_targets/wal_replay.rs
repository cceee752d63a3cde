//! A write-ahead log file from untrusted bytes, replayed as on open: records, torn tails, Arrow IPC
//! payloads. Errors are fine; a panic, a hang or a huge allocation is a finding.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use trafficdb::wal::{replay, wal_path};
use trafficdb_fuzz::{FIXTURE, file_at, mutate};

fuzz_target!(|data: &[u8]| {
    // The replay catches a panic of the Arrow IPC reader and reports the record as damaged (see
    // `wal::decode_ipc`); libFuzzer's hook would abort on it first. Panics the replay does not catch
    // still end the run (libfuzzer-sys catches them around each input).
    static DEFAULT_HOOK: std::sync::Once = std::sync::Once::new();
    DEFAULT_HOOK.call_once(|| drop(std::panic::take_hook()));
    let bytes = mutate(&FIXTURE.wal, data);
    let dir = Path::new("/wal");
    let fs = file_at(&wal_path(dir, 1), &bytes);
    let _ = replay(&fs, dir, 0, |_, batches| {
        // What the engine does next with a transaction: coerce its batches to the table's schema.
        if let Some(t) = FIXTURE.engine().table("t") {
            for b in &batches {
                let _ = trafficdb::types::coerce_batch(&t.def, &t.schema, b);
            }
        }
        Ok(())
    });
});
