//! What an upstream answers, read: a completion, an error's message, a body
//! within its limit; text made safe to show.

use super::*;
use serde_json::value::RawValue;

#[derive(Deserialize)]
pub(super) struct Completion<'a> {
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    object: Option<&'a RawValue>,
    #[serde(default, borrow)]
    created: Option<&'a RawValue>,
    #[serde(default)]
    pub(super) model: Option<String>,
    pub(super) choices: Vec<Choice>,
    #[serde(default)]
    pub(super) usage: Option<WireUsage>,
}

#[derive(Deserialize)]
pub(super) struct Choice {
    #[serde(default)]
    index: Option<serde::de::IgnoredAny>,
    pub(super) message: Message,
    #[serde(default)]
    pub(super) finish_reason: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct Message {
    #[serde(default)]
    role: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    pub(super) content: Option<String>,
    #[serde(default)]
    pub(super) tool_calls: Option<Box<RawValue>>,
    #[serde(default)]
    pub(super) refusal: Option<String>,
    #[serde(default)]
    pub(super) function_call: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
pub(super) struct WireUsage {
    #[serde(default)]
    pub(super) prompt_tokens: Option<u64>,
    #[serde(default)]
    pub(super) completion_tokens: Option<u64>,
}
impl Failure {
    /// Failed before any byte of an answer in a way another try may fix: a
    /// connect error, 429, 502 or 503.
    pub fn retryable(&self) -> bool {
        matches!(self.outcome, Outcome::ConnectError | Outcome::Http429)
            || matches!(self.status, Some(502 | 503))
    }
}

pub(super) fn parse_completion(bytes: &[u8]) -> Result<Answer, String> {
    let completion: Completion = serde_json::from_slice(bytes)
        .map_err(|e| format!("answered something that is not a chat completion: {e}"))?;
    let usage = completion.usage.map(|u| Usage {
        prompt_tokens: u.prompt_tokens.unwrap_or(0),
        completion_tokens: u.completion_tokens.unwrap_or(0),
    });
    let model = completion.model.as_deref().map(clean);
    // What a strict client needs is all there already (the front door
    // fills in what is missing otherwise: `openai::normalize`).
    // As written: a string starts with its quote, and a JSON whole number
    // that fits is digits only.
    fn raw(v: Option<&RawValue>) -> &str {
        v.map_or("", RawValue::get)
    }
    let complete = raw(completion.id).starts_with('"')
        && raw(completion.object) == r#""chat.completion""#
        && raw(completion.created).parse::<u64>().is_ok()
        && model.as_deref().is_some_and(|m| !m.is_empty())
        && model.as_deref() == completion.model.as_deref()
        && completion
            .choices
            .iter()
            .all(|c| c.index.is_some() && c.message.role.is_some() && c.finish_reason.is_some());
    let choice = completion
        .choices
        .into_iter()
        .next()
        .ok_or("answered a chat completion without choices")?;
    // Kept as sent; only an empty list or null counts as none.
    let kept = |raw: Option<Box<RawValue>>| {
        raw.filter(|calls| !matches!(calls.get().trim(), "[]" | "null" | "{}"))
            .map(RawJson)
    };
    // Whatever OpenAI's own answers hold is an answer here: null content
    // with a refusal, tool calls or a legacy function call, and empty or
    // null content with a finish reason (`length`, `content_filter`). The
    // front door relays it as sent; `/api/query` needs something to show
    // and refuses an answer with none ([`Answer::is_empty`]).
    Ok(Answer {
        content: choice.message.content,
        refusal: choice.message.refusal.map(|r| clean_text(&r)),
        function_call: kept(choice.message.function_call),
        tool_calls: kept(choice.message.tool_calls),
        model: model.filter(|m| !m.is_empty()),
        finish_reason: choice.finish_reason.map(|r| clean(&r)),
        usage,
        upstream: String::new(),
        attempts: 1,
        complete,
    })
}

/// The message an upstream's error body carries: OpenAI's
/// `{"error": {"message"}}`, `{"error": "..."}`, `{"detail"}` or
/// `{"message"}`, else the text itself; cleaned and capped.
pub fn error_message(body: &str) -> String {
    let from_json = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        let text = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        };
        v.pointer("/error/message")
            .and_then(text)
            .or_else(|| v.get("error").filter(|e| e.is_string()).and_then(text))
            .or_else(|| v.get("detail").and_then(text))
            .or_else(|| v.get("message").and_then(text))
    });
    clean(from_json.as_deref().unwrap_or(body))
}

/// Control characters become spaces, runs of whitespace one space, and the
/// text is cut to [`MAX_MESSAGE_CHARS`] characters (with an ellipsis).
/// Terminal escape sequences go whole (`ESC[31m`), and so do control
/// characters written as JSON escapes (`\u001b`), which is how they come
/// in an error body too long to parse as JSON.
pub fn clean(text: &str) -> String {
    if is_clean(text) {
        text.to_owned()
    } else {
        cleaned(text)
    }
}

/// [`clean`], the long way.
pub(super) fn cleaned(text: &str) -> String {
    let text = without_escapes(text);
    let joined = text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    match joined.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &joined[..cut]),
        None => joined,
    }
}

/// Whether [`clean`] would leave `text` as it is (a model's name, a
/// finish reason): no escape, control character or whitespace but single
/// spaces between words, and short enough.
pub(super) fn is_clean(text: &str) -> bool {
    let mut space = false;
    let mut chars = 0;
    for c in text.chars() {
        chars += 1;
        let bad = c == '\\' || c.is_control() || (c.is_whitespace() && c != ' ');
        if bad || (c == ' ' && (space || chars == 1)) {
            return false;
        }
        space = c == ' ';
    }
    !space && chars <= MAX_MESSAGE_CHARS
}

/// A model's text with its control characters removed but for newlines
/// and tabs (terminal escapes and the like never reach a client, a log or
/// the panel); not cut.
pub fn clean_text(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
        .collect()
}

impl Answer {
    /// Whether it holds nothing to show: no content (null), no refusal, no
    /// tool or function call. `/api/query` refuses such an answer; the
    /// front door relays it as OpenAI would.
    pub fn is_empty(&self) -> bool {
        self.content.is_none()
            && self.refusal.is_none()
            && self.tool_calls.is_none()
            && self.function_call.is_none()
    }
}

/// `text` without terminal escape sequences (ESC, and with `[` its
/// parameters and final letter) and without control characters written as
/// JSON `\uXXXX` escapes.
pub(super) fn without_escapes(text: &str) -> String {
    /// The control character a `\uXXXX` escape at the start of `s` writes.
    fn escaped_control(s: &str) -> Option<char> {
        let hex = s.strip_prefix("\\u")?.get(..4)?;
        let c = char::from_u32(u32::from_str_radix(hex, 16).ok()?)?;
        c.is_control().then_some(c)
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let (control, len) = match escaped_control(rest) {
            Some(c) => (Some(c), 6),
            None => (c.is_control().then_some(c), c.len_utf8()),
        };
        rest = &rest[len..];
        match control {
            Some('\u{1b}') => {
                // A CSI sequence: `[`, parameters, one final letter.
                if let Some(csi) = rest.strip_prefix('[') {
                    let end = csi
                        .find(|c: char| ('@'..='~').contains(&c))
                        .map_or(csi.len(), |at| at + 1);
                    rest = &csi[end..];
                }
            }
            Some(_) => out.push(' '),
            None => out.push(c),
        }
    }
    out
}

pub(super) enum BodyError {
    TooLarge,
    Timeout,
    Broken(String),
}

/// The reply's body, refused as soon as it is known to exceed `limit` (by
/// its Content-Length, or while it streams in).
pub(super) async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(BodyError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) if e.is_timeout() => return Err(BodyError::Timeout),
            Err(e) => return Err(BodyError::Broken(e.without_url().to_string())),
        }
    }
}

/// At most `limit` bytes of a reply as text (the rest unread).
pub(super) async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<String, ()> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|_| ())? {
        let room = limit - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == limit {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}
