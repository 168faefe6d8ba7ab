//! A chat completion request, parsed and checked as OpenAI would, and its
//! schema for the OpenAPI document.

use super::*;

/// A chat completion request, checked.
#[derive(Debug)]
pub struct ChatRequest {
    /// How it is routed.
    pub route: Route,
    /// The text recorded: the last user message's text, or when it has
    /// none but other parts (an image only), their kinds (`[image_url]`).
    pub query: String,
    /// The text scored: the last user message's text parts.
    pub text: String,
    /// `stream: true`.
    pub stream: bool,
    /// `stream_options.include_usage: true`.
    pub include_usage: bool,
    /// `max_tokens` (or `max_completion_tokens`).
    pub max_tokens: Option<u64>,
    /// The body to send upstream, as the client sent it.
    pub body: Body,
}

/// Checks a request body the way OpenAI does: 400 with the `param` at
/// fault, 404 for a model this router does not serve.
pub fn parse_request(bytes: &[u8]) -> Result<ChatRequest, OpenAiError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| OpenAiError::invalid("body", format!("the body is not valid JSON: {e}")))?;
    let Value::Object(body) = value else {
        return Err(OpenAiError::invalid(
            "body",
            "the body must be a JSON object",
        ));
    };
    let model = match body.get("model") {
        Some(Value::String(m)) => m.as_str(),
        None | Some(Value::Null) => {
            return Err(OpenAiError::invalid(
                "model",
                "you must provide a model parameter",
            ));
        }
        Some(_) => return Err(OpenAiError::invalid("model", "model: must be a string")),
    };
    let route = Route::of(model).ok_or_else(|| unknown_model(model))?;
    let Some(Value::Array(messages)) = body.get("messages") else {
        return Err(OpenAiError::invalid(
            "messages",
            "messages: must be an array of messages",
        ));
    };
    if messages.is_empty() {
        return Err(OpenAiError::invalid(
            "messages",
            "messages: must hold at least one message",
        ));
    }
    let mut query = None;
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).ok_or_else(|| {
            OpenAiError::invalid(
                &format!("messages[{i}].role"),
                format!("messages[{i}]: must be an object with a string role"),
            )
        })?;
        if role == "user" {
            query = Some(message_text(&m["content"], i)?);
        }
    }
    let (text, others) = query.ok_or_else(|| {
        OpenAiError::invalid(
            "messages",
            "messages: must hold a user message (its text is what is routed)",
        )
    })?;
    // A message of images (or audio, files) and no visible text is routed
    // on its text (none: the lowest score) and recorded by its parts'
    // kinds; the parts go to the upstream as sent.
    let query = match shared::validate_query(&text) {
        Err(_) if !others.is_empty() => format!("[{}]", others.join(", ")),
        _ => text.clone(),
    };
    shared::validate_query(&query).map_err(|e| {
        OpenAiError::invalid(
            "messages",
            format!(
                "messages: the last user message's text {}",
                e.to_string().trim_start_matches("query: ")
            ),
        )
    })?;
    let mut max_tokens = None;
    for key in ["max_tokens", "max_completion_tokens"] {
        match body.get(key) {
            None | Some(Value::Null) => {}
            Some(v) => match whole(v) {
                Some(n) if (1..=MAX_TOKENS).contains(&n) => max_tokens = Some(n),
                _ => {
                    return Err(OpenAiError::invalid(
                        key,
                        format!("{key}: must be an integer in 1..={MAX_TOKENS}, got {v}"),
                    ));
                }
            },
        }
    }
    let flag = |v: Option<&Value>, name: &str| match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(OpenAiError::invalid(
            name,
            format!("{name}: must be a boolean"),
        )),
    };
    let stream = flag(body.get("stream"), "stream")?;
    let include_usage = match body.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => flag(o.get("include_usage"), "stream_options.include_usage")?,
        Some(_) => {
            return Err(OpenAiError::invalid(
                "stream_options",
                "stream_options: must be an object",
            ));
        }
    };
    Ok(ChatRequest {
        route,
        query,
        text,
        stream,
        include_usage,
        max_tokens,
        body,
    })
}

/// The text of message `i`'s content: a string, or the `text` of its
/// `text` parts joined by newlines (other parts, images say, carry none);
/// and the types of its other parts, each once. Each part must be an
/// object with a string `type`, and a text part a string `text`, as OpenAI
/// requires.
pub(super) fn message_text(
    content: &Value,
    i: usize,
) -> Result<(String, Vec<String>), OpenAiError> {
    match content {
        Value::String(s) => Ok((s.clone(), Vec::new())),
        Value::Array(parts) => {
            let mut texts = Vec::new();
            let mut others: Vec<String> = Vec::new();
            for (j, part) in parts.iter().enumerate() {
                let at = format!("messages[{i}].content[{j}]");
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => match part.get("text").and_then(Value::as_str) {
                        Some(text) => texts.push(text),
                        None => {
                            return Err(OpenAiError::invalid(
                                &format!("{at}.text"),
                                format!("{at}.text: a text part needs its text as a string"),
                            ));
                        }
                    },
                    Some(kind) => {
                        // A type is the client's text: kept short and plain.
                        let kind = crate::upstream::clean(kind);
                        let kind: String = kind.chars().take(32).collect();
                        if !kind.is_empty() && !others.contains(&kind) {
                            others.push(kind);
                        }
                    }
                    None => {
                        return Err(OpenAiError::invalid(
                            &format!("{at}.type"),
                            format!("{at}: must be an object with a string type"),
                        ));
                    }
                }
            }
            Ok((texts.join("\n"), others))
        }
        _ => Err(OpenAiError::invalid(
            &format!("messages[{i}].content"),
            format!("messages[{i}].content: must be text or an array of content parts"),
        )),
    }
}

/// The request body's schema for the OpenAPI document: every rule
/// [`parse_request`] enforces but one, which a schema cannot say (the
/// last user message's text must show a visible character within its
/// first 100 characters).
pub fn request_schema() -> Value {
    let nullable = |t: &str| json!({"type": [t, "null"]});
    let tokens = json!({"type": ["integer", "null"], "minimum": 1, "maximum": MAX_TOKENS});
    let part = json!({"anyOf": [
        {"type": "object", "required": ["type", "text"],
         "properties": {"type": {"const": "text"}, "text": {"type": "string"}}},
        {"type": "object", "required": ["type"],
         "properties": {"type": {"type": "string", "not": {"const": "text"}}}},
    ]});
    let user = json!({"type": "object", "required": ["role", "content"], "properties": {
        "role": {"const": "user"},
        "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": part}]},
    }});
    let other = json!({"type": "object", "required": ["role"],
                       "properties": {"role": {"type": "string", "not": {"const": "user"}}}});
    json!({
        "type": "object",
        "description": "An OpenAI chat completion request. `model` chooses the routing. The last user message's text (its first 100 characters) must show a visible character: that text is what is routed and recorded. Other fields go to the upstream as sent.",
        "required": ["model", "messages"],
        "properties": {
            "model": {"type": "string", "enum": MODELS},
            "messages": {
                "type": "array", "minItems": 1, "items": {"anyOf": [user, other]},
                "contains": {"type": "object", "required": ["role"], "properties": {"role": {"const": "user"}}},
            },
            "max_tokens": tokens,
            "max_completion_tokens": tokens,
            "stream": nullable("boolean"),
            "stream_options": {"type": ["object", "null"],
                               "properties": {"include_usage": nullable("boolean")}},
        },
        "example": {"model": "auto", "messages": [{"role": "user", "content": "What is Python?"}]},
    })
}

/// A JSON integer (or a whole float) that fits.
pub(super) fn whole(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|x| x.fract() == 0.0 && (0.0..9_007_199_254_740_992.0).contains(x))
            .map(|x| x as u64)
    })
}
