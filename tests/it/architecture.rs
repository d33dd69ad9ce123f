//! The architecture as ARCHITECTURE.md states it, checked against the source tree: every path
//! in the code map exists, no source file or function outgrows what a newcomer can read, the
//! top-level modules form no cycle, and the pure core (`plan`, `model`) does no IO.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Most lines of non-test code in one source file.
const MAX_FILE_LINES: usize = 700;
/// Most lines in one function.
const MAX_FUNCTION_LINES: usize = 100;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`, as (path relative to the root, contents).
fn sources(dir: &str) -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut paths = Vec::new();
    walk(&root().join(dir), &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let relative = path.strip_prefix(root()).unwrap().display().to_string();
            (relative, std::fs::read_to_string(&path).unwrap())
        })
        .collect()
}

/// The lines of `text` before its inline `#[cfg(test)] mod tests { ... }`, if any; a file that
/// is only tests (`tests.rs`) counts as none.
fn non_test_lines(path: &str, text: &str) -> Vec<String> {
    if path.ends_with("/tests.rs") {
        return Vec::new();
    }
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .windows(2)
        .position(|pair| pair[0].starts_with("#[cfg(test)]") && pair[1].starts_with("mod tests {"))
        .unwrap_or(lines.len());
    lines[..end].iter().map(|l| l.to_string()).collect()
}

/// The code without `//` comments (doc comments included), so prose naming a module is no
/// dependency.
fn without_comments(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_path_in_the_code_map_exists() {
    let architecture = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let map = architecture
        .split("## Code map")
        .nth(1)
        .expect("ARCHITECTURE.md has a code map")
        .split("\n## ")
        .next()
        .unwrap();
    let mut checked = 0;
    for row in map.lines().filter(|l| l.starts_with("| `")) {
        let first_cell = row.split('|').nth(1).unwrap();
        for path in first_cell.split('`').skip(1).step_by(2) {
            assert!(
                root().join(path).exists(),
                "the code map names {path}, which does not exist"
            );
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} paths in the code map");
    // And the other way round: every source file is under a path the map names.
    let named: Vec<String> = map
        .lines()
        .filter(|l| l.starts_with("| `"))
        .flat_map(|row| {
            let cell = row.split('|').nth(1).unwrap().to_string();
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    for (path, _) in sources("src") {
        assert!(
            named
                .iter()
                .any(|n| path == *n || (n.ends_with('/') && path.starts_with(n.as_str()))),
            "{path} is not in ARCHITECTURE.md's code map"
        );
    }
}

#[test]
fn no_source_file_or_function_outgrows_a_reading() {
    for (path, text) in sources("src") {
        let lines = non_test_lines(&path, &text);
        assert!(
            lines.len() <= MAX_FILE_LINES,
            "{path} has {} lines of non-test code; the limit is {MAX_FILE_LINES}",
            lines.len()
        );
        // A function starts at a line `fn name(` with a body and ends at the first line that
        // closes its indentation.
        for (start, line) in lines.iter().enumerate() {
            let trimmed = line.trim_start();
            let indent = line.len() - trimmed.len();
            let is_fn = ["fn ", "pub fn ", "async fn ", "pub async fn "]
                .iter()
                .chain(&["pub(super) fn ", "pub(super) async fn ", "pub(crate) fn "])
                .any(|prefix| trimmed.starts_with(prefix));
            // A declaration without a body (a trait's) ends with `;` before any `{`.
            let header_end = lines[start..]
                .iter()
                .find(|l| l.trim_end().ends_with('{') || l.trim_end().ends_with(';'));
            if !is_fn || header_end.is_none_or(|l| l.trim_end().ends_with(';')) {
                continue;
            }
            let close = format!("{}}}", " ".repeat(indent));
            let Some(length) = lines[start + 1..]
                .iter()
                .position(|l| l.trim_end() == close)
            else {
                continue;
            };
            assert!(
                length < MAX_FUNCTION_LINES,
                "{path}:{}: a function of {length} lines; the limit is {MAX_FUNCTION_LINES}",
                start + 1
            );
        }
    }
}

#[test]
fn top_level_modules_form_no_cycle_and_the_pure_core_does_no_io() {
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut core_io = Vec::new();
    for (path, text) in sources("src") {
        let relative = path.trim_start_matches("src/");
        let module = relative
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_string();
        if ["lib", "main", "admin_cli"].contains(&module.as_str()) {
            continue;
        }
        let code = without_comments(&non_test_lines(&path, &text).join("\n"));
        let used = deps.entry(module.clone()).or_default();
        for part in code.split("crate::").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != module {
                used.insert(name);
            }
        }
        if module == "plan" || module == "model" {
            for io in [
                "tokio", "sqlx", "aws_", "std::fs", "std::net", "reqwest", "hyper",
            ] {
                if code.contains(io) {
                    core_io.push(format!("{path} uses {io}"));
                }
            }
        }
    }
    assert!(core_io.is_empty(), "the pure core does IO: {core_io:?}");
    assert_eq!(
        deps["model"],
        BTreeSet::new(),
        "model depends on nothing else"
    );
    assert_eq!(
        deps["plan"],
        BTreeSet::from(["model".to_string()]),
        "plan depends on model only"
    );
    // Depth-first search for a cycle.
    fn visit(
        module: &str,
        deps: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(module) {
            return;
        }
        if let Some(at) = path.iter().position(|m| m == module) {
            panic!("module cycle: {} -> {module}", path[at..].join(" -> "));
        }
        path.push(module.to_string());
        for next in deps.get(module).into_iter().flatten() {
            visit(next, deps, path, done);
        }
        path.pop();
        done.insert(module.to_string());
    }
    let mut done = BTreeSet::new();
    for module in deps.keys() {
        visit(module, &deps, &mut Vec::new(), &mut done);
    }
    assert!(done.len() >= 10, "only {} modules found", done.len());
}

/// Every `spotpool_*` series the alert rules and the Grafana dashboard use is one the daemon
/// exports (a histogram's `_bucket`, `_sum` and `_count` included): a renamed metric must not
/// leave a rule silent or a panel empty.
#[test]
fn alerts_and_dashboards_name_only_metrics_the_daemon_exports() {
    let exported: std::collections::BTreeSet<String> = sources("src")
        .iter()
        .flat_map(|(_, text)| metric_names(text, "\"spotpool_"))
        .collect();
    assert!(exported.contains("spotpool_leader"), "{exported:?}");
    let mut files = Vec::new();
    for dir in ["deploy/prometheus", "deploy/grafana"] {
        for entry in std::fs::read_dir(root().join(dir)).expect(dir) {
            files.push(entry.unwrap().path());
        }
    }
    assert!(files.len() >= 2, "{files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for name in metric_names(&text, "spotpool_") {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|base| exported.contains(*base))
                .unwrap_or(&name);
            assert!(
                exported.contains(base),
                "{} uses {name}, which the daemon does not export",
                file.display()
            );
        }
    }
}

/// The `spotpool_…` names in `text` after each `prefix` (which may start with a quote).
fn metric_names(text: &str, prefix: &str) -> Vec<String> {
    let skip = prefix.len() - "spotpool_".len();
    text.match_indices(prefix)
        .filter(|(at, _)| {
            // A whole name: not the tail of a longer identifier.
            !text[..*at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(|(at, _)| {
            let rest = &text[at + skip..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            rest[..end].to_string()
        })
        .filter(|name| name.len() > "spotpool_".len())
        .collect()
}
