//! Council and benchmark through the front door: every member asked, one
//! OpenAI answer assembled (whole or as one stream).

use super::*;

/// Council or benchmark: every member asked, the answer assembled.
pub(super) async fn group(
    state: &AppState,
    req: ChatRequest,
    mode: Mode,
    grant: Option<&Grant>,
) -> Result<Response, OpenAiError> {
    let mut body = req.body.clone();
    body.remove("stream");
    body.remove("stream_options");
    let outcome = pipeline::run_group(
        state,
        GroupQuery {
            mode,
            query: &req.query,
            body,
            max_tokens: req.max_tokens,
            grant,
        },
    )
    .await?;
    let g = &outcome.answer;
    let headers = crate::router_headers::group(g);
    let answers: Vec<Choice> = match mode {
        Mode::Council => g
            .answer
            .iter()
            .map(|a| Choice {
                text: a.clone(),
                model: g.model.clone().unwrap_or_else(|| "council".into()),
                finish_reason: "stop".into(),
                tool_calls: None,
            })
            .collect(),
        // Each member's answer as it came: its finish reason, and its tool
        // calls (with no text, content null as OpenAI sends it).
        _ => g
            .members
            .iter()
            .filter(|m| m.ok())
            .map(|m| Choice {
                text: m.answer.clone().unwrap_or_default(),
                model: m
                    .model
                    .clone()
                    .unwrap_or_else(|| m.tier.internal_name().to_owned()),
                finish_reason: m.finish_reason.clone().unwrap_or_else(|| "stop".into()),
                tool_calls: m.tool_calls.clone(),
            })
            .collect(),
    };
    if answers.is_empty() {
        let why: Vec<String> = g
            .members
            .iter()
            .chain(&g.moderator)
            .filter_map(|m| m.error.as_ref().map(|e| format!("{}: {e}", m.tier)))
            .collect();
        let what = match mode {
            Mode::Council => "the council wrote no final answer",
            _ => "no tier of the benchmark answered",
        };
        let err = OpenAiError {
            status: StatusCode::BAD_GATEWAY,
            message: format!("{what} ({})", why.join("; ")),
            kind: "upstream_error",
            param: None,
            code: Some("upstream_failed"),
            headers: Box::default(),
        };
        return Ok(err.with_headers(headers).into_response());
    }
    let model = answers
        .iter()
        .map(|c| c.model.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let id = format!("chatcmpl-{}", g.group_id);
    let created = chrono::Utc::now().timestamp();
    let usage = outcome.usage.map(|u| {
        json!({"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
               "total_tokens": u.prompt_tokens + u.completion_tokens})
    });
    let extension = serde_json::to_value(g).expect("a group answer serialises");
    let mut response = if req.stream {
        let mut events: Vec<Event> = Vec::new();
        for (i, c) in answers.iter().enumerate() {
            let chunk = |delta: Value, finish: Value| {
                json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                       "choices": [{"index": i, "delta": delta, "finish_reason": finish}]})
            };
            events.push(sse_data(&chunk(
                json!({"role": "assistant", "content": ""}),
                Value::Null,
            )));
            if !c.text.is_empty() {
                events.push(sse_data(&chunk(json!({"content": c.text}), Value::Null)));
            }
            if let Some(calls) = c.indexed_tool_calls() {
                events.push(sse_data(&chunk(json!({"tool_calls": calls}), Value::Null)));
            }
            events.push(sse_data(&chunk(json!({}), json!(c.finish_reason))));
        }
        if req.include_usage {
            let mut last = json!({"id": id, "object": "chat.completion.chunk", "created": created,
                                  "model": model, "choices": [], "usage": usage});
            last[mode.name()] = extension;
            events.push(sse_data(&last));
        }
        events.push(Event::default().data(DONE));
        sse_response(futures_util::stream::iter(events.into_iter().map(Ok)))
    } else {
        let choices: Vec<Value> = answers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut message = json!({"role": "assistant", "content": c.text});
                if let Some(calls) = &c.tool_calls {
                    message["tool_calls"] =
                        serde_json::from_str(calls.get()).unwrap_or(Value::Null);
                    if c.text.is_empty() {
                        message["content"] = Value::Null;
                    }
                }
                json!({"index": i, "message": message, "finish_reason": c.finish_reason})
            })
            .collect();
        let mut completion = json!({"id": id, "object": "chat.completion", "created": created,
                                    "model": model, "choices": choices});
        if let Some(usage) = usage {
            completion["usage"] = usage;
        }
        completion[mode.name()] = extension;
        axum::Json(completion).into_response()
    };
    response.headers_mut().extend(headers);
    Ok(response)
}

/// One choice of a group's answer.
pub(super) struct Choice {
    pub(super) text: String,
    pub(super) model: String,
    pub(super) finish_reason: String,
    pub(super) tool_calls: Option<shared::api::RawJson>,
}

impl Choice {
    /// The tool calls as a streamed delta carries them: each with its
    /// `index`.
    pub(super) fn indexed_tool_calls(&self) -> Option<Value> {
        let calls: Value = serde_json::from_str(self.tool_calls.as_ref()?.get()).ok()?;
        let Value::Array(calls) = calls else {
            return None;
        };
        Some(Value::Array(
            calls
                .into_iter()
                .enumerate()
                .map(|(i, mut c)| {
                    if let Value::Object(o) = &mut c {
                        o.entry("index").or_insert(json!(i));
                    }
                    c
                })
                .collect(),
        ))
    }
}
