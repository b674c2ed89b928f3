use super::*;

#[test]
fn embedded_default_is_valid_and_safe() {
    let c = Config::embedded_default();
    c.validate().unwrap();
    assert!(c.server.listen.ip().is_loopback());
    assert_eq!(c.sse.keepalive_secs, 15);
    assert_eq!(c.limits.max_body_bytes, 1 << 20);
    assert!(c.auth.tokens.is_empty());
}

#[test]
fn every_key_in_the_shipped_file_has_a_comment() {
    let mut previous = "";
    for line in EMBEDDED_DEFAULT.lines() {
        let trimmed = line.trim();
        if !trimmed.is_empty() && !trimmed.starts_with('#') && !trimmed.starts_with('[') {
            assert!(
                previous.starts_with('#'),
                "key without a comment: {trimmed}"
            );
        }
        if !trimmed.is_empty() {
            previous = trimmed;
        }
    }
}

#[test]
fn public_listen_without_tokens_is_refused() {
    let mut c = Config::embedded_default();
    c.server.listen = "0.0.0.0:7411".parse().unwrap();
    assert!(c.validate().unwrap_err().contains("without authentication"));
    c.auth.tokens.push(TokenConfig {
        name: "t".into(),
        sha256: "ab".repeat(32),
        scopes: vec![Scope::Read],
    });
    c.validate().unwrap();
}

#[test]
fn payload_retention_is_off_by_default_and_checked() {
    let c = Config::embedded_default();
    assert_eq!(c.retention.payload_max_age_ms(), None);
    let with = |days: &str| {
        let text = EMBEDDED_DEFAULT.replace(
            "payload_max_age_days = 0\n",
            &format!("payload_max_age_days = {days}\n"),
        );
        Config::parse(&text).and_then(|c| c.validate().map(|()| c))
    };
    let c = with("30").unwrap();
    assert_eq!(c.retention.payload_max_age_ms(), Some(30 * 86_400_000));
    assert_eq!(
        with("0.5").unwrap().retention.payload_max_age_ms(),
        Some(43_200_000)
    );
    for bad in ["-1", "nan", "inf", "36501"] {
        assert!(
            with(bad).unwrap_err().contains("payload_max_age_days"),
            "{bad}"
        );
    }
}

/// The shipped file is the full documented default: it parses to
/// exactly the built-in defaults and names every key they have (only
/// the empty lists of tables, shown as commented examples, are absent).
#[test]
fn the_shipped_file_is_exactly_the_built_in_defaults() {
    let shipped = toml::Table::try_from(Config::embedded_default()).unwrap();
    let built_in = toml::Table::try_from(Config::default()).unwrap();
    assert_eq!(shipped, built_in);
    let file: toml::Table = EMBEDDED_DEFAULT.parse().unwrap();
    for (section, value) in &built_in {
        match (value, file.get(section)) {
            (toml::Value::Table(keys), Some(toml::Value::Table(written))) => {
                for (key, v) in keys {
                    let empty_list = v.as_array().is_some_and(|a| a.is_empty());
                    assert!(
                        written.contains_key(key) || empty_list,
                        "{section}.{key} is not in the shipped config.toml"
                    );
                }
            }
            (toml::Value::Array(a), None) if a.is_empty() => {}
            _ => panic!("[{section}] is not in the shipped config.toml"),
        }
    }
}

#[test]
fn a_partial_file_takes_the_defaults_for_the_rest() {
    let c = Config::parse(
        "[[auth.tokens]]\nname = \"ci\"\nsha256 = \"{}\"\nscopes = [\"read\"]\n"
            .replace("{}", &"ab".repeat(32))
            .as_str(),
    )
    .unwrap();
    c.validate().unwrap();
    assert_eq!(c.auth.tokens.len(), 1);
    assert_eq!(c.server.listen, Config::default().server.listen);
    assert_eq!(c.federation.name, "logbook");
    let c = Config::parse("[server]\nlisten = \"localhost:7411\"\n").unwrap();
    assert!(c.server.listen.ip().is_loopback());
    assert_eq!(c.limits.max_json_depth, 32);
    assert!(Config::parse("").is_ok());
}

#[test]
fn a_bad_log_level_is_refused_naming_the_valid_ones() {
    let c = Config::parse("[log]\nlevel = \"inf\"\n").unwrap();
    let err = c.validate().unwrap_err();
    assert!(
        err.starts_with("log.level") && err.contains("trace, debug, info"),
        "{err}"
    );
    let ok = Config::default();
    assert!(ok.check_before_start(|_| None).is_ok());
    let err = ok
        .check_before_start(|n| (n == "RUST_LOG").then(|| "loud".to_string()))
        .unwrap_err();
    assert!(err.contains("$RUST_LOG"), "{err}");
}

#[test]
fn unknown_keys_are_errors() {
    assert!(
        Config::parse("[sse]\nkeepalive = 3\n")
            .unwrap_err()
            .contains("unknown field `keepalive`")
    );
    let text = EMBEDDED_DEFAULT.replace("[sse]", "[sse]\nkeepalive = 3");
    assert!(Config::parse(&text).unwrap_err().contains("keepalive"));
}
#[test]
fn auth_required_is_auto_true_or_false() {
    assert_eq!(Config::embedded_default().auth.required, AuthRequired::Auto);
    let with = |v: &str| {
        Config::parse(&EMBEDDED_DEFAULT.replace("required = \"auto\"", &format!("required = {v}")))
    };
    assert_eq!(with("true").unwrap().auth.required, AuthRequired::Always);
    assert_eq!(with("false").unwrap().auth.required, AuthRequired::Never);
    assert!(with("\"yes\"").unwrap_err().contains("auth.required"));
}

#[test]
fn public_listen_needs_auth_in_force() {
    let mut c = Config::embedded_default();
    c.server.listen = "0.0.0.0:7411".parse().unwrap();
    assert!(c.check_exposure(0, false).is_err());
    c.check_exposure(0, true).unwrap();
    c.check_exposure(1, false).unwrap();
    c.auth.required = AuthRequired::Never;
    assert!(
        c.check_exposure(1, true)
            .unwrap_err()
            .contains("loopback only")
    );
    c.auth.required = AuthRequired::Always;
    c.check_exposure(0, false).unwrap();
}

#[test]
fn the_body_limit_is_bounded() {
    let mut c = Config::embedded_default();
    for bad in [0, (64 << 20) + 1, usize::MAX] {
        c.limits.max_body_bytes = bad;
        let err = c.validate().unwrap_err();
        assert!(err.contains("limits.max_body_bytes"), "{bad}: {err}");
    }
    c.limits.max_body_bytes = 64 << 20;
    c.validate().unwrap();
    // Federation's cap leaves room for the largest event plus its envelope,
    // and no more.
    assert_eq!(
        logbook_federation::config::MAX_INCOMING_BODY_BYTES,
        MAX_BODY_BYTES + logbook_federation::config::INCOMING_EXTRA_BYTES
    );
    // (FederationConfig::validate refuses more, at start and on reload:
    // logbook-federation's config tests.)
}

#[test]
fn the_body_budget_holds_the_largest_body_of_any_route() {
    let mut c = Config::embedded_default();
    assert_eq!(c.limits.max_buffered_body_bytes, 256 << 20);
    c.limits.max_buffered_body_bytes = c.limits.max_body_bytes;
    // The federation intake's default cap is the body limit plus 16 KiB.
    let err = c.validate().unwrap_err();
    assert!(err.contains("limits.max_buffered_body_bytes"), "{err}");
    c.limits.max_buffered_body_bytes = c.federation.incoming_max_body_bytes;
    c.validate().unwrap();
    c.limits.max_body_bytes = 64 << 20;
    let err = c.validate().unwrap_err();
    assert!(err.contains("limits.max_buffered_body_bytes"), "{err}");
}

#[test]
fn the_send_timeout_is_bounded() {
    let mut c = Config::embedded_default();
    for bad in [0, 3601, u64::MAX] {
        c.server.send_timeout_secs = bad;
        let err = c.validate().unwrap_err();
        assert!(err.contains("server.send_timeout_secs"), "{bad}: {err}");
    }
    for good in [1, 60, 3600] {
        c.server.send_timeout_secs = good;
        c.validate().unwrap();
    }
}

#[test]
fn the_origin_prefix_must_make_a_key_name() {
    let mut c = Config::embedded_default();
    assert_eq!(
        c.checkpoints.origin_prefix_for("edge-1"),
        "logbook/edge-1",
        "the shipped default"
    );
    for bad in ["", "a b", "a+b", "logbook/", "a\u{0}b"] {
        c.checkpoints.origin_prefix = bad.into();
        let err = c.validate().unwrap_err();
        assert!(err.contains("checkpoints.origin_prefix"), "{bad:?}: {err}");
    }
    c.checkpoints.origin_prefix = "example.org/logs/{instanceId}".into();
    c.validate().unwrap();
}
