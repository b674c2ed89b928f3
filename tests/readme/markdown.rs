//! The shell blocks of a Markdown file and the `readme-test` markers above
//! them.
//!
//! A block is a fenced code block whose info string is `sh`, `bash`,
//! `shell` or `console` (in a `console` block only the `$ ` lines are run).
//! Other fences (a synopsis, JSON, TOML) are not commands and are ignored.
//! Markers are HTML comments on the lines right above the fence (blank lines
//! between are fine, other text is not):
//!
//! - `<!-- readme-test: skip — REASON -->`: not run; the test prints REASON.
//! - `<!-- readme-test: background -->`: left running, like a second
//!   terminal, for the blocks below it; the test waits until every loopback
//!   port the block names answers `/readyz`.
//! - `<!-- readme-test: follow -->`: runs until Ctrl-C (`logbook admin
//!   tail`); the test interrupts it after a few seconds, and it passes if it
//!   was still running (or had exited 0).
//! - `<!-- readme-test: expect TEXT -->` (repeatable): the block's standard
//!   output must contain TEXT.
//! - `<!-- readme-test: needs CMD -->`: skipped, saying so, where CMD is not
//!   installed.

use std::fmt;

const MARKER_OPEN: &str = "<!-- readme-test:";
const SHELL_LANGS: [&str; 4] = ["sh", "bash", "shell", "console"];

/// What the markers above a block ask for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Markers {
    pub skip: Option<String>,
    pub background: bool,
    pub follow: bool,
    pub expect: Vec<String>,
    pub needs: Vec<String>,
}

/// One shell block, with the line of its opening fence (from 1).
#[derive(Debug, Clone)]
pub struct Block {
    pub line: usize,
    pub script: String,
    pub markers: Markers,
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.script.lines().find(|l| !l.trim().is_empty());
        write!(f, "line {}: {}", self.line, first.unwrap_or("").trim())
    }
}

/// The shell blocks of `text`, or what is wrong with a marker or a fence.
pub fn shell_blocks(text: &str) -> Result<Vec<Block>, String> {
    let mut blocks = Vec::new();
    let mut pending: Option<(usize, Markers)> = None;
    let mut lines = text.lines().enumerate();
    while let Some((index, raw)) = lines.next() {
        let number = index + 1;
        let line = raw.trim_start();
        if let Some(rest) = line.strip_prefix(MARKER_OPEN) {
            let (_, markers) = pending.get_or_insert_with(|| (number, Markers::default()));
            parse_marker(rest, markers).map_err(|e| format!("line {number}: {e}"))?;
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let Some(fence) = fence_of(line) else {
            if let Some((at, _)) = pending {
                return Err(format!(
                    "line {at}: a readme-test marker must be right above a code block"
                ));
            }
            continue;
        };
        let indent = raw.len() - line.len();
        let lang = line[fence.len()..].split_whitespace().next().unwrap_or("");
        let mut body = Vec::new();
        let mut closed = false;
        for (_, inner) in lines.by_ref() {
            if inner.trim_start().starts_with(fence) && inner.trim() == fence {
                closed = true;
                break;
            }
            // Strip the fence's own indentation (a block inside a list item).
            let cut = inner.len() - inner.trim_start().len();
            body.push(&inner[cut.min(indent)..]);
        }
        if !closed {
            return Err(format!("line {number}: the code block is never closed"));
        }
        let markers = pending.take().map(|(_, m)| m).unwrap_or_default();
        if !SHELL_LANGS.contains(&lang) {
            if markers != Markers::default() {
                return Err(format!(
                    "line {number}: a readme-test marker above a `{lang}` block, which is not run"
                ));
            }
            continue;
        }
        let script = if lang == "console" {
            body.iter()
                .filter_map(|l| l.strip_prefix("$ "))
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            body.join("\n")
        };
        blocks.push(Block {
            line: number,
            script,
            markers,
        });
    }
    Ok(blocks)
}

/// The fence (```` ``` ```` or `~~~`, possibly longer) a line opens with.
fn fence_of(line: &str) -> Option<&str> {
    for ch in ['`', '~'] {
        let n = line.chars().take_while(|&c| c == ch).count();
        if n >= 3 {
            return Some(&line[..n]);
        }
    }
    None
}

fn parse_marker(rest: &str, markers: &mut Markers) -> Result<(), String> {
    let body = rest
        .trim()
        .strip_suffix("-->")
        .ok_or("a readme-test marker must end on its line with -->")?
        .trim();
    let (word, arg) = body.split_once(char::is_whitespace).unwrap_or((body, ""));
    let arg = arg.trim();
    match word {
        "skip" => {
            let reason = arg.trim_start_matches(['—', '-', ':', ' ']).trim();
            if reason.is_empty() {
                return Err("`skip` needs a reason: <!-- readme-test: skip — why -->".into());
            }
            markers.skip = Some(reason.to_owned());
        }
        "background" => markers.background = true,
        "follow" => markers.follow = true,
        "expect" if !arg.is_empty() => markers.expect.push(arg.to_owned()),
        "needs" if !arg.is_empty() => markers.needs.push(arg.to_owned()),
        _ => {
            return Err(format!(
                "unknown readme-test marker {body:?} (skip — REASON, background, follow, expect TEXT, needs CMD)"
            ));
        }
    }
    Ok(())
}

/// Every `logbook` command line named in `text`, in code spans and code
/// blocks: the subcommand words after `logbook`, skipping the admin client's
/// global flags, up to the first argument (`logbook admin peers allow`).
pub fn logbook_commands(text: &str) -> Vec<Vec<String>> {
    let mut found: Vec<Vec<String>> = Vec::new();
    for code in code_text(text) {
        let words: Vec<&str> = code.split_whitespace().collect();
        for (i, word) in words.iter().enumerate() {
            let word = word.trim_start_matches(['(', '`']);
            if word != "logbook" && !word.ends_with("/logbook") {
                continue;
            }
            let mut command = Vec::new();
            let mut rest = words[i + 1..].iter();
            while let Some(&next) = rest.next() {
                match next {
                    "--socket" | "--config" => {
                        rest.next();
                    }
                    "--json" => {}
                    _ if is_subcommand_word(next) => command.push(next.to_owned()),
                    _ => break,
                }
            }
            if !found.contains(&command) {
                found.push(command);
            }
        }
    }
    found
}

fn is_subcommand_word(word: &str) -> bool {
    let mut chars = word.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The text of every code block and inline code span (a span may cross a
/// line break, so prose is split on backticks a paragraph at a time).
fn code_text(text: &str) -> Vec<String> {
    fn spans(prose: &mut String, out: &mut Vec<String>) {
        out.extend(prose.split('`').skip(1).step_by(2).map(str::to_owned));
        prose.clear();
    }
    let mut out = Vec::new();
    let mut prose = String::new();
    let mut open: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        match (&open, fence_of(trimmed)) {
            (None, Some(fence)) => {
                spans(&mut prose, &mut out);
                open = Some(fence.to_owned());
            }
            (Some(fence), _) if trimmed.trim() == fence => open = None,
            (Some(_), _) => out.push(line.to_owned()),
            (None, None) if trimmed.is_empty() => spans(&mut prose, &mut out),
            (None, None) => {
                prose.push_str(line);
                prose.push(' ');
            }
        }
    }
    spans(&mut prose, &mut out);
    out
}
