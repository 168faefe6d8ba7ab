//! OpenAI's error object: every error of `/v1` in the shape OpenAI's
//! clients parse, including the router's own plain errors, rewritten.

use super::*;

/// An OpenAI-style error: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct OpenAiError {
    pub(super) status: StatusCode,
    pub(super) message: String,
    pub(super) kind: &'static str,
    pub(super) param: Option<String>,
    pub(super) code: Option<&'static str>,
    /// Boxed: errors travel in `Result`s, and a header map is large.
    pub(super) headers: Box<HeaderMap>,
}

impl OpenAiError {
    /// A 400 about `param`.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        OpenAiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param.to_owned()),
            code: None,
            headers: Box::default(),
        }
    }

    pub(super) fn with_headers(mut self, headers: HeaderMap) -> Self {
        self.headers.extend(headers);
        self
    }

    /// The error object, as a stream's error event carries it too.
    pub(super) fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl From<ApiError> for OpenAiError {
    fn from(err: ApiError) -> Self {
        let message = err.to_string();
        let param = match &err {
            ApiError::Invalid(m) | ApiError::MalformedJson(m) => m
                .split_once(':')
                .map(|(p, _)| p.to_owned())
                .filter(|p| !p.contains(' ')),
            _ => None,
        };
        let (kind, code) = match &err {
            ApiError::MalformedJson(_)
            | ApiError::Invalid(_)
            | ApiError::BadParameter(_)
            | ApiError::PayloadTooLarge { .. }
            | ApiError::UnsupportedMediaType(_) => ("invalid_request_error", None),
            ApiError::Unauthorized => ("invalid_request_error", Some("invalid_api_key")),
            ApiError::CrossSite(_) => ("permission_error", None),
            ApiError::NotFound(_) | ApiError::Missing(_) | ApiError::NoStore => {
                ("not_found_error", None)
            }
            ApiError::MethodNotAllowed(_) => ("invalid_request_error", None),
            ApiError::Busy { .. } => ("rate_limit_error", Some("tier_busy")),
            ApiError::NoUpstream { .. } => ("server_error", Some("no_upstream")),
            ApiError::CircuitOpen { .. } => ("server_error", Some("circuit_open")),
            ApiError::Upstream { .. } => match err.status().as_u16() {
                429 => ("rate_limit_error", Some("upstream_rate_limited")),
                400..=499 => ("invalid_request_error", Some("upstream_refused")),
                _ => ("upstream_error", Some("upstream_failed")),
            },
            ApiError::TooManyStreams(_)
            | ApiError::TooManyExports(_)
            | ApiError::StoreFailing(_) => ("server_error", Some("unavailable")),
            ApiError::Internal(_) => ("server_error", None),
            ApiError::KeyRefused(r) => match r.limit {
                crate::error::Limit::Budget => ("insufficient_quota", Some("budget_exceeded")),
                crate::error::Limit::Requests => ("requests", Some("rate_limit_exceeded")),
                crate::error::Limit::Tokens => ("tokens", Some("rate_limit_exceeded")),
                crate::error::Limit::Mode => ("permission_error", Some("mode_not_allowed")),
                crate::error::Limit::Unavailable => ("server_error", Some("budget_unavailable")),
            },
        };
        // OpenAI answers a body it cannot use with 400, never 422.
        let status = match err.status() {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            other => other,
        };
        // The plain error's headers (Retry-After, WWW-Authenticate, a key's
        // limits) stay.
        let mut headers = HeaderMap::new();
        if let ApiError::KeyRefused(r) = &err {
            headers.extend(r.headers.clone());
        }
        let plain = err.into_response();
        for name in [header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
            if let Some(v) = plain.headers().get(&name) {
                headers.insert(name, v.clone());
            }
        }
        OpenAiError {
            status,
            message,
            kind,
            param,
            code,
            headers: Box::new(headers),
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut response = (self.status, axum::Json(body)).into_response();
        response.headers_mut().extend(*self.headers);
        response
    }
}

/// Under `/v1`, every error is OpenAI's error object, whoever made it (a
/// method not allowed, a body too large, another site's browser, a panic):
/// an answer of ours in the plain `{"error": "..."}` shape is rewritten,
/// its status and headers kept. A layer of its own rather than a
/// `from_fn` middleware: a request that is not an error costs it one look
/// at the path and the status.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorObjects;

impl<S> tower::Layer<S> for ErrorObjects {
    type Service = ErrorObjectsService<S>;

    fn layer(&self, inner: S) -> ErrorObjectsService<S> {
        ErrorObjectsService { inner }
    }
}

/// A service whose `/v1` errors are OpenAI's error objects.
#[derive(Debug, Clone)]
pub struct ErrorObjectsService<S> {
    inner: S,
}

impl<S, B> tower::Service<axum::http::Request<B>> for ErrorObjectsService<S>
where
    S: tower::Service<axum::http::Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ErrorObjectsFuture<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        let under_v1 = path == "/v1" || path.starts_with("/v1/");
        ErrorObjectsFuture {
            inner: self.inner.call(req),
            under_v1,
            rewriting: None,
        }
    }
}

type Rewriting = std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>>;

pin_project_lite::pin_project! {
    /// The answer of [`ErrorObjectsService`]: the inner one, rewritten
    /// when it is an error under `/v1`.
    pub struct ErrorObjectsFuture<F> {
        #[pin]
        inner: F,
        under_v1: bool,
        rewriting: Option<Rewriting>,
    }
}

impl<F, E> std::future::Future for ErrorObjectsFuture<F>
where
    F: std::future::Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        if let Some(rewriting) = this.rewriting {
            return rewriting.as_mut().poll(cx).map(Ok);
        }
        let response = std::task::ready!(this.inner.poll(cx))?;
        let status = response.status();
        if !*this.under_v1 || !(status.is_client_error() || status.is_server_error()) {
            return std::task::Poll::Ready(Ok(response));
        }
        let mut rewriting: Rewriting = Box::pin(as_error_object(response));
        let polled = rewriting.as_mut().poll(cx);
        if polled.is_pending() {
            *this.rewriting = Some(rewriting);
        }
        polled.map(Ok)
    }
}

/// `response`, an error under `/v1`, as OpenAI's error object.
async fn as_error_object(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    // Our own error bodies are small; anything larger is not one of them.
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 10).await else {
        return (parts.status, "").into_response();
    };
    let message = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(o)) if o.get("error").is_some_and(Value::is_object) => {
            return Response::from_parts(parts, HttpBody::from(bytes));
        }
        Ok(Value::Object(o)) if o.get("error").is_some_and(Value::is_string) => {
            o["error"].as_str().unwrap_or_default().to_owned()
        }
        // A framework's plain-text rejection, or nothing at all.
        _ => match crate::upstream::clean(&String::from_utf8_lossy(&bytes)) {
            text if text.is_empty() => parts
                .status
                .canonical_reason()
                .unwrap_or("error")
                .to_owned(),
            text => text,
        },
    };
    let (kind, code) = match parts.status.as_u16() {
        401 => ("invalid_request_error", Some("invalid_api_key")),
        403 => ("permission_error", None),
        404 => ("not_found_error", None),
        429 => ("rate_limit_error", None),
        400..=499 => ("invalid_request_error", None),
        _ => ("server_error", None),
    };
    let error = OpenAiError {
        status: parts.status,
        message,
        kind,
        param: None,
        code,
        headers: Box::default(),
    };
    let body = serde_json::to_vec(&error.body()).expect("a JSON value serialises");
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, HttpBody::from(body))
}

/// The 404 of a model this router does not serve.
pub(super) fn unknown_model(model: &str) -> OpenAiError {
    OpenAiError {
        status: StatusCode::NOT_FOUND,
        message: format!(
            "The model `{}` does not exist; this router serves {}",
            model.chars().take(100).collect::<String>(),
            MODELS.join(", ")
        ),
        kind: "invalid_request_error",
        param: Some("model".into()),
        code: Some("model_not_found"),
        headers: Box::default(),
    }
}

/// The 404 of a `/v1` path that does not exist, OpenAI-style.
pub fn not_found(path: &str) -> Response {
    OpenAiError {
        status: StatusCode::NOT_FOUND,
        message: format!("no endpoint at {path}"),
        kind: "invalid_request_error",
        param: None,
        code: Some("unknown_url"),
        headers: Box::default(),
    }
    .into_response()
}
