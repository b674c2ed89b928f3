//! The binary crate's modules form the layers that ARCHITECTURE.md lists:
//! a module may use modules below its own layer, never one above it or a
//! sibling in its layer. Cargo already refuses cycles between the crates in
//! `crates/`; this does the same for the modules inside `src/`, reading the
//! layering from the document so that the two cannot drift apart.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const BEGIN: &str = "<!-- layers:begin -->";
const END: &str = "<!-- layers:end -->";

/// The layers, top first; each line of the block names one layer's modules
/// (a line may hold several, separated by spaces; `#` starts a comment).
fn layers(architecture: &str) -> Vec<Vec<String>> {
    let start = architecture
        .find(BEGIN)
        .expect("ARCHITECTURE.md has a layers block")
        + BEGIN.len();
    let end = architecture[start..]
        .find(END)
        .expect("the layers block ends")
        + start;
    architecture[start..end]
        .lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|line| !line.is_empty() && !line.starts_with("```"))
        .map(|line| line.split_whitespace().map(str::to_string).collect())
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules of the crate that `code` names: `crate::x…` paths
/// and the names inside `use crate::{x, y…}`. Comments are skipped.
fn referenced(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or("");
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                // The first name of each item at depth 0 of the group.
                let (mut depth, mut item_start) = (0, true);
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => item_start = true,
                        c if item_start && !c.is_whitespace() => {
                            found.insert(ident(&group[i..]));
                            item_start = false;
                        }
                        _ => {}
                    }
                }
                found.remove("");
            } else {
                let name = ident(after);
                if !name.is_empty() {
                    found.insert(name);
                }
            }
            rest = after;
        }
    }
    found
}

#[test]
fn modules_use_only_the_layers_below_them() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let architecture = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let layers = layers(&architecture);
    let layer_of = |module: &str| layers.iter().position(|l| l.iter().any(|m| m == module));

    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut problems = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(root.join("src")).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let module = first.to_string_lossy().trim_end_matches(".rs").to_string();
        let Some(own) = layer_of(&module) else {
            problems.push(format!(
                "src/{} is in module `{module}`, which the layers block of ARCHITECTURE.md does not list",
                relative.display()
            ));
            continue;
        };
        let code = std::fs::read_to_string(file).unwrap();
        for used in referenced(&code) {
            if used == module {
                continue;
            }
            match layer_of(&used) {
                Some(layer) if layer > own => {}
                Some(layer) => problems.push(format!(
                    "src/{} (`{module}`) uses `crate::{used}`, which is {} it",
                    relative.display(),
                    if layer == own { "beside" } else { "above" }
                )),
                // Not a module of ours: a macro path or a crate-root item.
                None => {}
            }
        }
    }
    assert!(
        problems.is_empty(),
        "layering broken:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_scanner_sees_paths_and_groups_but_not_comments() {
    let code = "use crate::http::Problem;\nuse crate::{admin, config::{Config, server}};\n// crate::server\nlet x = crate::app::App::new(); // crate::reload\n";
    let found: Vec<_> = referenced(code).into_iter().collect();
    assert_eq!(found, ["admin", "app", "config", "http"]);
}
