//! Being witnessed by outside C2SP witnesses (`[[witnesses]]`), not peers:
//! the witnesses are tests/outside_witness/witness.py, written from
//! c2sp.org/tlog-witness in Python, so each request, consistency proof and
//! cosignature crosses between two implementations. One witness is
//! honest; the other dates its cosignature lines a second after what it
//! signed, and none of its lines may ever be kept.

mod federation_common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use federation_common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(40);

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/outside_witness/witness.py")
}

/// One outside witness process, killed on drop.
struct OutsideWitness {
    name: String,
    port: u16,
    seed: String,
    vkey: String,
    child: Option<Child>,
}

impl OutsideWitness {
    /// A witness's identity; it serves only once [`OutsideWitness::serve`]
    /// is called, since it must be told the log's key.
    fn new(name: &str, seed_byte: u8) -> OutsideWitness {
        let seed = format!("{seed_byte:02x}").repeat(32);
        let out = Command::new("python3")
            .arg(script())
            .args(["vkey", &seed, name])
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        OutsideWitness {
            name: name.into(),
            port: free_port(),
            seed,
            vkey: String::from_utf8(out.stdout).unwrap().trim().to_string(),
            child: None,
        }
    }

    /// Its `[[witnesses]]` entry in a logbook config.
    fn config(&self) -> String {
        format!(
            "[[witnesses]]\nurl = \"http://127.0.0.1:{}/w\"\nvkey = \"{}\"\n",
            self.port, self.vkey
        )
    }

    fn serve(&mut self, log_vkey: &str, mode: &str) {
        let mut child = Command::new("python3")
            .arg(script())
            .args(["serve", &self.port.to_string(), &self.seed, &self.name])
            .args([log_vkey, mode])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the witness did not start");
        self.child = Some(child);
    }

    async fn state(&self) -> Value {
        reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/state", self.port))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for OutsideWitness {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn lines_by<'a>(note: &'a str, witness: &OutsideWitness) -> Vec<&'a str> {
    let prefix = format!("— {} ", witness.name);
    note.lines().filter(|l| l.starts_with(&prefix)).collect()
}

/// Waits for a heads checkpoint above `above` that `witness` cosigned.
async fn cosigned_above(node: &Node, witness: &OutsideWitness, above: u64) -> String {
    wait_for(
        "a heads checkpoint the outside witness cosigned",
        WAIT,
        || async {
            let note = heads_checkpoint(node).await;
            (checkpoint_size(&note) > above && !lines_by(&note, witness).is_empty()).then_some(note)
        },
    )
    .await
}

/// The status entry of the witness named `name` (`witness:<vkey name>`).
async fn witness_status(node: &Node, name: &str) -> Value {
    let (ok, v) = node.admin_json(&["status"]).await;
    assert!(ok, "{v}");
    v["witnessing"]["witnesses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == format!("witness:{name}"))
        .cloned()
        .unwrap_or_else(|| panic!("no witness {name} in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_witnesses_cosign_check_our_proofs_and_a_forged_line_is_never_kept() {
    let mut honest = OutsideWitness::new("witness.example/honest", 0x11);
    let mut tamper = OutsideWitness::new("witness.example/tamper", 0x22);
    let fast = "interval_secs = 1\nretry_initial_ms = 200";
    let a = Node::start(
        "alpha",
        free_port(),
        fast,
        &format!("{}{}", honest.config(), tamper.config()),
    );
    let (code, keys) = a.get("/api/v1/log/keys").await;
    assert_eq!(code, 200, "{keys}");
    let log_vkey = keys["current"]["vkey"].as_str().unwrap();
    honest.serve(log_vkey, "honest");
    tamper.serve(log_vkey, "tamper");

    // First cosignature: from size 0, no proof.
    let p1 = "0192f3a4-5b6c-7d8e-9f00-000000000001";
    append_steps(&a, p1, 3).await;
    let first = cosigned_above(&a, &honest, 0).await;
    // Growth: the witness checks our consistency proof from the size it
    // cosigned, with its own RFC 9162 code.
    append_steps(&a, "0192f3a4-5b6c-7d8e-9f00-000000000002", 2).await;
    let note = cosigned_above(&a, &honest, checkpoint_size(&first)).await;
    let state = honest.state().await;
    assert!(state["proofs_checked"].as_u64().unwrap() >= 1, "{state}");
    assert_eq!(state["refusals"], json!({}), "{state}");
    // A heads pass may have grown the log again since `note` was read.
    assert!(state["size"].as_u64().unwrap() >= checkpoint_size(&note));
    assert_eq!(lines_by(&note, &honest).len(), 1, "{note}");

    // The tampering witness answered, and was not believed.
    let tampered = wait_for("the tampered cosignature refused", WAIT, || async {
        let s = witness_status(&a, &tamper.name).await;
        let error = s["error"].as_str().unwrap_or("").to_string();
        error.contains("cosignature").then_some(s)
    })
    .await;
    assert!(tamper.state().await["requests"].as_u64().unwrap() >= 1);
    assert_eq!(tampered["size"], 0, "{tampered}");
    assert_eq!(tampered["refused"], Value::Null, "{tampered}");
    let now = heads_checkpoint(&a).await;
    assert!(lines_by(&now, &tamper).is_empty(), "{now}");
    let good = witness_status(&a, &honest.name).await;
    assert_eq!(good["error"], Value::Null, "{good}");
    assert!(good["size"].as_u64().unwrap() >= checkpoint_size(&note));

    // A plan's bundle verifies offline with the outside witness's key, at
    // quorum 1 and not 2, and never with the tampering witness's key.
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("p1.ndjson");
    let bundle = dir.path().join("p1.bundle.json");
    std::fs::write(&export, a.admin_text(&["export", p1]).await).unwrap();
    let r = a
        .http
        .get(a.url(&format!("/api/plans/{p1}/checkpoint?witnessed=1")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.unwrap();
    std::fs::write(&bundle, &body).unwrap();
    let verify = |witness: &str, quorum: &str| {
        Command::new(env!("CARGO_BIN_EXE_logbook"))
            .args(["verify", "--export"])
            .arg(&export)
            .arg("--bundle")
            .arg(&bundle)
            .args(["--log-key", log_vkey, "--witness", witness])
            .args(["--quorum", quorum])
            .output()
            .unwrap()
    };
    let out = verify(&honest.vkey, "1");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(verify(&honest.vkey, "2").status.code(), Some(1));
    assert_eq!(verify(&tamper.vkey, "1").status.code(), Some(1));
}
