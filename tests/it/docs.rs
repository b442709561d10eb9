//! The documentation holds together: every relative link in README.md and docs/ (and the
//! READMEs of grafana/ and packaging/) names a file that exists and, with `#anchor`, a
//! heading of that file; every repository path the text names in code spans (`src/…`,
//! `tests/…`) exists, so a moved file cannot leave its old name behind; and the README
//! stays short enough to read.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The documents read, relative to the repository.
fn documents() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = ["README.md", "grafana/README.md", "packaging/README.md"]
        .iter()
        .map(PathBuf::from)
        .collect();
    let mut docs: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join("docs"))
        .expect("docs/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .map(|p| {
            p.strip_prefix(ROOT)
                .expect("under the repository")
                .to_owned()
        })
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The lines of a markdown text outside fenced code blocks, numbered from 1.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            out.push((i + 1, line));
        }
    }
    out
}

/// `line` without its inline code spans.
fn without_code_spans(line: &str) -> String {
    line.split('`').step_by(2).collect::<Vec<_>>().join(" ")
}

/// The inline code spans of `line`.
fn code_spans(line: &str) -> impl Iterator<Item = &str> {
    line.split('`').skip(1).step_by(2)
}

/// The targets of the `[text](target)` links of `line`.
fn link_targets(line: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        let Some(end) = after.find(')') else { break };
        let target = after[..end]
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>');
        // A title after the target: [a](b "title").
        let target = target.split_whitespace().next().unwrap_or("");
        targets.push(target.to_owned());
        rest = &after[end..];
    }
    targets
}

/// GitHub's anchor for a heading: lower case, spaces to `-`, other punctuation dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a markdown file's headings (repeats get `-1`, `-2`, as GitHub does).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        // Link text only: `[a](b)` reads as `a`.
        let mut heading = String::new();
        let mut rest = &line[hashes..];
        while let Some(open) = rest.find('[') {
            let Some(mid) = rest[open..].find("](") else {
                break;
            };
            let Some(close) = rest[open + mid..].find(')') else {
                break;
            };
            heading.push_str(&rest[..open]);
            heading.push_str(&rest[open + 1..open + mid]);
            rest = &rest[open + mid + close + 1..];
        }
        heading.push_str(rest);
        let base = slug(&heading.replace('`', ""));
        let mut anchor = base.clone();
        let mut n = 0;
        while !seen.insert(anchor.clone()) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
    }
    seen
}

/// Checks one link target written in `doc`; the problem, if any.
fn check_link(doc: &Path, target: &str) -> Option<String> {
    let is_url = target.split_once(':').is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
    });
    if is_url || target.is_empty() {
        return None;
    }
    let (path, anchor) = match target.split_once('#') {
        Some((p, a)) => (p, Some(a)),
        None => (target, None),
    };
    let dir = Path::new(ROOT).join(doc.parent().unwrap_or(Path::new("")));
    let dest = if path.is_empty() {
        Path::new(ROOT).join(doc)
    } else {
        dir.join(path)
    };
    if !dest.exists() {
        return Some(format!("{target}: no such file"));
    }
    let anchor = anchor?;
    if dest.extension().is_none_or(|x| x != "md") {
        return Some(format!(
            "{target}: an anchor into a file that is not markdown"
        ));
    }
    let text = std::fs::read_to_string(&dest).expect("read the target");
    (!anchors(&text).contains(anchor)).then(|| format!("{target}: no heading #{anchor} there"))
}

/// The top-level folders whose paths the documents name in code spans.
const TREES: [&str; 11] = [
    "src/",
    "tests/",
    "bench/",
    "loadtest/",
    "grafana/",
    "config/",
    "docs/",
    "scripts/",
    "packaging/",
    "support/",
    "fuzz/",
];

/// A code span that names a repository path: one word under a known folder, no pattern.
fn repository_path(span: &str) -> Option<&str> {
    let span = span.trim();
    let is_path = TREES.iter().any(|t| span.starts_with(t))
        && !span.contains(|c: char| c.is_whitespace() || "*{}<>$…|".contains(c));
    // `src/store/mod.rs:58` and `tests/it/sale.rs::name` name a place in a file.
    is_path.then(|| span.split(':').next().unwrap_or(span))
}

#[test]
fn every_relative_link_and_named_path_in_the_docs_exists() {
    let mut problems = Vec::new();
    let mut links = 0;
    for doc in documents() {
        let text = std::fs::read_to_string(Path::new(ROOT).join(&doc)).expect("read a document");
        for (n, line) in prose_lines(&text) {
            for target in link_targets(&without_code_spans(line)) {
                links += 1;
                if let Some(p) = check_link(&doc, &target) {
                    problems.push(format!("{}:{n}: {p}", doc.display()));
                }
            }
            for path in code_spans(line).filter_map(repository_path) {
                if !Path::new(ROOT).join(path).exists() {
                    problems.push(format!("{}:{n}: `{path}` does not exist", doc.display()));
                }
            }
        }
    }
    assert!(links > 50, "only {links} links read: is the parser broken?");
    assert!(
        problems.is_empty(),
        "dead references:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_readme_is_short_and_links_every_page_of_docs() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).expect("README");
    let lines = readme.lines().count();
    assert!(
        lines <= 300,
        "README.md has {lines} lines; move detail into docs/"
    );
    for doc in documents().iter().filter(|d| d.starts_with("docs")) {
        let name = doc.to_string_lossy();
        assert!(
            readme.contains(&format!("({name}")),
            "README.md does not link {name}"
        );
    }
}

#[test]
fn the_checker_sees_what_it_must() {
    assert_eq!(slug("Redis for production"), "redis-for-production");
    assert_eq!(
        slug("What the proxy does (and why)"),
        "what-the-proxy-does-and-why"
    );
    let a = anchors("# A\n```\n# not a heading\n```\n## A\n### [Link](x.md) here\n");
    assert_eq!(a.into_iter().collect::<Vec<_>>(), ["a", "a-1", "link-here"]);
    assert_eq!(
        link_targets("see [a](b.md#c) and [d](e.md \"t\") and [g](https://x)"),
        ["b.md#c", "e.md", "https://x"]
    );
    assert_eq!(without_code_spans("a `[x](y)` b"), "a   b");
    assert_eq!(
        repository_path("src/store/mod.rs:58"),
        Some("src/store/mod.rs")
    );
    assert_eq!(repository_path("src/store/lua/*.lua"), None);
    assert_eq!(repository_path("cargo test"), None);
    let here = Path::new("docs/stores.md");
    assert!(check_link(here, "https://example.com/x").is_none());
    assert!(check_link(here, "contract.md").is_none());
    assert!(check_link(here, "no-such-page.md").is_some());
    assert!(check_link(here, "contract.md#no-such-heading").is_some());
}

#[test]
fn the_readmes_minimal_config_is_valid() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).expect("README");
    let section = readme
        .split("## A minimal config")
        .nth(1)
        .expect("a section `A minimal config`");
    let toml = section
        .split("```toml\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("a toml block in it");
    let config = flashgate::Config::from_toml(toml, "README.md", &[])
        .unwrap_or_else(|e| panic!("the README's minimal config: {e}"));
    assert_eq!(config.sales.len(), 1);
}

/// The suffixes after `{}:` in `format!("{}:suffix…", …)` calls of `code`: the key names.
fn key_suffixes(code: &str) -> BTreeSet<String> {
    code.split("format!(\"{}:")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect::<String>()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// The Redis keys are described once, in docs/contract.md's "Store layout" table, and that
/// table names every key of a sale the code builds, and no other.
#[test]
fn the_store_key_table_is_the_codes() {
    let read = |p: &str| std::fs::read_to_string(Path::new(ROOT).join(p)).expect(p);
    let contract = read("docs/contract.md");
    let table = contract
        .split("## Store layout")
        .nth(1)
        .expect("a Store layout section");
    let documented: BTreeSet<String> = table
        .lines()
        .filter_map(|l| l.strip_prefix("| `{prefix}:{<sku>}:"))
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect()
        })
        .collect();
    let built = key_suffixes(&read("src/store/redis/keys.rs"));
    assert!(built.len() >= 10, "the key names were not read: {built:?}");
    assert_eq!(
        documented, built,
        "docs/contract.md's key table and src/store/redis/keys.rs disagree"
    );
    for key in [
        "{prefix}:layout",
        "{prefix}:{#instances}:expiry",
        "{prefix}:{#instances}:address",
        "{prefix}:{#sales}:book",
        "{prefix}:{#sales}:revision",
    ] {
        assert!(
            table.contains(&format!("| `{key}` |")),
            "{key} is not in the table"
        );
    }
    // The key table is written once: no other document or source file repeats it.
    for other in ["README.md", "docs/stores.md", "src/store/redis/mod.rs"] {
        assert!(
            !read(other).contains("{prefix}:{sku}:stock` |")
                && !read(other).contains("{prefix}:{<sku>}:stock` |"),
            "{other} repeats the key table"
        );
    }
}
