//! What every dashboard page shares: the escaping of text, the page's own
//! style and frame (header, sign-out), and the sign-in page. Kept apart
//! from `view`, which renders an org's data into that frame.

/// Escapes text for HTML (element content and quoted attributes).
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

/// The page's own style: no external file, no CDN.
pub(crate) const STYLE: &str = r#"
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2733;background:#f5f7fa}
header{background:#1d2733;color:#fff;padding:10px 20px;display:flex;gap:20px;align-items:center}
header a{color:#cfe3ff}header form{margin-left:auto}
main{padding:16px 20px;max-width:1000px}
section{background:#fff;border:1px solid #dde3ea;border-radius:6px;padding:12px 16px;margin:0 0 16px}
h1{font-size:18px;margin:0}h2{font-size:16px;margin:0 0 8px}h3{font-size:14px;margin:12px 0 6px}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #eef1f5}
th{font-weight:600;color:#4a5867}td.n,th.n{text-align:right}
.stats{display:flex;gap:24px;flex-wrap:wrap;margin:6px 0}.stat b{display:block;font-size:20px}
.ranges a{margin-right:10px}.ranges a.on{font-weight:700;text-decoration:none;color:#1d2733}
svg{width:100%;height:auto}.axis{font-size:11px;fill:#5b6877}.grid{stroke:#e6eaef}
.line{fill:none;stroke-width:1.6}.line.peak{stroke:#c2410c}.line.average{stroke:#2563eb}
.line.quota{stroke:#111;stroke-dasharray:6 4}.denial{fill:#dc2626;fill-opacity:.75}
.cell{fill:#c2410c}.empty{fill:#eef1f5}.bar{fill:#2563eb}
.legend span{margin-right:14px}.legend i{display:inline-block;width:18px;height:3px;vertical-align:middle;margin-right:4px}
.note{color:#5b6877}.err{color:#b91c1c}button{cursor:pointer}
nav.tabs{display:flex;gap:4px;margin:-16px -20px 16px;padding:0 20px;background:#e8edf3;flex-wrap:wrap}
nav.tabs a{padding:8px 12px;color:#1d2733;text-decoration:none;border-bottom:3px solid transparent}nav.tabs a.on{border-color:#2563eb;font-weight:600}
"#;

/// A whole page around `body`.
pub fn page(title: &str, who: Option<&str>, body: &str) -> String {
    let signed = match who {
        Some(w) => {
            format!(r#"<span>{}</span><form method="post" action="/signout"><button>Sign out</button></form>"#, esc(w))
        }
        None => String::new(),
    };
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>{} · license broker</title><style>{STYLE}</style></head><body><header><h1><a href="/">License broker</a></h1>{signed}</header><main>{body}</main></body></html>"#,
        esc(title)
    )
}

/// The sign-in page (with an error line after a failed attempt).
pub fn sign_in(error: Option<&str>) -> String {
    let error = error.map(|e| format!(r#"<p class="err">{}</p>"#, esc(e))).unwrap_or_default();
    page(
        "Sign in",
        None,
        &format!(
            r#"<section><h2>Sign in</h2>{error}<form method="post" action="/signin"><p><label>API key <input name="key" type="password" size="72" autocomplete="off" required></label></p><p><button>Sign in</button></p></form><p class="note">Any API key of the broker: the operator's shows every org, a member's shows their org.</p></section>"#
        ),
    )
}
