//! Markdown (and optional JSON) output of the measured rows.
//!
//! Markdown so the tables can be pasted into docs or issues as they are; the
//! ratio table is keel divided by etcd, so ops/s > 1 and p99 < 1 mean keel
//! is ahead.

use serde_json::{json, Value};

use crate::cluster::System;
use crate::workload::Sample;

/// One (workload, system) measurement.
pub struct Row {
    pub workload: String,
    pub system: System,
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub count: u64,
    pub errors: u64,
}

impl Row {
    pub fn new(workload: impl Into<String>, system: System, s: &Sample) -> Self {
        Row {
            workload: workload.into(),
            system,
            ops_per_sec: s.ops_per_sec(),
            p50_ms: s.quantile_ms(0.50),
            p99_ms: s.quantile_ms(0.99),
            count: s.hist.len(),
            errors: s.errors,
        }
    }

    /// One line for progress output while the run goes on.
    pub fn summary(&self) -> String {
        format!(
            "{:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms ({} ok, {} errors)",
            self.ops_per_sec, self.p50_ms, self.p99_ms, self.count, self.errors
        )
    }
}

/// The results table, then (when both systems ran) the keel/etcd ratios.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str("| workload | system | ops/s | p50 ms | p99 ms |\n");
    out.push_str("|---|---|---:|---:|---:|\n");
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.2} | {:.2} |\n",
            r.workload, r.system, r.ops_per_sec, r.p50_ms, r.p99_ms
        ));
    }
    let failed: Vec<&Row> = rows.iter().filter(|r| r.errors > 0).collect();
    if !failed.is_empty() {
        out.push('\n');
        for r in failed {
            out.push_str(&format!(
                "note: {} / {}: {} operations failed or went missing\n",
                r.workload, r.system, r.errors
            ));
        }
    }

    let pairs: Vec<(&Row, &Row)> = rows
        .iter()
        .filter(|k| k.system == System::Keel)
        .filter_map(|k| {
            rows.iter()
                .find(|e| e.system == System::Etcd && e.workload == k.workload)
                .map(|e| (k, e))
        })
        .collect();
    if !pairs.is_empty() {
        out.push_str("\n| workload | ops/s keel/etcd | p99 keel/etcd |\n");
        out.push_str("|---|---:|---:|\n");
        for (k, e) in pairs {
            out.push_str(&format!(
                "| {} | {} | {} |\n",
                k.workload,
                ratio(k.ops_per_sec, e.ops_per_sec),
                ratio(k.p99_ms, e.p99_ms)
            ));
        }
    }
    out
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "n/a".to_string()
    }
}

/// Machine-readable form of the rows, for tracking results over time.
pub fn json(rows: &[Row]) -> Value {
    Value::Array(
        rows.iter()
            .map(|r| {
                json!({
                    "workload": r.workload,
                    "system": r.system.to_string(),
                    "ops_per_sec": r.ops_per_sec,
                    "p50_ms": r.p50_ms,
                    "p99_ms": r.p99_ms,
                    "count": r.count,
                    "errors": r.errors,
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(workload: &'static str, system: System, ops: f64, p99: f64) -> Row {
        Row {
            workload: workload.into(),
            system,
            ops_per_sec: ops,
            p50_ms: 1.0,
            p99_ms: p99,
            count: 10,
            errors: 0,
        }
    }

    #[test]
    fn ratio_table_only_when_both_systems_ran() {
        let etcd_only = [row("put", System::Etcd, 100.0, 10.0)];
        let text = markdown(&etcd_only);
        assert!(text.contains("| put | etcd | 100 | 1.00 | 10.00 |"));
        assert!(!text.contains("keel/etcd"));

        let both = [
            row("put", System::Etcd, 100.0, 10.0),
            row("put", System::Keel, 50.0, 20.0),
        ];
        let text = markdown(&both);
        assert!(text.contains("| put | 0.50 | 2.00 |"), "{text}");
    }

    #[test]
    fn json_has_one_object_per_row() {
        let v = json(&[row("put", System::Keel, 1.0, 2.0)]);
        assert_eq!(v[0]["system"], "keel");
        assert_eq!(v[0]["p99_ms"], 2.0);
    }
}
