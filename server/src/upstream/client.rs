//! One HTTP exchange with one upstream: the request sent, the answer or the
//! stream opened, and what went wrong said safely.

use super::*;

impl Upstreams {
    /// `body` with `member`'s `--model` (or without a model: the router's
    /// own model names mean nothing upstream), written as it is sent.
    pub(super) fn with_model<'a>(
        &self,
        member: &'a Member,
        body: &'a serde_json::Map<String, Value>,
    ) -> WithModel<'a> {
        WithModel {
            body,
            model: member.spec.model.as_deref(),
        }
    }

    /// Sends `request` (with `member`'s key) and turns anything but a 2xx
    /// into the failure it is, with the upstream's own message.
    pub(super) async fn send(
        &self,
        member: &Member,
        mut request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Failure> {
        let fail = |outcome, status: Option<u16>, message: String| Failure {
            upstream: member.spec.name.clone(),
            outcome,
            status,
            message: self.mask(member, &message),
            retry_after: None,
            attempts: 1,
        };
        if let Some(auth) = &member.auth {
            request = request.header(axum::http::header::AUTHORIZATION, auth.clone());
        }
        let response = request.send().await.map_err(|e| {
            if e.is_timeout() {
                fail(Outcome::Timeout, None, self.timed_out())
            } else {
                // Without the URL: it may carry credentials.
                fail(
                    Outcome::ConnectError,
                    None,
                    format!("unreachable: {}", e.without_url()),
                )
            }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let code = status.as_u16();
        let retry_after = response
            .headers()
            .get(axum::http::header::RETRY_AFTER)
            .cloned();
        let outcome = match code {
            429 => Outcome::Http429,
            // No chat completions endpoint there: a wrong URL is a failing
            // upstream (its circuit counts it), not a refused request.
            404 | 405 => Outcome::BadReply,
            400..=499 => Outcome::Http4xx,
            500..=599 => Outcome::Http5xx,
            _ => Outcome::BadReply,
        };
        let text = read_capped(response, MAX_ERROR_BODY)
            .await
            .unwrap_or_default();
        let said = error_message(&text);
        let hint = match code {
            404 | 405 => " (no chat completions endpoint at this URL: check --upstream)",
            _ => "",
        };
        let message = if said.is_empty() {
            format!("answered HTTP {code}{hint}")
        } else {
            format!("answered HTTP {code}{hint}: {said}")
        };
        Err(Failure {
            retry_after: retry_after.filter(|_| code == 429),
            ..fail(outcome, Some(code), message)
        })
    }

    /// Opens one stream on one upstream: its 2xx response within the
    /// timeout.
    pub(super) async fn open(
        &self,
        member: &Member,
        body: &serde_json::Map<String, Value>,
    ) -> Result<reqwest::Response, Failure> {
        let request = self
            .stream_client
            .post(member.url.clone())
            .json(&self.with_model(member, body));
        match tokio::time::timeout(self.settings.timeout, self.send(member, request)).await {
            Ok(result) => result,
            Err(_) => Err(Failure {
                upstream: member.spec.name.clone(),
                outcome: Outcome::Timeout,
                status: None,
                message: self.timed_out(),
                retry_after: None,
                attempts: 1,
            }),
        }
    }

    /// One call to one upstream, bounded by the timeout: the answer and the
    /// reply's bytes.
    pub(super) async fn call(
        &self,
        member: &Member,
        body: &serde_json::Map<String, Value>,
    ) -> Result<(Answer, Vec<u8>), Failure> {
        let fail = |outcome, message: String| Failure {
            upstream: member.spec.name.clone(),
            outcome,
            status: None,
            message: self.mask(member, &message),
            retry_after: None,
            attempts: 1,
        };
        // One clock for connect + send + body: the client has none of its
        // own.
        let call = async {
            let request = self
                .client
                .post(member.url.clone())
                .json(&self.with_model(member, body));
            let response = self.send(member, request).await?;
            let bytes = read_body(response, self.settings.max_body)
                .await
                .map_err(|e| match e {
                    BodyError::TooLarge => fail(
                        Outcome::TooLarge,
                        format!(
                            "sent a reply larger than {} bytes (--max-upstream-body)",
                            self.settings.max_body
                        ),
                    ),
                    BodyError::Timeout => fail(Outcome::Timeout, self.timed_out()),
                    BodyError::Broken(why) => fail(
                        Outcome::BadReply,
                        format!("connection broke mid-answer: {why}"),
                    ),
                })?;
            parse_completion(&bytes)
                .map(|answer| {
                    let answer = Answer {
                        upstream: member.spec.name.clone(),
                        ..answer
                    };
                    (answer, bytes)
                })
                .map_err(|why| fail(Outcome::BadReply, why))
        };
        match tokio::time::timeout(self.settings.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(fail(Outcome::Timeout, self.timed_out())),
        }
    }

    pub(super) fn timed_out(&self) -> String {
        format!(
            "gave no full answer within {:?} (--upstream-timeout)",
            self.settings.timeout
        )
    }

    /// The message with the upstream's key masked, should it echo it.
    pub(super) fn mask(&self, member: &Member, message: &str) -> String {
        match &member.spec.key {
            Some(key) if key.len() >= 4 => message.replace(key.as_str(), "***"),
            _ => message.to_owned(),
        }
    }
}

/// A request body with the upstream's model in place of the client's,
/// serialised without copying the body.
pub(super) struct WithModel<'a> {
    body: &'a serde_json::Map<String, Value>,
    model: Option<&'a str>,
}

impl serde::Serialize for WithModel<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        // In the map's own (sorted) order, the model where it belongs.
        let mut model = self.model;
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in self.body.iter().filter(|(k, _)| *k != "model") {
            if key.as_str() > "model"
                && let Some(m) = model.take()
            {
                map.serialize_entry("model", m)?;
            }
            map.serialize_entry(key, value)?;
        }
        if let Some(m) = model {
            map.serialize_entry("model", m)?;
        }
        map.end()
    }
}
