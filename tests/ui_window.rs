//! The plan view's table is bounded (2,000 rows, `MAX_ROWS` in
//! src/ui/plan.js). Paging back past the bound slides the window: the
//! newest rows go, live rows pause, and "Back to the newest events"
//! resumes them. Once, at the bound, the page just added was evicted again
//! at once, so "Older events" did nothing.

#[allow(dead_code)] // the rest of the harness serves ui_browser.rs
mod browser;
mod common;

use browser::{Browser, ROWS, ensure_chromium, free_port, one_browser, rows};
use common::{Daemon, DaemonOpts, new_plan};
use serde_json::{Value, json};

/// Rows the table keeps, and rows per page (src/ui/plan.js).
const MAX_ROWS: u64 = 2000;
const PAGE: u64 = 50;

/// Clicks "Older events" `times` times, each once the last page is in.
const PAGE_BACK: &str = r#"
const [times, done] = [arguments[0], arguments[arguments.length - 1]];
(async () => {
  const count = () => document.querySelectorAll('#events tbody tr').length;
  for (let k = 0; k < times; k++) {
    const before = count();
    document.getElementById('older').click();
    const started = Date.now();
    while (count() === before) {
      if (Date.now() - started > 30000) return done(`stuck at ${before} rows`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  done(count());
})();
"#;

/// The rows shown, as [count, newest seq, oldest seq] (short in a failure).
const SPAN: &str = "const r = [...document.querySelectorAll('#events tbody tr')].map(r => Number(r.dataset.seq)); return [r.length, r[0] ?? 0, r[r.length - 1] ?? 0];";

fn shown(v: &Value) -> (usize, u64, u64) {
    let n = |i: usize| v[i].as_u64().unwrap_or(0);
    (n(0) as usize, n(1), n(2))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_back_past_the_tables_bound_slides_the_window() {
    if !ensure_chromium() {
        return;
    }
    let _one = one_browser().await;
    let port = free_port();
    let daemon = Daemon::start(DaemonOpts::default().listen(&format!("127.0.0.1:{port}")));
    let plan = new_plan();
    let head = MAX_ROWS + 60;
    common::fill(&daemon, plan, head as usize).await;
    let b = Browser::start().await;
    b.client
        .goto(&format!("http://127.0.0.1:{port}/ui/plans/{plan}"))
        .await
        .expect("plan");
    b.wait_for("the newest page", SPAN, |v| {
        shown(v) == (50, head, head - 49)
    })
    .await;

    // Up to the bound: every page back adds its rows.
    let pages = (MAX_ROWS / PAGE - 1) as usize;
    let count = b
        .client
        .execute_async(PAGE_BACK, vec![json!(pages)])
        .await
        .expect("paging back");
    assert_eq!(count, json!(MAX_ROWS));
    let at_bound = b.eval(SPAN).await;
    assert_eq!(shown(&at_bound), (2000, head, head - MAX_ROWS + 1));
    // Nothing to go back to yet: the newest rows are all shown.
    assert_eq!(
        b.eval("return document.getElementById('newer')?.hidden !== false;")
            .await,
        true
    );

    // One page more: the window slides back by a page, and says so.
    b.click("#older").await;
    b.wait_for("the window one page back", SPAN, |v| {
        shown(v) == (2000, head - PAGE, head - MAX_ROWS - PAGE + 1)
    })
    .await;
    let seqs: Vec<u64> = rows(&b.eval(ROWS).await).iter().map(|r| r.0).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] == w[1] + 1),
        "contiguous, newest first"
    );
    assert_eq!(
        b.eval("return document.getElementById('newer').hidden;")
            .await,
        false
    );
    b.wait_for(
        "the verdict names the newer events not shown",
        "return document.getElementById('plan-verdict').textContent;",
        |v| {
            v.as_str()
                .is_some_and(|t| t.contains("newer signed event(s) not shown"))
        },
    )
    .await;

    // Live rows wait while paged back; back to the newest brings them.
    common::fill(&daemon, plan, 1).await;
    b.click("#newer").await;
    b.wait_for("the newest page again", SPAN, |v| {
        shown(v) == (50, head + 1, head + 1 - 49)
    })
    .await;
    assert_eq!(
        b.eval("return document.getElementById('newer').hidden;")
            .await,
        true
    );
    common::fill(&daemon, plan, 1).await;
    b.wait_for("live rows follow again", SPAN, |v| shown(v).1 == head + 2)
        .await;
    b.close().await;
}
