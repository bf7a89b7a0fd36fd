//! The per-seed timeline: one lane per client process, each operation a bar
//! from invoke to complete coloured by outcome; nemesis faults as shaded
//! bands; failing windows outlined. Plus the watch streams as lanes on a
//! revision axis (watch deliveries carry revisions, not times).

use std::collections::BTreeMap;

use super::findings::{ms, Findings};
use super::html::esc;
use crate::history::{Outcome, Time};
use crate::sim::SeedResult;
use crate::watch::WatchItem;

const WIDTH_PX: f64 = 1200.0;
const LEFT_PX: f64 = 40.0;

/// Maps a time to an x coordinate.
struct Scale {
    end: Time,
}

impl Scale {
    fn x(&self, t: Time) -> f64 {
        LEFT_PX + (t.min(self.end) as f64 / self.end.max(1) as f64) * (WIDTH_PX - LEFT_PX)
    }
}

/// The last time anything happened: ends of ops, invokes of unknown ops, faults.
fn horizon(r: &SeedResult) -> Time {
    let ops = r.history.ops.iter().map(|o| o.complete.unwrap_or(o.invoke));
    let faults = r.fault_spans.iter().map(|s| s.end.unwrap_or(s.start));
    ops.chain(faults).max().unwrap_or(0).max(1)
}

pub fn render(out: &mut String, r: &SeedResult, f: &Findings) {
    let scale = Scale { end: horizon(r) };
    let lanes: BTreeMap<u64, usize> = {
        let mut ps: Vec<u64> = r.history.ops.iter().map(|o| o.process).collect();
        ps.sort_unstable();
        ps.dedup();
        ps.into_iter().enumerate().map(|(i, p)| (p, i)).collect()
    };
    let lane_px = (400.0 / lanes.len().max(1) as f64).clamp(4.0, 14.0);
    let height = lanes.len() as f64 * lane_px + 20.0;
    out.push_str(&format!(
        "<h3>timeline ({} ms, {} processes)</h3>\n<p class=\"legend\"><span class=\"v-pass\">■ ok</span>\
         <span class=\"v-fail\">■ fail</span><span class=\"v-unknown\">■ indeterminate</span>\
         <span>▒ fault</span><span style=\"color:#6639ba\">▼ leader change</span><span style=\"color:#cf222e\">⬚ failing window</span></p>\n\
         <svg class=\"timeline\" width=\"{WIDTH_PX}\" height=\"{height}\" xmlns=\"http://www.w3.org/2000/svg\">\n",
        ms(scale.end),
        lanes.len()
    ));
    for s in &r.fault_spans {
        let (x0, x1) = (scale.x(s.start), scale.x(s.end.unwrap_or(scale.end)));
        out.push_str(&format!(
            "<rect class=\"nemesis\" x=\"{x0:.1}\" y=\"0\" width=\"{:.1}\" height=\"{height}\"><title>{} ({} ms .. {} ms)</title></rect>\n",
            (x1 - x0).max(1.0),
            esc(&s.label),
            ms(s.start),
            s.end.map(ms).unwrap_or_else(|| "end".into())
        ));
    }
    for o in &r.history.ops {
        let lane = lanes[&o.process];
        let class = match o.outcome {
            Outcome::Ok(_) => "ok",
            Outcome::Fail => "fail",
            Outcome::Info => "info",
        };
        let offending = if f.offending.contains(&o.id) {
            " offending"
        } else {
            ""
        };
        let x0 = scale.x(o.invoke);
        let x1 = scale.x(o.complete.unwrap_or(scale.end));
        out.push_str(&format!(
            "<rect class=\"op {class}{offending}\" data-op=\"{}\" x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\"><title>{}</title></rect>\n",
            o.id,
            lane as f64 * lane_px + 2.0,
            (x1 - x0).max(1.5),
            (lane_px - 1.0).max(2.0),
            esc(&o.to_string())
        ));
    }
    for c in &r.leader_changes {
        let x = scale.x(c.at);
        let who = c.leader.as_deref().unwrap_or("none");
        out.push_str(&format!(
            "<g class=\"leader-change\"><line x1=\"{x:.1}\" y1=\"0\" x2=\"{x:.1}\" y2=\"{height}\" stroke=\"#6639ba\" stroke-width=\"1\" stroke-dasharray=\"2 3\"/>\
             <path d=\"M{:.1} 0 L{:.1} 0 L{x:.1} 7 Z\" fill=\"#6639ba\"/><title>{} ms: leader {}</title></g>\n",
            x - 4.0,
            x + 4.0,
            ms(c.at),
            esc(who)
        ));
    }
    for (i, w) in f.windows.iter().enumerate() {
        let (x0, x1) = (scale.x(w.start), scale.x(w.end));
        out.push_str(&format!(
            "<rect class=\"fail-window\" data-window=\"{i}\" x=\"{x0:.1}\" y=\"0\" width=\"{:.1}\" height=\"{height}\"><title>{}</title></rect>\n",
            (x1 - x0).max(3.0),
            esc(&w.title)
        ));
    }
    out.push_str(&format!(
        "<text x=\"{LEFT_PX}\" y=\"{}\" font-size=\"10\">0 ms</text><text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">{} ms</text>\n</svg>\n",
        height - 4.0,
        WIDTH_PX - 2.0,
        height - 4.0,
        ms(scale.end)
    ));
    if !r.fault_spans.is_empty() {
        out.push_str("<details><summary>faults</summary><ul>\n");
        for s in &r.fault_spans {
            out.push_str(&format!(
                "<li>{} ms .. {} ms: {}</li>\n",
                ms(s.start),
                s.end.map(ms).unwrap_or_else(|| "end".into()),
                esc(&s.label)
            ));
        }
        out.push_str("</ul></details>\n");
    }
}

/// One lane per watcher: each delivered event a tick at its revision; the
/// watch checker's offending item in red.
pub fn watch_lanes(out: &mut String, r: &SeedResult, f: &Findings) {
    if r.watchers.is_empty() {
        return;
    }
    let max_rev = r
        .watchers
        .iter()
        .flat_map(|w| w.items.iter())
        .filter_map(|i| match i {
            WatchItem::Event(e) => Some(e.revision),
            _ => None,
        })
        .max()
        .unwrap_or(1)
        .max(1);
    let lane_px = 18.0;
    let height = r.watchers.len() as f64 * lane_px + 16.0;
    out.push_str(&format!(
        "<h3>watch streams (x: revision 0..{max_rev})</h3>\n<svg class=\"watch-lanes\" width=\"{WIDTH_PX}\" height=\"{height}\" xmlns=\"http://www.w3.org/2000/svg\">\n"
    ));
    for (lane, w) in r.watchers.iter().enumerate() {
        let y = lane as f64 * lane_px;
        out.push_str(&format!(
            "<text x=\"0\" y=\"{:.1}\" font-size=\"10\">{}</text>\n",
            y + 12.0,
            esc(&w.name)
        ));
        let bad: Vec<usize> = f
            .watch
            .iter()
            .filter(|v| v.watcher == w.name)
            .filter_map(|v| v.position)
            .collect();
        for (pos, item) in w.items.iter().enumerate() {
            let offending = bad.contains(&pos);
            // Events are ticks; progress notifications and resumptions are
            // drawn only when a violation points at them.
            let (revision, what) = match item {
                WatchItem::Event(e) => (e.revision, format!("{:?} {}", e.kind, esc(&e.key))),
                WatchItem::Progress(p) if offending => (p.revision, "progress".to_string()),
                WatchItem::Resume { from_revision } if offending => {
                    (*from_revision, "resume".to_string())
                }
                _ => continue,
            };
            let x =
                LEFT_PX + 30.0 + (revision as f64 / max_rev as f64) * (WIDTH_PX - LEFT_PX - 40.0);
            let class = if offending { "wev offending" } else { "wev" };
            out.push_str(&format!(
                "<rect class=\"{class}\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{}\" height=\"12\"><title>item {pos}: rev {revision} {what}</title></rect>\n",
                y + 2.0,
                if offending { 4 } else { 2 },
            ));
        }
    }
    out.push_str("</svg>\n");
}
