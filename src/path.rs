//! One normalised request path for every decision the gateway makes and for the upstream.
//!
//! Backends route on the path as *they* read it: most decode percent-encoding first, some
//! merge slashes, strip `;parameters` or accept `.json` suffixes. If the gateway decided on
//! the raw text and forwarded it unchanged, `/%6frders` would pass a guard on `/orders` and
//! land on it. So the path is normalised once, as RFC 3986 §6.2.2 describes, and both the
//! gateway's routes and guard and the upstream see that same text:
//!
//! - percent-encoded unreserved characters are decoded (`%6f` → `o`), other escapes keep
//!   their encoding with upper-case hex digits, raw non-ASCII bytes are encoded;
//! - repeated slashes are merged;
//! - what no honest client sends and some backend would read as something else is refused:
//!   dot segments (`..`, `%2e%2e`, `..;x`), encoded `/` and `\`, NUL and control characters,
//!   a raw `\`, malformed or double encoding (`%256f`), and escapes that do not decode to
//!   UTF-8 (overlong forms such as `%c0%af`).
//!
//! Normalising a normalised path gives it back unchanged, and the common path (nothing to
//! change) is checked in place without allocating.

use std::borrow::Cow;

/// Why a path is refused; every case is answered 400 `bad_request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// An encoded `/` or `\`, a NUL or a control character, or a raw `\`.
    Forbidden,
    /// `%25` followed by two hex digits: an escape that a second decoding would turn into
    /// another character.
    DoubleEncoded,
    /// The escapes do not decode to UTF-8 (overlong forms among them).
    NotUtf8,
    /// A `.` or `..` segment, in any spelling.
    DotSegment,
    /// Neither `/…` nor `*`.
    NotAbsolute,
    /// A request target in authority-form (`orders`, `host:80`) on a method other than
    /// CONNECT, or `*` on a method other than OPTIONS (RFC 9112 §3.2).
    Form,
}

impl PathError {
    /// The reason, as a static text for the error body.
    pub fn reason(self) -> &'static str {
        match self {
            Self::BadEscape => "the path has a malformed percent-encoding",
            Self::Forbidden => "the path encodes a slash, a backslash, NUL or a control character",
            Self::DoubleEncoded => "the path is percent-encoded twice",
            Self::NotUtf8 => "the path does not decode to UTF-8",
            Self::DotSegment => "the path has dot segments",
            Self::NotAbsolute => "the path is not absolute",
            Self::Form => "the request target is not a path or a URL (authority-form is for CONNECT, * for OPTIONS)",
        }
    }
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for PathError {}

/// The normalised form of `raw` (a request target's path), or why it is refused.
pub fn normalise(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if raw == "*" {
        // `OPTIONS *`: no path to normalise.
        return Ok(Cow::Borrowed(raw));
    }
    if raw.is_empty() {
        return Ok(Cow::Borrowed("/"));
    }
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if already_normal(raw.as_bytes()) {
        check_segments(raw)?;
        return Ok(Cow::Borrowed(raw));
    }
    rewrite(raw.as_bytes()).map(Cow::Owned)
}

/// Refuses a request target in a form `method` may not use: authority-form (`orders`,
/// `host:80`) but on CONNECT, which the proxy's guard refuses itself, and `*` but on
/// OPTIONS. Forwarded, either would reach the upstream as `/` with the target for a host.
pub fn check_form(method: &http::Method, uri: &http::Uri) -> Result<(), PathError> {
    if *method == http::Method::CONNECT {
        return Ok(());
    }
    let authority_form = uri.scheme().is_none() && uri.authority().is_some();
    if authority_form || (uri.path() == "*" && *method != http::Method::OPTIONS) {
        return Err(PathError::Form);
    }
    Ok(())
}

/// Normalises the path of `uri` in place (keeping its scheme, authority and query); does
/// nothing, and allocates nothing, when it is normal already.
pub fn normalise_uri(uri: &mut http::Uri) -> Result<(), PathError> {
    let normal = match normalise(uri.path())? {
        Cow::Borrowed(_) => return Ok(()),
        Cow::Owned(p) => p,
    };
    let mut text = normal;
    if let Some(q) = uri.query() {
        text.push('?');
        text.push_str(q);
    }
    let mut parts = std::mem::take(uri).into_parts();
    // The rewritten path is made of bytes a path may hold, so this parses.
    parts.path_and_query = Some(text.parse().map_err(|_| PathError::Forbidden)?);
    *uri = http::Uri::from_parts(parts).map_err(|_| PathError::Forbidden)?;
    Ok(())
}

/// How the most forgiving backends might route `path`, one reading per [`Reading`]:
/// escapes decoded until nothing changes (bytes that are not UTF-8 read as `/`, as old
/// servers read overlong forms), folded ([`fold_as`]), `\` as `/`, slashes merged,
/// `;parameters` stripped, whitespace trimmed, dot segments resolved, each segment cut at
/// `.`, `:` or NUL. The intake guard is tested and fuzzed against these readings.
pub fn lenient_readings(path: &str) -> Vec<Vec<String>> {
    let mut text = path.to_owned();
    loop {
        let decoded = decode_leniently(&text);
        if decoded == text {
            break;
        }
        text = decoded;
    }
    Reading::ALL
        .iter()
        .map(|&reading| lenient_segments(&fold_as(&text, reading)))
        .collect()
}

/// True when a backend reading `segment` in any of the [`lenient_readings`] would take it
/// for `ours` (lower case): the same, or `ours` followed by anything but a letter, digit,
/// `-` or `_` (which such a backend may strip: `orders;x`, `orders.json`, `orders\u{301}`).
pub fn reads_as(segment: &str, ours: &str) -> bool {
    let segment = segment.trim();
    let Some(head) = segment.get(..ours.len()) else {
        return false;
    };
    if !head.eq_ignore_ascii_case(ours) {
        return false;
    }
    segment[ours.len()..]
        .chars()
        .next()
        .is_none_or(|c| !(c.is_alphanumeric() || c == '-' || c == '_'))
}

fn lenient_segments(folded: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for segment in folded.replace('\\', "/").split('/') {
        match segment.split(';').next().unwrap_or_default().trim() {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => {
                let cut = s.split([';', '.', ':', '\0']).next().unwrap_or("").trim();
                if !cut.is_empty() {
                    out.push(cut.to_owned());
                }
            }
        }
    }
    out
}

fn decode_leniently(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).replace('\u{fffd}', "/")
}

/// True when there is nothing to rewrite: no escape, no repeated slash, ASCII only, nothing
/// forbidden. Dot segments are checked separately.
fn already_normal(b: &[u8]) -> bool {
    let mut prev = 0u8;
    for &c in b {
        if c == b'%' || c == b'\\' || !(0x20..0x7f).contains(&c) || (c == b'/' && prev == b'/') {
            return false;
        }
        prev = c;
    }
    true
}

fn rewrite(b: &[u8]) -> Result<String, PathError> {
    let mut out = String::with_capacity(b.len() + 8);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'/' if out.ends_with('/') => {}
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    b.get(i + 1).copied().and_then(hex),
                    b.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let v = hi << 4 | lo;
                if v == b'/' || v == b'\\' || v < 0x20 || v == 0x7f {
                    return Err(PathError::Forbidden);
                }
                if is_unreserved(v) {
                    out.push(char::from(v));
                } else {
                    push_escape(&mut out, v);
                }
                i += 2;
            }
            b'\\' => return Err(PathError::Forbidden),
            c if c < 0x20 || c == 0x7f => return Err(PathError::Forbidden),
            c if c >= 0x80 => push_escape(&mut out, c),
            c => out.push(char::from(c)),
        }
        i += 1;
    }
    check_escapes(&out)?;
    check_segments(&out)?;
    Ok(out)
}

/// Refuses double encoding and escapes that are not UTF-8, reading the rewritten path (so
/// a second normalisation reaches the same verdict).
fn check_escapes(path: &str) -> Result<(), PathError> {
    let b = path.as_bytes();
    let mut decoded = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            // The rewrite wrote every escape, so both digits are there.
            let v = hex(b[i + 1]).unwrap_or(0) << 4 | hex(b[i + 2]).unwrap_or(0);
            if v == b'%'
                && b.get(i + 3).copied().and_then(hex).is_some()
                && b.get(i + 4).copied().and_then(hex).is_some()
            {
                return Err(PathError::DoubleEncoded);
            }
            decoded.push(v);
            i += 3;
        } else {
            decoded.push(b[i]);
            i += 1;
        }
    }
    std::str::from_utf8(&decoded)
        .map(|_| ())
        .map_err(|_| PathError::NotUtf8)
}

/// Refuses `.` and `..` segments, also as a backend that decodes, normalises Unicode
/// (NFKC: a fullwidth `．` is a dot), trims whitespace and strips `;parameters` would read
/// them (`..;x`, `..%3Bx`, `..%20`).
fn check_segments(path: &str) -> Result<(), PathError> {
    for segment in path.split('/') {
        let read = if segment.contains('%') {
            Cow::Owned(fold(segment))
        } else {
            Cow::Borrowed(segment)
        };
        let name = read.split(';').next().unwrap_or_default().trim();
        if name == "." || name == ".." {
            return Err(PathError::DotSegment);
        }
    }
    Ok(())
}

/// How a Unicode-aware backend may compare text: each folds escapes, drops the
/// characters that render as nothing and folds case, and differs in what it does with
/// composed characters. A guard must refuse what any of them would route to the intake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// NFKC-normalised: fullwidth letters are letters, and `s` + U+0301 is `ś`.
    Nfkc,
    /// Not normalised: `s` + U+0301 is an `s` followed by a mark.
    Plain,
    /// Decomposed with the combining marks dropped: `ś` is `s`.
    Unmarked,
}

impl Reading {
    /// Every reading.
    pub const ALL: [Reading; 3] = [Reading::Nfkc, Reading::Plain, Reading::Unmarked];
}

/// A segment as the most forgiving backend compares it ([`Reading::Nfkc`]).
pub fn fold(segment: &str) -> String {
    fold_as(segment, Reading::Nfkc)
}

/// A segment as a backend reading it as `reading` compares it: escapes decoded,
/// normalised as `reading` says, case-folded as Java's `equalsIgnoreCase` and .NET's
/// ordinal-ignore-case do (`ſ` is `s`, the Kelvin sign is `k`).
pub fn fold_as(segment: &str, reading: Reading) -> String {
    use unicode_normalization::char::is_combining_mark;
    use unicode_normalization::UnicodeNormalization;
    let decoded = decode_leniently(segment);
    let chars: Box<dyn Iterator<Item = char>> = match reading {
        Reading::Nfkc => Box::new(decoded.nfkc()),
        Reading::Plain => Box::new(decoded.chars()),
        Reading::Unmarked => Box::new(decoded.nfkd().filter(|&c| !is_combining_mark(c)).nfkc()),
    };
    chars
        .filter(|&c| !is_ignorable(c))
        .flat_map(char::to_uppercase)
        .flat_map(char::to_lowercase)
        .collect()
}

/// Characters that render as nothing and that some reader drops or trims (JavaScript's
/// `trim` strips U+FEFF; NFKC case folding drops default-ignorables): zero-width spaces
/// and joiners, the BOM, soft hyphens, bidi marks, word joiners, invisible operators, tag
/// characters: every Default_Ignorable_Code_Point of Unicode.
fn is_ignorable(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

fn push_escape(out: &mut String, v: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(v >> 4)]));
    out.push(char::from(HEX[usize::from(v & 0xf)]));
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 §2.3: ALPHA / DIGIT / "-" / "." / "_" / "~".
fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_paths_are_borrowed_unchanged() {
        for p in [
            "/",
            "/a/b",
            "/a/b/",
            "/sale/phone/order",
            "/a;b=c",
            "/a.json",
            "*",
        ] {
            assert!(
                matches!(normalise(p), Ok(Cow::Borrowed(q)) if q == p),
                "{p}"
            );
        }
        assert_eq!(normalise("").as_deref(), Ok("/"));
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_upper_cased() {
        let cases = [
            ("/%6frders", "/orders"),
            ("/%6Frders", "/orders"),
            ("/%41%7a%30%2D%2e%5F%7e", "/Az0-._~"),
            ("/a%20b", "/a%20b"),
            ("/a%3fb", "/a%3Fb"),
            ("//a///b//", "/a/b/"),
            ("/caf\u{e9}", "/caf%C3%A9"),
            ("/%c3%a9", "/%C3%A9"),
            ("/a%3b", "/a%3B"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalise(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn what_a_backend_could_read_otherwise_is_refused() {
        let cases = [
            ("/%2forders", PathError::Forbidden),
            ("/orders%2F", PathError::Forbidden),
            ("/orders%00", PathError::Forbidden),
            ("/a%5cb", PathError::Forbidden),
            ("/a\\b", PathError::Forbidden),
            ("/a%0d%0a", PathError::Forbidden),
            ("/a%7F", PathError::Forbidden),
            ("/%256frders", PathError::DoubleEncoded),
            ("/%25%36%66rders", PathError::DoubleEncoded),
            ("/%c0%af", PathError::NotUtf8),
            ("/%e0%80%af", PathError::NotUtf8),
            ("/%ff", PathError::NotUtf8),
            ("/%", PathError::BadEscape),
            ("/%6", PathError::BadEscape),
            ("/%zz", PathError::BadEscape),
            ("/a/../orders", PathError::DotSegment),
            ("/a/./b", PathError::DotSegment),
            ("/%2e%2e/orders", PathError::DotSegment),
            ("/.%2E", PathError::DotSegment),
            ("/static/..;/admin", PathError::DotSegment),
            ("/x/..%3B/orders", PathError::DotSegment),
            ("/x/%2e%2e%3bx/orders", PathError::DotSegment),
            ("/x/..%20/orders", PathError::DotSegment),
            ("/x/%20.%C2%A0/orders", PathError::DotSegment),
            ("/x/%EF%BC%8E%EF%BC%8E/orders", PathError::DotSegment),
            ("/x/..%EF%BB%BF/orders", PathError::DotSegment),
            ("/x/.%E2%80%8B./orders", PathError::DotSegment),
            ("/..", PathError::DotSegment),
            ("a/b", PathError::NotAbsolute),
        ];
        for (raw, want) in cases {
            assert_eq!(normalise(raw), Err(want), "{raw}");
        }
        for ok in ["/a/..b", "/...", "/a/b.c", "/.well-known/x", "/%25"] {
            assert!(normalise(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn normalising_twice_is_normalising_once() {
        for raw in ["/%6fa//%7E%20x/", "/caf\u{e9}/%C3%A9", "/%25", "/a;b/c.d"] {
            let once = normalise(raw).expect("valid").into_owned();
            assert_eq!(normalise(&once).as_deref(), Ok(once.as_str()), "{raw}");
        }
    }
}
