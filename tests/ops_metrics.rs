//! `GET /metrics` is valid Prometheus/OpenMetrics text with the documented
//! metrics, and `GET /readyz` answers ready once the store is open.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Command;

use common::{Daemon, DaemonOpts, event_body, fill, new_plan, run};

/// A strict parser of the text exposition format: every sample belongs to a
/// declared family of a known type, names and labels are well-formed, values
/// are numbers, histogram buckets are cumulative and end in +Inf = _count,
/// and the text ends with `# EOF`. Returns sample name+labels → value.
fn parse_exposition(text: &str) -> HashMap<String, f64> {
    let name_ok = |n: &str| {
        let mut chars = n.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helped: HashSet<String> = HashSet::new();
    let mut samples = HashMap::new();
    let mut eof = false;
    for line in text.lines() {
        assert!(!eof, "content after # EOF: {line}");
        if line == "# EOF" {
            eof = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let family = parts.next().expect("a metric name after # TYPE/HELP/UNIT");
            assert!(name_ok(family), "bad family name {family:?}");
            match kind {
                "TYPE" => {
                    let t = parts.next().expect("a type");
                    assert!(
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "summary",
                            "info",
                            "stateset",
                            "unknown"
                        ]
                        .contains(&t),
                        "unknown type {t}"
                    );
                    assert!(
                        types.insert(family.to_string(), t.to_string()).is_none(),
                        "{family} declared twice"
                    );
                }
                "HELP" => {
                    helped.insert(family.to_string());
                }
                "UNIT" => {}
                other => panic!("unknown comment kind {other:?}"),
            }
            continue;
        }
        assert!(!line.is_empty(), "blank line in exposition");
        let (series, value) = line.rsplit_once(' ').expect("sample without a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').expect("unclosed labels");
                for pair in labels.split(',').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').expect("label without =");
                    assert!(name_ok(k), "bad label name {k:?}");
                    assert!(
                        v.starts_with('"') && v.ends_with('"') && v.len() >= 2,
                        "unquoted label value {v:?}"
                    );
                }
                name
            }
            None => series,
        };
        assert!(name_ok(name), "bad sample name {name:?}");
        let family = ["_total", "_bucket", "_count", "_sum", "_created"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| types.contains_key(*f)))
            .unwrap_or(name);
        let t = types
            .get(family)
            .unwrap_or_else(|| panic!("sample {name} has no # TYPE"));
        if t == "counter" {
            assert!(
                name.ends_with("_total") || name.ends_with("_created"),
                "counter sample {name} must end in _total"
            );
        }
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "duplicate series {series}"
        );
    }
    assert!(eof, "missing # EOF");
    for family in types.keys() {
        assert!(helped.contains(family), "{family} has no # HELP");
    }
    // Histograms: cumulative buckets ending in +Inf equal to _count.
    for (family, t) in &types {
        if t != "histogram" {
            continue;
        }
        let mut buckets: Vec<(f64, f64)> = samples
            .iter()
            .filter_map(|(series, v)| {
                let le = series
                    .strip_prefix(&format!("{family}_bucket{{le=\""))?
                    .strip_suffix("\"}")?;
                let le: f64 = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, *v))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
        assert!(!buckets.is_empty(), "{family} has no buckets");
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "{family} buckets not cumulative"
        );
        let last = buckets.last().unwrap();
        assert!(last.0.is_infinite(), "{family} lacks le=\"+Inf\"");
        assert_eq!(
            Some(&last.1),
            samples.get(&format!("{family}_count")),
            "{family} +Inf != _count"
        );
    }
    samples
}

#[tokio::test]
async fn metrics_scrape_parses_and_counts() {
    let daemon = Daemon::start(DaemonOpts::default());
    let resp = daemon.get_json("/readyz").await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let p = new_plan().to_string();
    fill(&daemon, &p, 5).await;
    assert_eq!(
        daemon
            .append(&p, event_body("no.such_type", 0))
            .await
            .status,
        422
    );
    daemon.admin_ok(&["verify", &p]).await;

    let resp = daemon.get_json("/metrics").await;
    assert_eq!(resp.status, 200);
    let text = resp.text;
    let samples = parse_exposition(&text);
    let get = |k: &str| {
        *samples
            .get(k)
            .unwrap_or_else(|| panic!("missing {k} in:\n{text}"))
    };
    assert_eq!(get("logbook_appends_total{outcome=\"created\"}"), 5.0);
    assert_eq!(get("logbook_appends_total{outcome=\"rejected\"}"), 1.0);
    assert_eq!(get("logbook_append_duration_seconds_count"), 6.0);
    assert!(get("logbook_commit_batch_size_count") >= 1.0);
    assert_eq!(
        get("logbook_commit_batch_size_sum"),
        5.0,
        "five appends were committed"
    );
    assert!(get("logbook_commit_duration_seconds_count") >= 1.0);
    assert_eq!(get("logbook_verify_runs_total"), 1.0);
    assert_eq!(get("logbook_verify_failures_total"), 0.0);
    assert_eq!(get("logbook_sse_clients"), 0.0);
    assert!(samples.contains_key("logbook_sse_catch_ups_total"));
    assert_eq!(get("logbook_sse_followed_plans"), 0.0);
    assert!(samples.contains_key("logbook_writer_queue_depth"));
    // Series with labels known at start exist at zero before their first
    // event: an alert on increase() over a missing series never fires.
    for zero in [
        "logbook_appends_total{outcome=\"replayed\"}",
        "logbook_appends_total{outcome=\"error\"}",
        "logbook_http_connections_refused_total{limit=\"max_connections\"}",
        "logbook_http_connections_refused_total{limit=\"max_connections_per_ip\"}",
        "logbook_checkpoint_signing_refused_total{log=\"plan\"}",
        "logbook_checkpoint_signing_refused_total{log=\"heads\"}",
    ] {
        assert_eq!(get(zero), 0.0, "{zero}");
    }

    // The admin socket serves the same exposition.
    if let Ok(out) = Command::new("curl").arg("--version").output()
        && out.status.success()
    {
        let mut command = Command::new("curl");
        command
            .args(["-sS", "--max-time", "10", "--unix-socket"])
            .arg(daemon.admin_socket())
            .arg("http://logbook/metrics");
        parse_exposition(&run(command).await.stdout);
    }
}

#[test]
fn the_parser_rejects_malformed_text() {
    let bad = [
        "logbook_x 1\n# EOF\n",                          // no TYPE
        "# HELP a x\n# TYPE a gauge\na one\n# EOF\n",    // bad value
        "# HELP a x\n# TYPE a gauge\na 1\n",             // no EOF
        "# HELP a x\n# TYPE a counter\na 1\n# EOF\n",    // counter without _total
        "# HELP a x\n# TYPE a gauge\na{l=x} 1\n# EOF\n", // unquoted label
    ];
    for text in bad {
        assert!(
            std::panic::catch_unwind(|| parse_exposition(text)).is_err(),
            "accepted: {text:?}"
        );
    }
    parse_exposition("# HELP a x\n# TYPE a gauge\na{l=\"x\"} 1\n# EOF\n");
}
