use super::*;

#[test]
fn error_messages_come_from_the_usual_shapes() {
    assert_eq!(
        error_message(
            r#"{"error": {"message": "The model `x` does not exist", "type": "invalid_request_error"}}"#
        ),
        "The model `x` does not exist"
    );
    assert_eq!(error_message(r#"{"error": "bad key"}"#), "bad key");
    assert_eq!(error_message(r#"{"detail": "Not Found"}"#), "Not Found");
    assert_eq!(error_message(r#"{"message": "overloaded"}"#), "overloaded");
    assert_eq!(
        error_message("model crashed\n\tbadly"),
        "model crashed badly"
    );
    assert_eq!(error_message(""), "");
    let long = error_message(&"é".repeat(2_000));
    assert_eq!(long.chars().count(), MAX_MESSAGE_CHARS + 1);
    assert!(long.ends_with('…'));
    assert_eq!(clean("a\u{0}b\u{1b}[31mc"), "a bc");
}

#[test]
fn completions_keep_model_finish_reason_usage_and_tool_calls() {
    let a = parse_completion(br#"{"model": "qwen-7b-instruct", "choices": [{"message": {"content": "hi"}, "finish_reason": "length"}], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}"#).unwrap();
    assert_eq!(a.content.as_deref(), Some("hi"));
    assert_eq!(a.model.as_deref(), Some("qwen-7b-instruct"));
    assert_eq!(a.finish_reason.as_deref(), Some("length"));
    assert_eq!(
        a.usage,
        Some(Usage {
            prompt_tokens: 3,
            completion_tokens: 1
        })
    );
    let tools = parse_completion(br#"{"choices": [{"message": {"content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}, "finish_reason": "tool_calls"}]}"#).unwrap();
    assert!(tools.content.is_none());
    assert!(
        tools
            .tool_calls
            .unwrap()
            .get()
            .starts_with(r#"[{"id": "c1""#)
    );
    // As OpenAI answers them: kept, for the front door to relay.
    let empty = parse_completion(
        br#"{"choices": [{"message": {"content": null}, "finish_reason": "length"}]}"#,
    )
    .unwrap();
    assert!(empty.is_empty() && empty.finish_reason.as_deref() == Some("length"));
    let cut = parse_completion(
        br#"{"choices": [{"message": {"content": ""}, "finish_reason": "length"}]}"#,
    )
    .unwrap();
    assert_eq!(cut.content.as_deref(), Some(""));
    assert!(!cut.is_empty());
    let refused = parse_completion(
        br#"{"choices": [{"message": {"content": null, "refusal": "I can't help with that."}, "finish_reason": "stop"}]}"#,
    )
    .unwrap();
    assert_eq!(refused.refusal.as_deref(), Some("I can't help with that."));
    let legacy = parse_completion(
        br#"{"choices": [{"message": {"content": null, "function_call": {"name": "f", "arguments": "{}"}}, "finish_reason": "function_call"}]}"#,
    )
    .unwrap();
    assert!(legacy.function_call.is_some() && !legacy.is_empty());
    assert!(parse_completion(br#"{"choices": []}"#).is_err());
    assert!(parse_completion(b"<html>").is_err());
}

proptest::proptest! {
    #[test]
    fn the_short_way_cleans_as_the_long_way_does(text in "(a|é| |  |\t|\\\\u001b|\u{1b}\\[3m|\u{a0}|\n|x){0,12}") {
        proptest::prop_assert_eq!(clean(&text), cleaned(&text));
    }
}

#[test]
fn names_and_reasons_are_mostly_clean_already() {
    for text in ["gpt-4o-mini", "mock 1", "stop", "é", ""] {
        assert!(is_clean(text), "{text:?}");
    }
    for text in [" a", "a ", "a  b", "a\tb", "a\u{a0}b", "a\\u001b"] {
        assert!(!is_clean(text), "{text:?}");
    }
    assert!(!is_clean(&"a".repeat(MAX_MESSAGE_CHARS + 1)));
}

#[test]
fn a_complete_reply_is_told_from_one_the_front_door_fills_in() {
    let full = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"},
            {"index": 1, "message": {"role": "assistant", "content": "ho"}, "finish_reason": "length"},
        ],
    });
    let complete = |v: &Value| parse_completion(v.to_string().as_bytes()).unwrap().complete;
    assert!(complete(&full));
    // Each thing `openai::normalize` would fill in or rewrite, missing or
    // not as a strict client needs it.
    for (pointer, bad) in [
        ("/id", Value::Null),
        ("/id", json!(7)),
        ("/object", json!("chat.completion.chunk")),
        ("/created", json!(1.5)),
        ("/created", json!("1")),
        ("/model", Value::Null),
        ("/model", json!("two\nlines")),
        ("/model", json!("")),
        ("/choices/1/index", Value::Null),
        ("/choices/1/message/role", Value::Null),
        ("/choices/0/finish_reason", Value::Null),
    ] {
        let mut v = full.clone();
        *v.pointer_mut(pointer).unwrap() = bad;
        assert!(!complete(&v), "{pointer} = {}", v.pointer(pointer).unwrap());
    }
    for key in ["id", "object", "created", "model"] {
        let mut v = full.clone();
        v.as_object_mut().unwrap().remove(key);
        assert!(!complete(&v), "without {key}");
    }
}

#[test]
fn control_characters_never_reach_a_message() {
    let red = "\u{1b}[31mred\u{1b}[0m alert\u{7}\u{9b}";
    assert_eq!(clean(red), "red alert");
    // 100 KB of escapes as JSON writes them, cut before its end: not
    // JSON any more, read as text.
    let body = format!(
        r#"{{"error": {{"message": "{}"}}}}"#,
        "\\u001b[31mx".repeat(10_000)
    );
    let cut = &body[..MAX_ERROR_BODY];
    let said = error_message(cut);
    assert!(!said.chars().any(char::is_control), "{said:?}");
    assert!(
        !said.contains("\\u001b") && !said.contains("[31m"),
        "{said:?}"
    );
    assert!(said.chars().count() <= MAX_MESSAGE_CHARS + 1);
    assert_eq!(clean("tab\there \\u0007bell"), "tab here bell");
    assert_eq!(clean_text("a\u{1b}b\nc\td"), "ab\nc\td");
}

#[test]
fn retry_after_in_seconds_or_as_a_date() {
    assert_eq!(retry_after_secs(&HeaderValue::from_static("7")), Some(7));
    assert_eq!(retry_after_secs(&HeaderValue::from_static("soon")), None);
    assert_eq!(
        retry_after_secs(&HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT")),
        Some(0),
        "a date in the past means now"
    );
    // The two obsolete forms recipients must accept too (RFC 9110).
    for past in ["Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"] {
        assert_eq!(
            retry_after_secs(&HeaderValue::from_static(past)),
            Some(0),
            "{past}"
        );
    }
    let soon =
        httpdate::fmt_http_date(std::time::SystemTime::now() + std::time::Duration::from_secs(120));
    let secs = retry_after_secs(&HeaderValue::from_str(&soon).unwrap()).unwrap();
    assert!((110..=120).contains(&secs), "{secs}");
}

#[test]
fn only_connect_errors_429_502_and_503_are_retried() {
    let f = |outcome, status| Failure {
        upstream: "a".into(),
        outcome,
        status,
        message: String::new(),
        retry_after: None,
        attempts: 1,
    };
    assert!(f(Outcome::ConnectError, None).retryable());
    assert!(f(Outcome::Http429, Some(429)).retryable());
    assert!(f(Outcome::Http5xx, Some(502)).retryable());
    assert!(f(Outcome::Http5xx, Some(503)).retryable());
    assert!(!f(Outcome::Http5xx, Some(500)).retryable());
    assert!(!f(Outcome::Http5xx, Some(504)).retryable());
    assert!(!f(Outcome::Timeout, None).retryable());
    assert!(!f(Outcome::Http4xx, Some(400)).retryable());
    assert!(!f(Outcome::BadReply, None).retryable());
}
