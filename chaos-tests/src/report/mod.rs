//! `keel chaos --report DIR`: one self-contained HTML file per run.
//!
//! Why: a failing seed used to leave only JSON lines; people debugging a
//! distributed system read pictures (Jepsen's timelines, Porcupine's
//! visualisations) much faster. The report is rendered from the same records
//! the checkers judge ([`SeedResult`]), re-running the checkers where it needs
//! their structured output (the non-linearizable window, the watch
//! violations), so what it highlights is exactly what failed.
//!
//! Guarantees: the file has no external references (inline CSS and SVG, one
//! tiny inline script for the copy button), so it opens offline and can be
//! attached to a bug. Every text from the run is HTML-escaped.

mod findings;
mod html;
mod latency;
mod load;
mod timeline;

pub use findings::{find, Findings, HighlightWindow};
pub use load::{load_failures, LoadError};

use std::path::{Path, PathBuf};

use crate::history::History;
use crate::sim::SeedResult;
use crate::{check_all, CheckConfig, CheckInput, Verdict};
use html::esc;

/// One seed as the report shows it.
pub struct SeedPage<'a> {
    pub result: &'a SeedResult,
    /// The command that replays this seed, shown for copying.
    pub replay: String,
}

/// The file name written inside the report directory.
pub const FILE_NAME: &str = "index.html";

/// Renders the whole report: a table of seeds, then one section per seed
/// (shown when its row is clicked, through the URL fragment).
pub fn render(title: &str, seeds: &[SeedPage<'_>]) -> String {
    let mut out = String::with_capacity(64 * 1024);
    html::head(&mut out, title);
    out.push_str(&format!("<h1>{}</h1>\n", esc(title)));
    let failed = seeds.iter().filter(|s| !s.result.passed()).count();
    out.push_str(&format!(
        "<p class=\"summary\">{} seeds, <b>{failed}</b> failed. Click a seed to open it.</p>\n",
        seeds.len()
    ));
    seed_table(&mut out, seeds);
    for s in seeds {
        seed_section(&mut out, s);
    }
    html::tail(&mut out);
    out
}

/// Writes [`render`]'s output to `DIR/index.html`, creating `dir`; returns the path.
pub fn write(dir: &Path, title: &str, seeds: &[SeedPage<'_>]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(FILE_NAME);
    std::fs::write(&path, render(title, seeds))?;
    Ok(path)
}

/// A [`SeedResult`] for a history read back from a file: only the history is
/// known, so the checkers that need more (durability, watch, liveness) say
/// Unknown rather than pass.
pub fn result_from_history(seed: u64, history: History) -> SeedResult {
    let input = CheckInput {
        history: &history,
        committed: None,
        watchers: &[],
        final_read: None,
    };
    let (report, error) = match check_all(&input, &CheckConfig::default()) {
        Ok(r) => (Some(r), None),
        Err(e) => (None, Some(format!("history: {e}"))),
    };
    SeedResult {
        seed,
        ops: history.ops.len(),
        faults: vec![],
        history,
        report,
        liveness: Verdict::Unknown("not recorded in a history file".into()),
        error,
        trace_hash: 0,
        watch_events: 0,
        fault_spans: vec![],
        watchers: vec![],
        committed: None,
        leader_changes: vec![],
    }
}

fn verdict_cell(v: &Verdict) -> String {
    let (class, text) = match v {
        Verdict::Pass => ("pass", "pass"),
        Verdict::Fail(_) => ("fail", "FAIL"),
        Verdict::Unknown(_) => ("unknown", "unknown"),
    };
    format!("<td class=\"v-{class}\">{text}</td>")
}

fn seed_table(out: &mut String, seeds: &[SeedPage<'_>]) {
    out.push_str(
        "<table class=\"seeds\"><thead><tr><th>seed</th><th>ops</th><th>faults</th>\
         <th>linearizable</th><th>watch</th><th>durable</th><th>live</th><th>verdict</th>\
         </tr></thead><tbody>\n",
    );
    for s in seeds {
        let r = s.result;
        let cells = match &r.report {
            Some(rep) => [&rep.linearizability, &rep.watch, &rep.durability]
                .iter()
                .map(|v| verdict_cell(v))
                .collect::<String>(),
            None => "<td class=\"v-fail\" colspan=\"3\">error</td>".to_string(),
        };
        let overall = if r.passed() { "pass" } else { "fail" };
        out.push_str(&format!(
            "<tr class=\"seed-row {overall}\" data-seed=\"{seed}\"><td><a href=\"#seed-{seed}\">{seed}</a></td>\
             <td>{}</td><td>{}</td>{cells}{}<td class=\"v-{overall}\">{overall}</td></tr>\n",
            r.ops,
            r.faults.len(),
            verdict_cell(&r.liveness),
            seed = r.seed,
        ));
    }
    out.push_str("</tbody></table>\n");
}

fn seed_section(out: &mut String, s: &SeedPage<'_>) {
    let r = s.result;
    let f = find(r);
    out.push_str(&format!(
        "<section class=\"seed\" id=\"seed-{}\" data-passed=\"{}\">\n<h2>seed {} — {}</h2>\n",
        r.seed,
        r.passed(),
        r.seed,
        if r.passed() { "pass" } else { "FAIL" }
    ));
    out.push_str(&format!(
        "<div class=\"replay-box\">replay: <button type=\"button\" onclick=\"copyReplay(this)\">copy</button>\
         <pre class=\"replay\"><code>{}</code></pre></div>\n",
        esc(&s.replay)
    ));
    if let Some(e) = &r.error {
        out.push_str(&format!("<p class=\"error\">run error: {}</p>\n", esc(e)));
    }
    timeline::render(out, r, &f);
    findings::render(out, r, &f);
    latency::render(out, &r.history);
    timeline::watch_lanes(out, r, &f);
    out.push_str("</section>\n");
}

#[cfg(test)]
mod tests;
