//! Runs the shell blocks of a Markdown file as a reader would paste them
//! (see `markdown` for the `readme-test` markers, `session` for the temp dir,
//! the shims and the ports).

pub mod markdown;
#[path = "../ports/mod.rs"]
mod ports;
pub mod session;

use std::path::Path;

use markdown::Block;
use session::{Session, find_in_path};

/// The repository root (where README.md is).
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn read_doc(name: &str) -> String {
    std::fs::read_to_string(repo().join(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"))
}

/// Runs every block of `doc` in order in `session`; panics listing each
/// block that failed, with its output. Skipped blocks are printed with why.
pub fn run_blocks(doc: &str, blocks: &[Block], session: &mut Session) {
    let mut failures = Vec::new();
    for block in blocks {
        if let Some(reason) = &block.markers.skip {
            println!("{doc} {block}\n    skipped: {reason}");
            continue;
        }
        if let Some(missing) = block
            .markers
            .needs
            .iter()
            .find(|c| find_in_path(c).is_none())
        {
            println!("{doc} {block}\n    skipped: `{missing}` is not installed here");
            continue;
        }
        let started = std::time::Instant::now();
        match session.run(block) {
            Err(e) => failures.push(format!("{doc} {block}\n{e}")),
            Ok(ran) if !ran.status.success() => failures.push(format!(
                "{doc} {block}\nexited with {}\n--- script (before its ports were rewritten)\n{}\n--- stdout\n{}--- stderr\n{}",
                ran.status, block.script, ran.stdout, ran.stderr
            )),
            Ok(ran) => {
                let missing: Vec<_> = block
                    .markers
                    .expect
                    .iter()
                    .filter(|text| !ran.stdout.contains(session.rewrite(text).as_str()))
                    .collect();
                if missing.is_empty() {
                    let how = if block.markers.background { "started" } else { "ran" };
                    println!("{doc} {block}\n    {how} in {:.1?}", started.elapsed());
                } else {
                    failures.push(format!(
                        "{doc} {block}\nits output lacks {missing:?}\n--- stdout\n{}--- stderr\n{}",
                        ran.stdout, ran.stderr
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} block(s) of {doc} fail when pasted (mark a block that cannot run in CI with \
         <!-- readme-test: skip — REASON -->):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// Most subcommands the help walk visits (a loop guard).
const MAX_SUBCOMMANDS: usize = 300;

/// `logbook WORDS --help`: its text, or what went wrong.
pub fn help(words: &[String]) -> Result<String, String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_logbook"))
        .args(words)
        .arg("--help")
        .output()
        .expect("running logbook");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`logbook {} --help` exited with {}: {}",
            words.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The `--help` text of logbook and of every subcommand under it, found by
/// reading each help's `Commands:` list.
pub fn every_help() -> Vec<(Vec<String>, String)> {
    let mut found = Vec::new();
    let mut queue = vec![Vec::new()];
    while let Some(words) = queue.pop() {
        assert!(found.len() < MAX_SUBCOMMANDS, "the help walk loops");
        let text = help(&words).unwrap_or_else(|e| panic!("{e}"));
        for name in subcommands(&text) {
            let mut child = words.clone();
            child.push(name);
            queue.push(child);
        }
        found.push((words, text));
    }
    found
}

/// The names in a clap help's `Commands:` list (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}
