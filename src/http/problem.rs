//! RFC 9457 problem details: the one shape of every error response.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

pub(crate) const CONTENT_TYPE: &str = "application/problem+json";

/// An error answer: `type` is `urn:logbook:problem:<kind>`, `title` is fixed
/// per kind, `detail` says what exactly went wrong. Extra members (such as
/// the current head on a seq conflict) sit beside them.
#[derive(Debug, Clone)]
pub(crate) struct Problem {
    pub(crate) status: StatusCode,
    pub(crate) kind: &'static str,
    pub(crate) title: &'static str,
    pub(crate) detail: String,
    pub(crate) extra: Map<String, Value>,
}

impl Problem {
    pub(crate) fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Problem {
        Problem {
            status,
            kind,
            title,
            detail: detail.into(),
            extra: Map::new(),
        }
    }

    pub(crate) fn with(mut self, key: &str, value: impl Into<Value>) -> Problem {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    pub(crate) fn bad_request(
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, kind, title, detail)
    }

    pub(crate) fn unprocessable(
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Problem {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, kind, title, detail)
    }

    pub(crate) fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub(crate) fn internal(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            detail,
        )
    }

    pub(crate) fn unavailable(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            detail,
        )
    }

    pub(crate) fn body(&self) -> Value {
        let mut body = json!({
            "type": format!("urn:logbook:problem:{}", self.kind),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Value::Object(map) = &mut body {
            map.extend(self.extra.clone());
        }
        body
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body().to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if matches!(
            self.status,
            StatusCode::PAYLOAD_TOO_LARGE
                | StatusCode::REQUEST_TIMEOUT
                | StatusCode::NOT_IMPLEMENTED
        ) {
            // The body was refused unread (or its framing is not trusted);
            // say so rather than let the client reuse a connection the
            // server is about to drop.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status == StatusCode::INSUFFICIENT_STORAGE {
            // The writer retries the disk every few seconds at most.
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}

impl From<logbook_journal::store::StoreError> for Problem {
    fn from(e: logbook_journal::store::StoreError) -> Problem {
        use logbook_journal::store::Fault;
        match e.fault() {
            // Nothing was written; the writer logs the fault and recovers.
            Fault::Full => Problem::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient-storage",
                "Insufficient storage",
                e.to_string(),
            ),
            Fault::Io | Fault::Unavailable => Problem::unavailable(e.to_string()),
            Fault::Other => {
                tracing::error!(error = %e, "storage error");
                Problem::internal(e.to_string())
            }
        }
    }
}
