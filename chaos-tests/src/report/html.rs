//! The page shell (inline CSS, the copy script) and HTML escaping.

/// Escapes text for HTML element content and double-quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = r#"
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
.v-pass{color:#1a7f37}.v-fail{color:#fff;background:#cf222e;font-weight:bold}.v-unknown{color:#9a6700}
tr.fail td:first-child{font-weight:bold}
.seed{display:none;border-top:2px solid #888;margin-top:1em}
.seed:target,.seed.open{display:block}
.timeline{background:#fafafa;border:1px solid #ddd}
.op.ok{fill:#2da44e}.op.fail{fill:#cf222e}.op.info{fill:#d4a72c;fill-opacity:.45}
.op.offending{stroke:#000;stroke-width:2}
.nemesis{fill:#888;fill-opacity:.18}
.fail-window{fill:#cf222e;fill-opacity:.15;stroke:#cf222e;stroke-width:2;stroke-dasharray:4 2}
.legend span{display:inline-block;padding:0 6px;margin-right:6px}
pre{background:#f3f3f3;padding:6px;overflow:auto}
.offending-ops td{text-align:left;font-family:monospace}
tr.offending-op{background:#ffebe9}
.lat{fill:#0969da;fill-opacity:.5}
.wev{fill:#2da44e}.wev.offending{fill:#cf222e}
.error{color:#cf222e}
"#;

/// Copy button; with no seed chosen, the first failing seed is shown.
const JS: &str = r#"
function copyReplay(b){navigator.clipboard&&navigator.clipboard.writeText(b.nextElementSibling.textContent)}
var f=document.querySelector('.seed[data-passed="false"]');
if(f&&!location.hash)f.classList.add('open');
addEventListener('hashchange',function(){if(f)f.classList.remove('open')});
"#;

pub fn head(out: &mut String, title: &str) {
    out.push_str(&format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n\
         <style>{CSS}</style></head><body>\n",
        esc(title)
    ));
}

pub fn tail(out: &mut String) {
    out.push_str(&format!("<script>{JS}</script>\n</body></html>\n"));
}
