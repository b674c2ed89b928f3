//! Property-based fuzzing of the config file parser and its checks (moved
//! here from `tests/fuzz_parsers.rs` when the root package became a binary:
//! `Config` is crate-private). `PROPTEST_CASES=N` raises the case count.

use proptest::prelude::*;

use logbook_base::proptest_support::cases;

use super::{Config, EMBEDDED_DEFAULT};

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn config_text_never_panics(text in any::<String>()) {
        if let Ok(config) = Config::parse(&text) {
            let _ = config.validate();
        }
    }

    /// The shipped config with one line's value replaced: the parser and
    /// the checks answer, and never panic.
    #[test]
    fn config_values_never_panic(
        line in any::<prop::sample::Index>(),
        value in prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<String>().prop_map(|s| format!("{s:?}")),
            Just("[]".to_string()),
            Just("true".to_string()),
            Just("1e400".to_string()),
            Just("-1".to_string()),
            Just("\"0.0.0.0:1\"".to_string()),
        ],
    ) {
        let lines: Vec<&str> = EMBEDDED_DEFAULT.lines().collect();
        let assignments: Vec<usize> = (0..lines.len())
            .filter(|&i| !lines[i].starts_with('#') && lines[i].contains(" = "))
            .collect();
        let target = assignments[line.index(assignments.len())];
        let mut changed: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        let key = lines[target].split(" = ").next().unwrap_or_default();
        changed[target] = format!("{key} = {value}");
        if let Ok(config) = Config::parse(&changed.join("\n")) {
            let _ = config.validate();
        }
    }
}
