//! `logbook admin plans list` over more plans than one run of the daemon's
//! listing (1,000 heads): every plan once, in id order, the answer written
//! as it is read.

mod common;

use common::{Daemon, DaemonOpts};
use futures_util::StreamExt;
use serde_json::json;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_list_spans_several_runs() {
    let daemon = Daemon::start(DaemonOpts::default());
    let mut ids: Vec<Uuid> = (0..1_003u128)
        .map(|i| Uuid::from_u128(0x1000 + i))
        .collect();
    futures_util::stream::iter(&ids)
        .for_each_concurrent(32, |id| {
            let daemon = &daemon;
            async move {
                let body = json!({"type": "step.completed", "payload": {}});
                let resp = daemon.append(id, body).await;
                assert_eq!(resp.status, 201, "{}", resp.text);
            }
        })
        .await;

    let list = daemon.admin_json(&["plans", "list"]).await;
    let listed: Vec<Uuid> = list["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["plan_id"].as_str().unwrap().parse().unwrap())
        .collect();
    ids.sort();
    assert_eq!(listed, ids);
    assert!(
        list["plans"][1002]["head_seq"] == 1,
        "{}",
        list["plans"][1002]
    );

    let table = daemon.admin_ok(&["plans", "list"]).await;
    for id in [ids[0], ids[999], ids[1000], ids[1002]] {
        assert!(table.contains(&id.to_string()), "{id} missing");
    }
}
