//! Latency over time (a scatter of completed ops) and percentiles by op type.

use std::collections::BTreeMap;

use super::findings::ms;
use crate::history::{Call, History, Time};

fn kind(c: &Call) -> &'static str {
    match c {
        Call::Put { .. } => "put",
        Call::Get {
            linearizable: true, ..
        } => "get",
        Call::Get { .. } => "get (serializable)",
        Call::Delete { .. } => "delete",
        Call::Cas { .. } => "cas",
    }
}

/// The `p`-th percentile (0..=100) of sorted `v`, nearest rank.
fn percentile(v: &[Time], p: f64) -> Time {
    assert!(!v.is_empty(), "percentile of nothing");
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

pub fn render(out: &mut String, h: &History) {
    let done: Vec<(Time, Time, &'static str)> = h
        .ops
        .iter()
        .filter_map(|o| Some((o.invoke, o.complete? - o.invoke, kind(&o.call))))
        .collect();
    if done.is_empty() {
        return;
    }
    let mut by_kind: BTreeMap<&str, Vec<Time>> = BTreeMap::new();
    for (_, l, k) in &done {
        by_kind.entry(k).or_default().push(*l);
    }
    out.push_str(
        "<h3>latency by operation (completed ops, ms)</h3>\n<table class=\"latency\"><thead><tr><th>op</th>\
         <th>count</th><th>p50</th><th>p90</th><th>p99</th><th>max</th></tr></thead><tbody>\n",
    );
    for (k, v) in &mut by_kind {
        v.sort_unstable();
        out.push_str(&format!(
            "<tr><td>{k}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            v.len(),
            ms(percentile(v, 50.0)),
            ms(percentile(v, 90.0)),
            ms(percentile(v, 99.0)),
            ms(*v.last().expect("non-empty"))
        ));
    }
    out.push_str("</tbody></table>\n");
    let (w, hgt) = (1200.0, 160.0);
    let t_end = done.iter().map(|d| d.0).max().unwrap_or(1).max(1) as f64;
    let l_max = done.iter().map(|d| d.1).max().unwrap_or(1).max(1) as f64;
    out.push_str(&format!(
        "<h3>latency over time (y: 0..{} ms)</h3>\n<svg class=\"latency-over-time\" width=\"{w}\" height=\"{hgt}\" xmlns=\"http://www.w3.org/2000/svg\">\n",
        ms(l_max as Time)
    ));
    for (t, l, k) in &done {
        out.push_str(&format!(
            "<circle class=\"lat\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"1.5\"><title>{k} {} ms</title></circle>\n",
            40.0 + (*t as f64 / t_end) * (w - 50.0),
            hgt - 4.0 - (*l as f64 / l_max) * (hgt - 10.0),
            ms(*l)
        ));
    }
    out.push_str("</svg>\n");
}

#[cfg(test)]
mod tests {
    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(super::percentile(&v, 50.0), 50);
        assert_eq!(super::percentile(&v, 99.0), 99);
        assert_eq!(super::percentile(&v, 100.0), 100);
        assert_eq!(super::percentile(&[7], 50.0), 7);
    }
}
