//! What the report highlights when a checker fails: the failing windows with
//! the operations involved, and the watch checker's offending events.
//!
//! The verdicts in a [`SeedResult`] are text; the structured findings come
//! from re-running the failed checkers on the same inputs the run used (the
//! history patched with the committed log, as [`crate::check_all`] does), so
//! the highlighted ops are the checker's own.

use std::collections::BTreeSet;

use super::html::esc;
use crate::history::{OpId, Operation, Time};
use crate::linearizability::{check_linearizability, KeyVerdict, LinearizabilityConfig};
use crate::patch::resolve_unknown_writes;
use crate::sim::SeedResult;
use crate::watch::{check_watchers, WatchViolation};
use crate::Verdict;

/// A stretch of time a checker blames, with the operations it names (for the
/// linearizability checker: the minimal non-linearizable subhistory it found,
/// as Porcupine shows it).
#[derive(Clone, Debug)]
pub struct HighlightWindow {
    pub start: Time,
    pub end: Time,
    pub title: String,
    pub ops: Vec<Operation>,
    /// The checker's own explanation.
    pub detail: String,
}

/// Everything a failing seed's view highlights. Empty for a passing seed.
#[derive(Clone, Debug, Default)]
pub struct Findings {
    pub windows: Vec<HighlightWindow>,
    /// Every op named by some window.
    pub offending: BTreeSet<OpId>,
    pub watch: Vec<WatchViolation>,
}

/// Re-runs the failed checkers of `r` for their structured output.
pub fn find(r: &SeedResult) -> Findings {
    let mut f = Findings::default();
    let Some(report) = &r.report else {
        return f;
    };
    if report.linearizability.is_fail() {
        let patched = r
            .committed
            .as_ref()
            .map(|log| resolve_unknown_writes(&r.history, log).0);
        let history = patched.as_ref().unwrap_or(&r.history);
        if let Ok(lin) = check_linearizability(history, &LinearizabilityConfig::default()) {
            for v in lin.keys.values() {
                if let KeyVerdict::NotLinearizable { key, window } = v {
                    // The window in time is where the search got stuck: the
                    // last op it could linearize, the op that returned, and
                    // the ops that could have gone next. The prefix's
                    // earlier ops are listed, not framed.
                    let mut context = window.recent.clone();
                    let mut core: Vec<Operation> = context.pop().into_iter().collect();
                    core.push(window.stuck.clone());
                    core.extend(window.candidates.iter().map(|(o, _)| o.clone()));
                    f.push(
                        format!("key {key:?} is not linearizable"),
                        context,
                        core,
                        window.to_string(),
                    );
                }
            }
            for v in lin.revisions.iter().take(10) {
                f.push(
                    format!("revision violation: {:?}", v.kind),
                    vec![],
                    vec![v.earlier.clone(), v.later.clone()],
                    v.to_string(),
                );
            }
        }
    }
    if report.watch.is_fail() {
        if let Some(log) = &r.committed {
            f.watch = check_watchers(log, &r.watchers).violations;
        }
    }
    f
}

impl Findings {
    /// `core` ops frame the window in time; `context` ops are only listed.
    fn push(
        &mut self,
        title: String,
        context: Vec<Operation>,
        core: Vec<Operation>,
        detail: String,
    ) {
        let start = core.iter().map(|o| o.invoke).min().unwrap_or(0);
        // An unknown outcome has no end; the window ends at the last known time.
        let end = core
            .iter()
            .map(|o| o.complete.unwrap_or(o.invoke))
            .max()
            .unwrap_or(start);
        let mut ops = context;
        ops.extend(core);
        ops.sort_by_key(|o| o.invoke);
        ops.dedup_by_key(|o| o.id);
        self.offending.extend(ops.iter().map(|o| o.id));
        self.windows.push(HighlightWindow {
            start,
            end,
            title,
            ops,
            detail,
        });
    }
}

/// Milliseconds for display.
pub fn ms(t: Time) -> String {
    format!("{:.1}", t as f64 / 1e6)
}

/// The verdict texts, the failing windows with their ops, and the watch
/// violations.
pub fn render(out: &mut String, r: &SeedResult, f: &Findings) {
    if let Some(rep) = &r.report {
        for (name, v) in [
            ("linearizability", &rep.linearizability),
            ("watch", &rep.watch),
            ("durability", &rep.durability),
        ] {
            if let Verdict::Fail(why) | Verdict::Unknown(why) = v {
                out.push_str(&format!(
                    "<details class=\"verdict\"{}><summary>{name}: {}</summary><pre>{}</pre></details>\n",
                    if v.is_fail() { " open" } else { "" },
                    if v.is_fail() { "FAIL" } else { "unknown" },
                    esc(why)
                ));
            }
        }
    }
    if let Verdict::Fail(why) = &r.liveness {
        out.push_str(&format!("<p class=\"error\">liveness: {}</p>\n", esc(why)));
    }
    for (i, w) in f.windows.iter().enumerate() {
        out.push_str(&format!(
            "<div class=\"failing-window-detail\" id=\"seed-{}-window-{i}\"><h3>failing window {i}: {} \
             ({} ms .. {} ms)</h3>\n<table class=\"offending-ops\"><thead><tr><th>op</th><th>process</th>\
             <th>invoke ms</th><th>complete ms</th><th>call</th><th>outcome</th></tr></thead><tbody>\n",
            r.seed,
            esc(&w.title),
            ms(w.start),
            ms(w.end)
        ));
        for o in &w.ops {
            out.push_str(&format!(
                "<tr class=\"offending-op\" data-op=\"{}\"><td>#{}</td><td>p{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                o.id,
                o.id,
                o.process,
                ms(o.invoke),
                o.complete.map(ms).unwrap_or_else(|| "unknown".into()),
                esc(&o.call.to_string()),
                esc(&o.outcome.to_string())
            ));
        }
        out.push_str(&format!(
            "</tbody></table><pre>{}</pre></div>\n",
            esc(&w.detail)
        ));
    }
    if !f.watch.is_empty() {
        out.push_str("<h3>watch violations</h3><ul class=\"watch-violations\">\n");
        for v in &f.watch {
            out.push_str(&format!(
                "<li class=\"watch-violation\">{}</li>\n",
                esc(&v.to_string())
            ));
        }
        out.push_str("</ul>\n");
    }
}
