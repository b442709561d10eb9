//! The HTML pages people see: the waiting room, the sale's countdown and buy page, and the
//! busy page. Built in from `config/pages/`, or loaded from `pages.dir` so an operator can
//! brand them. Templates hold `{{name}}` variables, parsed once at start-up; every value is
//! HTML-escaped, and scripts run only with the per-response nonce of the page's CSP.

use std::path::Path;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, StatusCode};
use http_body_util::{Either, Full};

use crate::http::response::GatewayResponse;

/// Which page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// `GET /sale/{sku}/wait?ticket=…`: position, ETA, then the outcome.
    Wait,
    /// `GET /sale/{sku}/wait` without a ticket: countdown to the opening, then the buy button.
    Countdown,
    /// `GET /sale/busy`: where `overflow = "redirect"` sends refused requests.
    Busy,
}

impl Page {
    const ALL: [Page; 3] = [Page::Wait, Page::Countdown, Page::Busy];

    /// The template's file name under `pages.dir`.
    pub fn file_name(self) -> &'static str {
        match self {
            Page::Wait => "wait.html",
            Page::Countdown => "countdown.html",
            Page::Busy => "busy.html",
        }
    }

    fn builtin(self) -> &'static str {
        match self {
            Page::Wait => include_str!("../config/pages/wait.html"),
            Page::Countdown => include_str!("../config/pages/countdown.html"),
            Page::Busy => include_str!("../config/pages/busy.html"),
        }
    }
}

/// A template variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    Sku,
    Ticket,
    StartsAt,
    StartsAtMs,
    PrequeueAtMs,
    NowMs,
    RetryAfter,
    Nonce,
}

impl Var {
    fn of(name: &str) -> Option<Self> {
        Some(match name {
            "sku" => Var::Sku,
            "ticket" => Var::Ticket,
            "starts_at" => Var::StartsAt,
            "starts_at_ms" => Var::StartsAtMs,
            "prequeue_at_ms" => Var::PrequeueAtMs,
            "now_ms" => Var::NowMs,
            "retry_after" => Var::RetryAfter,
            "nonce" => Var::Nonce,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Var(Var),
}

/// A parsed template.
#[derive(Debug, Clone)]
struct Template {
    parts: Vec<Part>,
    size_hint: usize,
}

/// `text` without its HTML comments: they are for template authors (what a page is, its
/// variables), not for the people it is served to.
fn without_comments(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("<!--") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 4..];
        let close = after
            .find("-->")
            .ok_or_else(|| "a `<!--` without its `-->`".to_owned())?;
        rest = &after[close + 3..];
        // The line the comment stood on goes with it.
        if out.ends_with('\n') || out.is_empty() {
            rest = rest.strip_prefix('\n').unwrap_or(rest);
        }
    }
    out.push_str(rest);
    Ok(out)
}

impl Template {
    fn parse(text: &str) -> Result<Self, String> {
        let text = without_comments(text)?;
        let text = text.as_str();
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            parts.push(Part::Text(rest[..open].to_owned()));
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| "a `{{` without its `}}`".to_owned())?;
            let name = after[..close].trim();
            let var = Var::of(name).ok_or_else(|| {
                format!(
                    "unknown variable `{{{{{name}}}}}` (known: sku, ticket, starts_at, \
                     starts_at_ms, prequeue_at_ms, now_ms, retry_after, nonce)"
                )
            })?;
            parts.push(Part::Var(var));
            rest = &after[close + 2..];
        }
        parts.push(Part::Text(rest.to_owned()));
        Ok(Self {
            parts,
            size_hint: text.len() + 64,
        })
    }

    fn render(&self, values: &Values<'_>, nonce: &str) -> String {
        let mut out = String::with_capacity(self.size_hint);
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var(Var::Nonce) => out.push_str(nonce),
                Part::Var(v) => escape_into(&mut out, &values.get(*v)),
            }
        }
        out
    }
}

/// The values a page is rendered with; what a page does not use may stay empty.
#[derive(Debug, Default)]
pub struct Values<'a> {
    /// The sale.
    pub sku: &'a str,
    /// The ticket (already checked to be one of ours in form).
    pub ticket: &'a str,
    /// The opening, RFC 3339, empty when the sale has no start time.
    pub starts_at: String,
    /// The opening in Unix milliseconds, 0 when none.
    pub starts_at_ms: u64,
    /// When the sale's pre-queue opens, in Unix milliseconds; 0 when it has none.
    pub prequeue_at_ms: u64,
    /// Seconds a refused request should wait.
    pub retry_after: u32,
}

impl Values<'_> {
    fn get(&self, v: Var) -> std::borrow::Cow<'_, str> {
        use std::borrow::Cow;
        match v {
            Var::Sku => Cow::Borrowed(self.sku),
            Var::Ticket => Cow::Borrowed(self.ticket),
            Var::StartsAt => Cow::Borrowed(&self.starts_at),
            Var::StartsAtMs => Cow::Owned(self.starts_at_ms.to_string()),
            Var::PrequeueAtMs => Cow::Owned(self.prequeue_at_ms.to_string()),
            Var::NowMs => {
                Cow::Owned(crate::types::unix_millis(std::time::SystemTime::now()).to_string())
            }
            Var::RetryAfter => Cow::Owned(self.retry_after.to_string()),
            // Rendered from the response's own nonce, never from a value.
            Var::Nonce => Cow::Borrowed(""),
        }
    }
}

fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// Why the pages could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("config key `pages.dir`: {path}: {reason}")]
pub struct PagesError {
    /// The template file.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The three pages, ready to render.
#[derive(Debug, Clone)]
pub struct Pages {
    wait: Template,
    countdown: Template,
    busy: Template,
}

impl Pages {
    /// The built-in pages (the files shipped in `config/pages/`).
    pub fn builtin() -> Self {
        let parse = |p: Page| {
            Template::parse(p.builtin()).unwrap_or_else(|e| {
                // The built-in templates are tested; a broken one is a build defect.
                panic!("built-in page {} is broken: {e}", p.file_name())
            })
        };
        Self {
            wait: parse(Page::Wait),
            countdown: parse(Page::Countdown),
            busy: parse(Page::Busy),
        }
    }

    /// Loads the pages from `dir`; a page missing there is the built-in one.
    pub fn load(dir: &Path) -> Result<Self, PagesError> {
        if !dir.is_dir() {
            return Err(PagesError {
                path: dir.display().to_string(),
                reason: "not a directory".into(),
            });
        }
        let mut pages = Self::builtin();
        for page in Page::ALL {
            let path = dir.join(page.file_name());
            let shown = path.display().to_string();
            let text = match std::fs::read(&path) {
                Ok(bytes) => String::from_utf8(bytes).map_err(|_| PagesError {
                    path: shown.clone(),
                    reason: "not UTF-8".into(),
                })?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(PagesError {
                        path: shown,
                        reason: e.to_string(),
                    })
                }
            };
            let template = Template::parse(&text).map_err(|reason| PagesError {
                path: shown,
                reason,
            })?;
            *pages.slot(page) = template;
        }
        Ok(pages)
    }

    fn slot(&mut self, page: Page) -> &mut Template {
        match page {
            Page::Wait => &mut self.wait,
            Page::Countdown => &mut self.countdown,
            Page::Busy => &mut self.busy,
        }
    }

    fn template(&self, page: Page) -> &Template {
        match page {
            Page::Wait => &self.wait,
            Page::Countdown => &self.countdown,
            Page::Busy => &self.busy,
        }
    }

    /// The page as a response: 200 HTML, not cached, scripts allowed only with its nonce.
    pub fn render(&self, page: Page, values: &Values<'_>) -> GatewayResponse {
        let nonce = fresh_nonce();
        let html = self.template(page).render(values, &nonce);
        let mut resp = GatewayResponse::new(Either::Right(Full::new(Bytes::from(html))));
        *resp.status_mut() = StatusCode::OK;
        let h = resp.headers_mut();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
        let csp = format!(
            "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; \
             frame-ancestors 'none'"
        );
        if let Ok(v) = HeaderValue::from_str(&csp) {
            h.insert("content-security-policy", v);
        }
        resp
    }
}

/// A CSP nonce for one response: 128 random bits, hex.
fn fresh_nonce() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_pages_parse_and_render_escaped() {
        let pages = Pages::builtin();
        let values = Values {
            sku: "a<b>\"c'&",
            ticket: "0123456789abcdef0123456789abcdef",
            ..Values::default()
        };
        for page in Page::ALL {
            let html = pages.template(page).render(&values, "n");
            assert!(
                !html.contains("{{"),
                "{}: a variable was left",
                page.file_name()
            );
            assert!(
                html.contains("a&lt;b&gt;&quot;c&#39;&amp;"),
                "{}: the sku is escaped",
                page.file_name()
            );
            assert!(!html.contains("a<b>"), "{}", page.file_name());
            assert!(
                !html.contains("<!--") && !html.contains("Variables:"),
                "{}: the template's comment is not served",
                page.file_name()
            );
        }
    }

    #[test]
    fn comments_are_for_template_authors_only() {
        let t = Template::parse("<!doctype html>\n<!-- {{sku}}: the sku -->\n<p>{{sku}}</p>")
            .expect("parses");
        let v = Values {
            sku: "x",
            ..Values::default()
        };
        assert_eq!(t.render(&v, "n"), "<!doctype html>\n<p>x</p>");
        let e = Template::parse("<p>a</p><!-- open").expect_err("unclosed");
        assert!(e.contains("<!--"), "{e}");
    }

    #[test]
    fn templates_with_unknown_or_unclosed_variables_are_refused() {
        let e = Template::parse("<p>{{ skew }}</p>").expect_err("unknown");
        assert!(e.contains("skew"), "{e}");
        assert!(Template::parse("<p>{{sku</p>").is_err());
        let t = Template::parse("{{sku}}-{{ sku }}").expect("spaces allowed");
        let v = Values {
            sku: "x",
            ..Values::default()
        };
        assert_eq!(t.render(&v, "n"), "x-x");
    }

    #[test]
    fn the_nonce_differs_per_response_and_matches_the_csp() {
        let pages = Pages::builtin();
        let values = Values {
            sku: "s",
            ticket: "0123456789abcdef0123456789abcdef",
            ..Values::default()
        };
        let a = pages.render(Page::Wait, &values);
        let b = pages.render(Page::Wait, &values);
        let csp = |r: &GatewayResponse| {
            r.headers()["content-security-policy"]
                .to_str()
                .expect("ascii")
                .to_owned()
        };
        assert_ne!(csp(&a), csp(&b));
        assert!(csp(&a).contains("script-src 'nonce-"));
    }
}
