//! An HTTP write body from untrusted bytes: the line protocol parsed and its values converted to
//! the columns of an existing table (`t`) or of tables the write would create. Errors are fine; a
//! panic, a hang or a huge allocation is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trafficdb_fuzz::FIXTURE;
use trafficdb_server::ingest::batch::parse;
use trafficdb_server::ingest::line_protocol::Precision;

fuzz_target!(|data: &[u8]| {
    let Some((&p, body)) = data.split_first() else { return };
    let precision = match p % 4 {
        0 => Precision::Nanoseconds,
        1 => Precision::Microseconds,
        2 => Precision::Milliseconds,
        _ => Precision::Seconds,
    };
    let _ = parse(FIXTURE.engine(), body, precision, 1_704_067_200_000_000, true);
});
