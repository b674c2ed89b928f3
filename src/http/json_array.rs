//! A JSON object with one array member, written as it is read:
//! `{…,"NAME":[item,…],TAIL…}`.
//!
//! A listing whose items can each be as large as a request body (events,
//! federation messages) would hold a whole page in memory if it were built
//! first. Here the items come in runs, each bounded by one storage page (a
//! count and `READ_PAGE_BYTES` of stored records), and each run is encoded
//! and sent before the next is read: a slow reader holds one run, and a
//! reader that leaves stops the reading.
//!
//! The first run is read before the answer starts, so that an error there
//! is still a problem. A later error cuts the body: the client sees broken
//! JSON, never a shorter valid listing, whose length could mean "the end".

use std::future::Future;

use axum::body::{Body, Bytes};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use serde::Serialize;

use super::problem::Problem;

/// The items of one run, encoded as they are pushed.
pub(crate) struct Items {
    out: Vec<u8>,
    /// Whether no item was pushed yet, in this run or an earlier one.
    first: bool,
}

impl Items {
    /// Appends one item (after a comma unless it is the array's first).
    pub(crate) fn push(&mut self, item: &impl Serialize) -> Result<(), Problem> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        serde_json::to_writer(&mut self.out, item)
            .map_err(|e| Problem::internal(format!("encoding a listed item: {e}")))
    }

    /// Closes the array and the object, with the members of `tail` (an
    /// object, perhaps empty) after the array.
    fn finish(&mut self, tail: &impl Serialize) -> Result<(), Problem> {
        self.out.push(b']');
        let mut tail = serde_json::to_vec(tail)
            .map_err(|e| Problem::internal(format!("encoding a listing's end: {e}")))?;
        assert_eq!(tail.first(), Some(&b'{'), "a listing's tail is an object");
        if tail != b"{}" {
            // Its `{` becomes the `,` that follows the array.
            tail[0] = b',';
            self.out.extend_from_slice(&tail);
        } else {
            self.out.push(b'}');
        }
        Ok(())
    }
}

/// Where a listing's items come from.
pub(crate) trait Runs: Send + 'static {
    /// The members after the array, as a serializable object.
    type Tail: Serialize;

    /// Reads the next run and pushes its items. Says whether the array ends
    /// with them; a run may push nothing and not end it (a run of items a
    /// filter left out).
    fn next_run(&mut self, items: &mut Items)
    -> impl Future<Output = Result<bool, Problem>> + Send;

    /// The members after the array, once it ended.
    fn tail(&mut self) -> Self::Tail;

    /// What the log says when a later run fails and the body is cut.
    fn what(&self) -> String;
}

/// Answers 200 with `head` (the object's start, up to the array's `[`),
/// the items of every run, and the tail.
pub(crate) async fn respond(head: Vec<u8>, mut runs: impl Runs) -> Result<Response, Problem> {
    let mut items = Items {
        out: head,
        first: true,
    };
    if runs.next_run(&mut items).await? {
        items.finish(&runs.tail())?;
        return Ok(json_response(Body::from(items.out)));
    }
    let first = std::mem::take(&mut items.out);
    let rest = futures_util::stream::unfold(Some((runs, items.first)), |state| async move {
        let (mut runs, first) = state?;
        let mut items = Items {
            out: Vec::new(),
            first,
        };
        let ended = match runs.next_run(&mut items).await {
            Ok(true) => items.finish(&runs.tail()).map(|()| true),
            other => other,
        };
        match ended {
            Ok(true) => Some((Ok(Bytes::from(items.out)), None)),
            Ok(false) => Some((Ok(Bytes::from(items.out)), Some((runs, items.first)))),
            Err(problem) => {
                let what = runs.what();
                tracing::error!(error = %problem.detail, "{what}: reading failed after the answer started; the body is cut");
                Some((Err(std::io::Error::other(problem.detail)), None))
            }
        }
    });
    let first = futures_util::stream::once(async move { Ok(Bytes::from(first)) });
    Ok(json_response(Body::from_stream(
        futures_util::StreamExt::chain(first, rest),
    )))
}

/// A whole listing already in hand (`items` finished with `tail`).
pub(crate) fn whole(
    head: Vec<u8>,
    push: impl FnOnce(&mut Items) -> Result<(), Problem>,
    tail: &impl Serialize,
) -> Result<Response, Problem> {
    let mut items = Items {
        out: head,
        first: true,
    };
    push(&mut items)?;
    items.finish(tail)?;
    Ok(json_response(Body::from(items.out)))
}

fn json_response(body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `{"NAME":[`
pub(crate) fn head(name: &str) -> Vec<u8> {
    let mut head = b"{".to_vec();
    serde_json::to_writer(&mut head, name).expect("a string always serializes");
    head.extend_from_slice(b":[");
    head
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// Runs of the given sizes, numbered from 0.
    struct Counting {
        runs: Vec<usize>,
        next: usize,
    }

    impl Runs for Counting {
        type Tail = Value;

        async fn next_run(&mut self, items: &mut Items) -> Result<bool, Problem> {
            let n = self.runs.remove(0);
            for _ in 0..n {
                items.push(&self.next)?;
                self.next += 1;
            }
            Ok(self.runs.is_empty())
        }

        fn tail(&mut self) -> Value {
            if self.next == 0 {
                json!({})
            } else {
                json!({"count": self.next})
            }
        }

        fn what(&self) -> String {
            "a test listing".into()
        }
    }

    async fn body(runs: Vec<usize>) -> Value {
        let response = respond(head("items"), Counting { runs, next: 0 })
            .await
            .unwrap();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn runs_make_one_valid_object_whatever_their_sizes() {
        assert_eq!(body(vec![0]).await, json!({"items": []}));
        assert_eq!(body(vec![0, 0, 0]).await, json!({"items": []}));
        assert_eq!(body(vec![2]).await, json!({"items": [0, 1], "count": 2}));
        assert_eq!(
            body(vec![0, 1, 0, 3, 0]).await,
            json!({"items": [0, 1, 2, 3], "count": 4})
        );
    }
}
