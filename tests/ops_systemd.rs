//! `systemd/logbook.service` passes `systemd-analyze verify` where the tool
//! exists. The unit names the installed binary, which a build machine lacks,
//! so the check runs on a copy pointing at the binary under test.

use std::process::Command;

#[test]
fn unit_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed; skipping");
        return;
    }
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/logbook.service"
    ))
    .unwrap();
    for required in [
        "Type=notify",
        "StateDirectory=logbook",
        "RuntimeDirectory=logbook",
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "SystemCallFilter=@system-service",
        "\nCapabilityBoundingSet=\n",
        "Restart=on-failure",
        "LimitNOFILE=",
        "/etc/logbook/config.toml",
        "/run/logbook/admin.sock",
    ] {
        assert!(unit.contains(required), "the unit lacks {required:?}");
    }
    assert!(unit.contains("ExecStart=/usr/local/bin/logbook "));
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("logbook.service");
    std::fs::write(
        &copy,
        unit.replace(
            "/usr/local/bin/logbook ",
            &format!("{} ", env!("CARGO_BIN_EXE_logbook")),
        ),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed: {stderr}"
    );
    assert!(
        !stderr.contains("logbook.service:"),
        "warnings about the unit: {stderr}"
    );
}
