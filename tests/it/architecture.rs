//! The house keeps its layers: every `crate::…` (and `super::…`) path in `src/` is read, and
//! a module that reaches a module of a higher layer than the table in `src/lib.rs` allows,
//! a module missing from the table, or modules (or files) importing each other in a circle
//! fail this test, naming the file and the import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// Module → layer, from the `//! - L<n> …: [`a`], [`b`]` lines of `src/lib.rs`.
fn layer_table(lib: &str) -> BTreeMap<String, u32> {
    let mut table = BTreeMap::new();
    let mut current = None;
    for line in lib.lines() {
        let rest = if let Some(rest) = line.strip_prefix("//! - L") {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            current = Some(digits.parse::<u32>().expect("a layer number after `L`"));
            rest
        } else if let Some(rest) = line.strip_prefix("//!   ").filter(|_| current.is_some()) {
            rest // an entry's continuation line
        } else {
            current = None;
            continue;
        };
        let Some(layer) = current else { continue };
        for part in rest.split("[`").skip(1) {
            let name = part.split('`').next().expect("a closing backtick");
            table.insert(name.to_owned(), layer);
        }
    }
    table
}

/// The modules `src/lib.rs` declares.
fn declared_modules(lib: &str) -> BTreeSet<String> {
    lib.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            let l = l.strip_prefix("pub(crate) ").unwrap_or(l);
            l.strip_prefix("mod ")
                .and_then(|m| m.strip_suffix(';'))
                .map(str::to_owned)
        })
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's module path: `src/http/server/mod.rs` → `["http", "server"]`.
fn module_path(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(SRC).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    if last != "mod.rs" {
        parts.push(last.trim_end_matches(".rs").to_owned());
    }
    parts
}

/// A file without its `#[cfg(test)] mod tests { … }` block: tests may reach anywhere.
fn without_tests(text: &str) -> String {
    let Some(start) = text.find("#[cfg(test)]\nmod tests") else {
        return text.to_owned();
    };
    let mut depth = 0usize;
    let mut end = text.len();
    for (i, c) in text[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    end = start + i + 1;
                    break;
                }
            }
            _ => {}
        }
    }
    format!("{}{}", &text[..start], &text[end..])
}

/// The code of a file without comments, string literals and its tests.
fn code_of(text: &str) -> String {
    let text = without_tests(text);
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut in_str = false;
        let mut prev = ' ';
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if !in_str && c == '/' && chars.peek() == Some(&'/') {
                break;
            }
            if c == '"' && prev != '\\' && prev != '\'' {
                in_str = !in_str;
            } else if !in_str {
                out.push(c);
            }
            prev = c;
        }
        out.push('\n');
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Every module path a file names: `crate::a::b`, `crate::{a, b::c}`, `super::x`.
fn imports(file: &Path, code: &str) -> Vec<Vec<String>> {
    let here = module_path(file);
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find(['c', 's']) {
        let at = &rest[i..];
        let boundary = rest[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        let (base, tail) = if let Some(t) = at.strip_prefix("crate::").filter(|_| boundary) {
            (Vec::new(), t)
        } else if at.starts_with("super::") && boundary {
            // `super` of a file's module, as many times as it is written.
            let mut base = here.clone();
            let mut t = at;
            while let Some(next) = t.strip_prefix("super::") {
                base.pop();
                t = next;
            }
            (base, t)
        } else {
            rest = &rest[i + 1..];
            continue;
        };
        if let Some(group) = tail.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let item = item.trim();
                let mut path = base.clone();
                path.extend(item.split("::").map(|p| ident_at(p.trim()).to_owned()));
                found.push(path);
            }
        } else {
            let mut path = base.clone();
            let mut t = tail;
            loop {
                let id = ident_at(t);
                if id.is_empty() {
                    break;
                }
                path.push(id.to_owned());
                match t[id.len()..].strip_prefix("::") {
                    Some(next) if !next.starts_with('{') => t = next,
                    Some(next) => {
                        for item in next[1..next.find('}').unwrap_or(next.len())].split(',') {
                            let mut p = path.clone();
                            p.extend(item.split("::").map(|i| ident_at(i.trim()).to_owned()));
                            found.push(p);
                        }
                        break;
                    }
                    None => break,
                }
            }
            found.push(path);
        }
        rest = &rest[i + 1..];
    }
    found.retain(|p| p.first().is_some_and(|m| !m.is_empty() && m != "self"));
    found
}

/// The deepest source file a module path lands in.
fn file_of(path: &[String]) -> Option<PathBuf> {
    for n in (1..=path.len()).rev() {
        let joined = path[..n].join("/");
        for candidate in [
            format!("{SRC}/{joined}.rs"),
            format!("{SRC}/{joined}/mod.rs"),
        ] {
            let p = PathBuf::from(candidate);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Strongly connected components of more than one node (Tarjan).
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(w: &mut Walk<'a>, v: &'a str) {
        let i = w.index.len();
        w.index.insert(v, i);
        w.low.insert(v, i);
        w.stack.push(v);
        w.on_stack.insert(v);
        if let Some(next) = w.edges.get(v) {
            for u in next {
                let u = u.as_str();
                if !w.index.contains_key(u) {
                    visit(w, u);
                    let low = w.low[u].min(w.low[v]);
                    w.low.insert(v, low);
                } else if w.on_stack.contains(u) {
                    let low = w.index[u].min(w.low[v]);
                    w.low.insert(v, low);
                }
            }
        }
        if w.low[v] == w.index[v] {
            let mut component = Vec::new();
            while let Some(u) = w.stack.pop() {
                w.on_stack.remove(u);
                component.push(u.to_owned());
                if u == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                w.found.push(component);
            }
        }
    }
    let mut w = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !w.index.contains_key(v.as_str()) {
            visit(&mut w, v);
        }
    }
    w.found
}

#[test]
fn no_module_reaches_a_higher_layer_and_nothing_imports_in_a_circle() {
    let lib = std::fs::read_to_string(format!("{SRC}/lib.rs")).expect("src/lib.rs");
    let table = layer_table(&lib);
    let mut problems = Vec::new();
    for m in declared_modules(&lib) {
        if !table.contains_key(&m) {
            problems.push(format!(
                "src/lib.rs: module `{m}` is in no layer of the table"
            ));
        }
    }
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    files.sort();
    let mut module_edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut file_edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let shown = |p: &Path| {
        p.strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap_or(p)
            .display()
            .to_string()
    };
    for file in &files {
        let here = module_path(file);
        let Some(top) = here.first() else {
            continue; // lib.rs, main.rs: the roots
        };
        if top == "main" {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("source file");
        let Some(&from) = table.get(top) else {
            continue; // reported above
        };
        for path in imports(file, &code_of(&text)) {
            let target = &path[0];
            let Some(&to) = table.get(target) else {
                continue; // a crate-root item (a re-export), not a module
            };
            if to > from {
                problems.push(format!(
                    "{}: imports crate::{} (L{to}) from `{top}` (L{from})",
                    shown(file),
                    path.join("::"),
                ));
            }
            if target != top {
                module_edges
                    .entry(top.clone())
                    .or_default()
                    .insert(target.clone());
            }
            if let Some(dest) = file_of(&path) {
                if dest != *file {
                    file_edges
                        .entry(shown(file))
                        .or_default()
                        .insert(shown(&dest));
                }
            }
        }
    }
    for c in circles(&module_edges) {
        problems.push(format!(
            "modules import each other in a circle: {}",
            c.join(", ")
        ));
    }
    for c in circles(&file_edges) {
        problems.push(format!(
            "files import each other in a circle: {}",
            c.join(", ")
        ));
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

#[test]
fn the_reader_sees_what_it_must() {
    let file = PathBuf::from(format!("{SRC}/sale/drain.rs"));
    let code = code_of(
        "use crate::{a::B, c};\nuse super::queue::Head; // crate::ignored\nlet x = \"crate::no\";\n\
         crate::store::reserve(); use crate::http::{pool::Pool, server};\n",
    );
    let found: BTreeSet<String> = imports(&file, &code).iter().map(|p| p.join("::")).collect();
    for expected in [
        "a::B",
        "c",
        "sale::queue::Head",
        "store::reserve",
        "http::pool::Pool",
        "http::server",
    ] {
        assert!(found.contains(expected), "{expected} not in {found:?}");
    }
    assert!(
        !found
            .iter()
            .any(|p| p.contains("ignored") || p.contains("no")),
        "{found:?}"
    );
    let code = code_of("use crate::a;\n#[cfg(test)]\nmod tests {\n    use crate::b;\n    fn f() { }\n}\nuse crate::c;\n");
    let found: BTreeSet<String> = imports(&file, &code).iter().map(|p| p.join("::")).collect();
    assert_eq!(found, ["a", "c"].iter().map(|s| s.to_string()).collect());
    let edges: BTreeMap<String, BTreeSet<String>> = [("a", "b"), ("b", "a"), ("b", "c")]
        .iter()
        .fold(BTreeMap::new(), |mut m, (f, t)| {
            m.entry(f.to_string()).or_default().insert(t.to_string());
            m
        });
    assert_eq!(
        circles(&edges),
        vec![vec!["a".to_string(), "b".to_string()]]
    );
    let table = layer_table("//! - L0 base: [`types`], [`error`]\n//! - L3 sale: [`sale`]\n");
    assert_eq!(table.get("error"), Some(&0));
    assert_eq!(table.get("sale"), Some(&3));
}

/// The rows of docs/layout.md's module table: (layer, name as written, the row's text).
fn layout_rows(doc: &str) -> Vec<(u32, String, String)> {
    doc.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            // "| L0 | `types` | … |" splits into ["", "L0", "`types`", "…", ""].
            let layer = cells.get(1)?.strip_prefix('L')?.parse().ok()?;
            let name = cells.get(2)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((layer, name.to_owned(), cells.get(3)?.to_string()))
        })
        .collect()
}

/// docs/layout.md's table is the tree's: every module of `src/lib.rs` has one row in its
/// layer, written `name/` when it is a folder, and a folder's row names every file and
/// folder in it.
#[test]
fn the_layout_table_is_complete() {
    let lib = std::fs::read_to_string(format!("{SRC}/lib.rs")).expect("src/lib.rs");
    let table = layer_table(&lib);
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/layout.md"))
        .expect("docs/layout.md");
    let rows = layout_rows(&doc);
    let mut problems = Vec::new();
    let mut listed = BTreeSet::new();
    for (layer, written, text) in &rows {
        let name = written.trim_end_matches('/');
        listed.insert(name.to_owned());
        match table.get(name) {
            None => problems.push(format!("`{written}` is not a module of src/lib.rs")),
            Some(l) if l != layer => problems.push(format!("`{written}` is in L{l}, not L{layer}")),
            Some(_) => {}
        }
        let dir = Path::new(SRC).join(name);
        if dir.is_dir() != written.ends_with('/') {
            problems.push(format!(
                "`{written}`: a folder is written `name/`, a file `name`"
            ));
        }
        if !dir.is_dir() {
            continue;
        }
        for entry in std::fs::read_dir(&dir).expect("a module folder") {
            let path = entry.expect("entry").path();
            let file = path
                .file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned();
            let shown = if path.is_dir() {
                format!("`{file}/`")
            } else {
                format!("`{}`", file.trim_end_matches(".rs"))
            };
            if file != "mod.rs" && !text.contains(&shown) {
                problems.push(format!("the row of `{written}` does not name {shown}"));
            }
        }
    }
    for module in table.keys() {
        if !listed.contains(module) {
            problems.push(format!("docs/layout.md has no row for `{module}`"));
        }
    }
    assert!(rows.len() > 10, "the table was not read");
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
}

/// Longest source file and function of `src/`, in lines: rooms a newcomer reads in one
/// sitting.
const MAX_FILE_LINES: usize = 600;
const MAX_FN_LINES: usize = 100;

/// The functions of a file longer than `max` lines, as (name, lines). A function runs from
/// its `fn` line to the first line after it that closes at the same indentation.
fn long_functions(text: &str, max: usize) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut long = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let signature = ["pub(crate) ", "pub(super) ", "pub ", "async ", "const "]
            .iter()
            .fold(trimmed, |t, p| t.strip_prefix(p).unwrap_or(t));
        let signature = signature.strip_prefix("async ").unwrap_or(signature);
        let Some(rest) = signature.strip_prefix("fn ") else {
            continue;
        };
        if trimmed.ends_with(';') {
            continue; // a declaration, no body
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let closing = format!("{indent}}}");
        if let Some(end) = lines[i + 1..].iter().position(|l| *l == closing) {
            if end + 2 > max {
                long.push((name, end + 2));
            }
        }
    }
    long
}

#[test]
fn no_source_file_or_function_is_too_long_to_read_in_one_sitting() {
    let mut files = Vec::new();
    rust_files(Path::new(SRC), &mut files);
    let mut problems = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("source file");
        let shown = file
            .strip_prefix(SRC)
            .unwrap_or(&file)
            .display()
            .to_string();
        let n = text.lines().count();
        if n > MAX_FILE_LINES {
            problems.push(format!("src/{shown}: {n} lines (at most {MAX_FILE_LINES})"));
        }
        for (name, n) in long_functions(&text, MAX_FN_LINES) {
            problems.push(format!(
                "src/{shown}: fn {name} is {n} lines (at most {MAX_FN_LINES})"
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}\n", problems.join("\n"));
    // The reader finds a long function, nested or not, and ends it at its own brace.
    let body = "    x();\n".repeat(3);
    let text = format!("impl A {{\n    pub async fn f() {{\n{body}    }}\n}}\nfn g() {{\n}}\n");
    assert_eq!(long_functions(&text, 4), [("f".to_owned(), 5)]);
}
