//! The docs' shell blocks work when pasted (issue 12): every ```sh block of
//! README.md and docs/operations.md is run by bash against the real binary,
//! on free loopback ports (the docs' ports are rewritten) in a temp dir laid
//! out like a checkout. A block that cannot run here says why in a
//! `<!-- readme-test: skip — REASON -->` line above it; any other block that
//! fails, hangs or lacks an `expect`ed output fails this test.
//! Every `logbook …` command that the docs or the `--help` texts name must
//! also parse (`--help` exits 0).

mod readme;

use readme::markdown::{logbook_commands, shell_blocks};
use readme::session::Session;
use readme::{every_help, help, read_doc, repo, run_blocks};

const DOCS: [&str; 2] = ["README.md", "docs/operations.md"];

#[test]
fn readme_blocks_work_when_pasted() {
    let text = read_doc("README.md");
    let blocks = shell_blocks(&text).unwrap_or_else(|e| panic!("README.md: {e}"));
    assert!(blocks.len() >= 5, "README.md has its shell blocks");
    let mut session = Session::new(repo(), &[&text]);
    run_blocks("README.md", &blocks, &mut session);
}

/// operations.md describes a host where the daemon already runs: its blocks
/// run against one started here, with `PLAN` naming a plan that has events.
#[test]
fn operations_blocks_work_when_pasted() {
    let text = read_doc("docs/operations.md");
    let blocks = shell_blocks(&text).unwrap_or_else(|e| panic!("docs/operations.md: {e}"));
    let mut session = Session::new(repo(), &[&text]);
    let plan = "0192f3a4-5b6c-7d8e-9f00-aabbccddeeff";
    let setup = shell_blocks(&format!(
        "<!-- readme-test: background -->\n```sh\nlogbook serve  # 127.0.0.1:7411\n```\n\
         ```sh\nfor n in 1 2 3; do\n  curl -s -X POST 127.0.0.1:7411/api/plans/{plan}/events \
         -H 'content-type: application/json' -d \"{{\\\"type\\\":\\\"step.completed\\\",\\\"payload\\\":{{\\\"n\\\":$n}}}}\"\n\
         done\n```\n"
    ))
    .unwrap();
    run_blocks("(operations.md setup)", &setup, &mut session);
    session.set_env("PLAN", plan);
    run_blocks("docs/operations.md", &blocks, &mut session);
}

#[test]
fn every_logbook_command_in_the_docs_and_help_texts_parses() {
    let mut named: Vec<(String, Vec<String>)> = Vec::new();
    for doc in DOCS {
        named.extend(
            logbook_commands(&read_doc(doc))
                .into_iter()
                .map(|c| (doc.to_owned(), c)),
        );
    }
    let helps = every_help();
    assert!(
        helps.len() >= 20,
        "the help walk finds the subcommands ({})",
        helps.len()
    );
    for (words, text) in &helps {
        let place = format!("`logbook {} --help`", words.join(" "));
        named.extend(
            logbook_commands(text)
                .into_iter()
                .map(|c| (place.clone(), c)),
        );
    }
    assert!(
        named.len() >= 20,
        "the docs name logbook's commands ({})",
        named.len()
    );
    let failures: Vec<String> = named
        .iter()
        .filter_map(|(place, words)| help(words).err().map(|e| format!("{place}: {e}")))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The extraction itself: markers bind to the block below them, list-item
/// blocks lose their indentation, and a stray marker is an error.
#[test]
fn blocks_and_markers_are_read_as_documented() {
    let text = "Intro `logbook admin status` and `logbook\nverify --export F`.\n\n\
        <!-- readme-test: skip — needs root -->\n```sh\nsudo true\n```\n\n\
        - item:\n\n  <!-- readme-test: expect ok -->\n  ```bash\n  echo ok\n    indented\n  ```\n\n\
        ```toml\nx = 1\n```\n\n\
        ```console\n$ logbook admin plans list --json\nplan 1\n```\n";
    let blocks = shell_blocks(text).unwrap();
    assert_eq!(blocks.len(), 3, "{blocks:?}");
    assert_eq!(blocks[0].markers.skip.as_deref(), Some("needs root"));
    assert_eq!(blocks[1].script, "echo ok\n  indented");
    assert_eq!(blocks[1].markers.expect, ["ok"]);
    assert_eq!(blocks[2].script, "logbook admin plans list --json");
    let commands = logbook_commands(text);
    for expected in [
        &["admin", "status"][..],
        &["verify"],
        &["admin", "plans", "list"],
    ] {
        assert!(
            commands.iter().any(|c| c == expected),
            "{expected:?} in {commands:?}"
        );
    }

    for bad in [
        "<!-- readme-test: skip -->\n```sh\ntrue\n```\n",
        "<!-- readme-test: expect x -->\nprose\n```sh\ntrue\n```\n",
        "<!-- readme-test: sometimes -->\n```sh\ntrue\n```\n",
        "<!-- readme-test: background -->\n```json\n{}\n```\n",
        "```sh\nnever closed\n",
    ] {
        assert!(shell_blocks(bad).is_err(), "refused: {bad:?}");
    }
}

/// A block that fails, or whose output lacks what a marker expects, fails
/// the run; so does an HTTP error, which plain `curl -s` would hide.
#[test]
fn a_block_that_fails_when_pasted_fails_the_test() {
    let text = "<!-- readme-test: background -->\n```sh\nlogbook serve  # 127.0.0.1:7411\n```\n";
    let mut session = Session::new(repo(), &[text]);
    run_blocks("(daemon)", &shell_blocks(text).unwrap(), &mut session);
    for bad in [
        "```sh\nfalse\n```\n",
        "<!-- readme-test: expect bye -->\n```sh\necho hi\n```\n",
        "```sh\ncurl -s localhost:7411/api/no-such-route\n```\n",
        "```sh\ncurl -N 'localhost:7411/api/events/stream?types=step.>'\n```\n",
    ] {
        let blocks = shell_blocks(bad).unwrap();
        let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_blocks("(bad)", &blocks, &mut session)
        }));
        assert!(failed.is_err(), "this block must fail the test: {bad:?}");
    }
    let good = "<!-- readme-test: expect \"chain_valid\":true -->\n```sh\n\
        curl -s -X POST localhost:7411/api/plans/0192f3a4-5b6c-7d8e-9f00-112233445566/events \
        -H 'content-type: application/json' -d '{\"type\":\"step.completed\"}' >/dev/null\n\
        curl -s 'localhost:7411/api/plans/0192f3a4-5b6c-7d8e-9f00-112233445566/events?verify=1'\n```\n";
    run_blocks("(good)", &shell_blocks(good).unwrap(), &mut session);
    let follows = "<!-- readme-test: follow -->\n<!-- readme-test: expect following -->\n\
        ```sh\necho following; sleep 600\n```\n";
    run_blocks("(follow)", &shell_blocks(follows).unwrap(), &mut session);
}
