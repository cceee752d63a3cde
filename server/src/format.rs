//! Printing results: aligned (psql style), CSV, JSON.

use std::io::Write;

use trafficdb::arrow::array::RecordBatch;
use trafficdb::arrow::datatypes::{DataType, SchemaRef};
use trafficdb::arrow::error::ArrowError;
use trafficdb::arrow::util::display::FormatOptions;

use crate::Format;

fn options() -> FormatOptions<'static> {
    trafficdb::types::display_options("")
}

pub fn print(schema: &SchemaRef, batches: &[RecordBatch], format: Format) -> Result<(), ArrowError> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match format {
        Format::Table => print_table(&mut out, schema, batches)?,
        Format::Csv => {
            if batches.iter().all(|b| b.num_rows() == 0) {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                writeln!(out, "{}", names.join(","))?;
            } else {
                let mut w = trafficdb::arrow::csv::WriterBuilder::new().with_header(true).build(&mut out);
                for b in batches.iter().filter(|b| b.num_rows() > 0) {
                    w.write(b)?;
                }
            }
        }
        Format::Json => {
            let mut w = trafficdb::arrow::json::ArrayWriter::new(&mut out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
            drop(w);
            writeln!(out)?;
        }
    }
    Ok(())
}

fn right_aligned(dt: &DataType) -> bool {
    dt.is_numeric()
}

fn print_table(out: &mut impl Write, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<(), ArrowError> {
    let fields = schema.fields();
    let mut cells: Vec<Vec<String>> = Vec::new();
    let opts = options();
    for b in batches {
        let fmts = trafficdb::types::formatters(b, &opts)?;
        for r in 0..b.num_rows() {
            cells.push(fmts.iter().map(|f| f.value(r).to_string()).collect());
        }
    }
    let mut widths: Vec<usize> = fields.iter().map(|f| f.name().chars().count()).collect();
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let header: Vec<String> = fields
        .iter()
        .zip(&widths)
        .map(|(f, &w)| {
            let name = f.name();
            let pad = w - name.chars().count();
            format!("{}{}{}", " ".repeat(pad / 2), name, " ".repeat(pad - pad / 2))
        })
        .collect();
    writeln!(out, " {}", header.join(" | ").trim_end())?;
    writeln!(out, "{}", widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("+"))?;
    for row in &cells {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .zip(fields.iter())
            .map(|((c, &w), f)| if right_aligned(f.data_type()) { format!("{c:>w$}") } else { format!("{c:<w$}") })
            .collect();
        writeln!(out, " {}", line.join(" | ").trim_end())?;
    }
    let n = cells.len();
    writeln!(out, "({n} row{})\n", if n == 1 { "" } else { "s" })?;
    Ok(())
}
